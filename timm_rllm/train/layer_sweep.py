"""Which LLM, which layer: fine-tune one model per (LLM, layer) with one shared recipe, plus the
plain ViT, the `mlp` control and a `random` block of the same shapes, over seeds.

Every run is an ordinary `fit` run folder (resumable, with its results.json); the table and the
chart (test AUC against relative layer depth, one line per LLM, error bars over seeds) are
rendered from those files only.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from ..llm.presets import get_preset
from .engine import TrainConfig, fit


def resolve_layer_spec(spec: str, num_layers: int) -> int | list[int]:
    """``-1``, ``3``, ``first``, ``middle``, ``last``, or an inclusive stack ``-2..-1``."""
    named = {"first": 0, "middle": num_layers // 2, "last": num_layers - 1}
    if spec in named:
        return named[spec]
    if ".." in spec:
        a, b = (int(x) % num_layers for x in spec.split(".."))
        if b < a:
            raise ValueError(f"layer stack {spec!r} must go forward, e.g. -2..-1")
        return list(range(a, b + 1))
    try:
        index = int(spec)
    except ValueError:
        raise ValueError(f"unknown layer {spec!r}: use an index, first, middle, last, or a stack like -2..-1") from None
    if not -num_layers <= index < num_layers:
        raise IndexError(f"layer {index} is out of range for an LLM with {num_layers} layers")
    return index % num_layers


def _depth(layer: int | list[int], num_layers: int) -> float:
    last = layer[-1] if isinstance(layer, list) else layer
    return last / max(1, num_layers - 1)


def plan(base: TrainConfig, llms: list[str], layers: list[str], seeds: list[int], size: str = "tiny"):
    """(run name, TrainConfig) for every run of the sweep."""
    runs = []
    for seed in seeds:
        runs.append((f"plain/seed{seed}", dataclasses.replace(base, model=f"vit_{size}_patch16_224", seed=seed)))
        for llm in llms:
            preset = get_preset(llm)
            model = f"vit_{size}_rllm_{llm}"
            kw = base.model_kwargs
            runs.append((f"{llm}/mlp/seed{seed}", dataclasses.replace(
                base, model=model, seed=seed, model_kwargs={**kw, "residual": "mlp"})))
            runs.append((f"{llm}/random/seed{seed}", dataclasses.replace(
                base, model=model, seed=seed, model_kwargs={**kw, "llm_source": "random"})))
            for spec in layers:
                layer = resolve_layer_spec(spec, preset.num_layers)
                name = "-".join(map(str, layer)) if isinstance(layer, list) else str(layer)
                runs.append((f"{llm}/layer{name}/seed{seed}", dataclasses.replace(
                    base, model=model, seed=seed, model_kwargs={**kw, "llm_layer": layer})))
    return runs


def run_sweep(base: TrainConfig, out: str | Path, llms: list[str], layers: list[str], seeds: list[int],
              size: str = "tiny", progress: bool = True) -> str:
    out = Path(out)
    for name, cfg in plan(base, llms, layers, seeds, size):
        r = fit(cfg, out / name, resume=True, progress=False)
        if progress:
            print(f"{name}: test ACC {r['test']['acc']:.4f} AUC {r['test']['auc']:.4f}", flush=True)
    return render(out)


def _ms(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def render(out: str | Path) -> str:
    out = Path(out)
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("**/seed*/results.json")):
        groups.setdefault(str(path.parent.parent.relative_to(out)), []).append(json.loads(path.read_text()))
    if not groups:
        return "no results yet"
    stats = {}
    for name, rs in groups.items():
        acc, auc = _ms([100 * r["test"]["acc"] for r in rs]), _ms([100 * r["test"]["auc"] for r in rs])
        info = rs[0].get("llm_info") or {}
        stats[name] = {"acc": acc, "auc": auc, "n": len(rs), "layer": info.get("layer"),
                       "num_layers": info.get("num_layers")}
    plain = stats.get("plain")
    lines = ["| run | seeds | test ACC | test AUC | ΔAUC vs plain | ΔAUC vs mlp control |", "|---|---|---|---|---|---|"]
    for name, st in stats.items():
        llm = name.split("/")[0]
        mlp = stats.get(f"{llm}/mlp")
        d_plain = f"{st['auc'][0] - plain['auc'][0]:+.2f}" if plain and name != "plain" else ""
        d_mlp = f"{st['auc'][0] - mlp['auc'][0]:+.2f}" if mlp and name not in ("plain", f"{llm}/mlp") else ""
        lines.append(f"| {name} | {st['n']} | {st['acc'][0]:.2f} ± {st['acc'][1]:.2f} | "
                     f"{st['auc'][0]:.2f} ± {st['auc'][1]:.2f} | {d_plain} | {d_mlp} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(stats, indent=1))
    _chart(stats, out / "chart.png")
    return text


def _chart(stats: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    llms = sorted({n.split("/")[0] for n in stats if "/layer" in n})
    for llm in llms:
        pts = sorted((_depth(st["layer"], st["num_layers"]), st["auc"]) for n, st in stats.items()
                     if n.startswith(f"{llm}/layer") and st["layer"] is not None)
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                        capsize=3, label=f"{llm} (pretrained)")
        if f"{llm}/random" in stats:
            m, s = stats[f"{llm}/random"]["auc"]
            ax.errorbar([1.02], [m], yerr=[s], marker="x", capsize=3, linestyle="none", label=f"{llm} random block")
        if f"{llm}/mlp" in stats:
            ax.axhline(stats[f"{llm}/mlp"]["auc"][0], linestyle=":", color="gray", label=f"{llm} mlp control")
    if "plain" in stats:
        ax.axhline(stats["plain"]["auc"][0], linestyle="--", color="black", label="plain ViT")
    ax.set_xlabel("layer depth in the LLM (0 = first, 1 = last)")
    ax.set_ylabel("test AUC (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
