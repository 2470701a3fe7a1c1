"""Which LLM, which layer: fine-tune one model per (LLM, layer) with one shared recipe, plus the
plain ViT, the `mlp` control and a `random` block of the same shapes, over seeds.

Every run is an ordinary `fit` run folder (resumable, with its results.json); the table and the
chart (test AUC against relative layer depth, one line per LLM, error bars over seeds) are
rendered from those files only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_text
from ..llm.presets import get_preset
from .engine import TrainConfig, fit
from .scoring import collapse_tally
from .seed_stats import by_seed, mean_std, paired

_logger = logging.getLogger(__name__)


def resolve_layer_spec(spec: str, num_layers: int) -> int | list[int]:
    """``-1``, ``3``, ``first``, ``middle``, ``last``, or an inclusive stack ``-2..-1``."""
    named = {"first": 0, "middle": num_layers // 2, "last": num_layers - 1}
    if spec in named:
        return named[spec]
    try:
        ends = [int(x) for x in spec.split("..")]
    except ValueError:
        raise ValueError(f"unknown layer {spec!r}: use an index, first, middle, last, or a stack like -2..-1") from None
    if len(ends) > 2:
        raise ValueError(f"layer stack {spec!r}: give two ends, e.g. -2..-1")
    for index in ends:  # checked before wrapping: -40 of a 30-layer LLM is an error, not layer 20
        if not -num_layers <= index < num_layers:
            raise IndexError(f"layer {index} (in {spec!r}) is out of range for an LLM with {num_layers} layers "
                             f"(valid: 0..{num_layers - 1}, or -{num_layers}..-1 from the end)")
    first, last = (i % num_layers for i in (ends[0], ends[-1]))
    if len(ends) == 1:
        return first
    if last < first:
        raise ValueError(f"layer stack {spec!r} must go forward, e.g. -2..-1")
    return list(range(first, last + 1))


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
            scores = r["test"] or r["val"]  # with --no-score-test, the validation split's
            _logger.info(f"{name}: {'test' if r['test'] else 'val'} ACC {scores['acc']:.4f} AUC {scores['auc']:.4f}")
    return render(out)


def _stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    info = runs[0].get("llm_info") or {}
    # per seed, so that variants are compared seed by seed (they share seeds)
    values = {f"{split}_{m}": by_seed(runs, split, m) for split in ("val", "test") for m in ("acc", "auc")}
    return {"n": len(runs), "layer": info.get("layer"), "num_layers": info.get("num_layers"),
            "model": runs[0]["config"]["model"], "seeds": [r["config"]["seed"] for r in runs],
            "collapsed": collapse_tally(runs),
            **{k: mean_std(list(v.values())) for k, v in values.items()}, "values": values}


def _order(name: str) -> tuple:
    """plain, then per LLM: mlp, random, layers from first to last, stacks after their last layer."""
    if name == "plain":
        return ("",)
    llm, _, rest = name.partition("/")
    if not rest.startswith("layer"):
        return (llm, 0, rest)
    layers = [int(x) for x in rest[len("layer"):].split("-")]
    return (llm, 1, layers[-1], len(layers))


def _pm(st: dict[str, Any], key: str) -> str:
    return f"{st[key][0]:.2f} ± {st[key][1]:.2f}"


def _layer_label(layer: int | list[int]) -> str:
    return f"layers {layer[0]}-{layer[-1]}" if isinstance(layer, list) else f"layer {layer}"


def findings(stats: dict[str, dict[str, Any]]) -> list[str]:
    """What the sweep says, per LLM: the best block chosen on validation AUC (its test numbers reported),
    its paired difference (per seed, 95% CI) to the plain ViT and the mlp control, which blocks' intervals
    exclude 0 (and how many blocks were compared), and the pretrained block against the random one at the
    same position."""
    lines = []
    plain = stats.get("plain")
    for llm in sorted({n.split("/")[0] for n in stats if "/layer" in n}):
        layers = {n: st for n, st in stats.items() if n.startswith(f"{llm}/layer")}
        best_name = max(layers, key=lambda n: layers[n]["val_auc"][0])
        best = layers[best_name]
        lines.append(f"- **{llm}: best block on validation AUC: {_layer_label(best['layer'])} of "
                     f"{best['num_layers']}** (val AUC {best['val_auc'][0]:.2f}; test AUC {_pm(best, 'test_auc')}, "
                     f"test ACC {_pm(best, 'test_acc')}).")
        for ref_name, ref in (("the plain ViT", plain), ("the mlp control", stats.get(f"{llm}/mlp"))):
            if ref is None:
                continue
            parts = []
            for m in ("auc", "acc"):
                d = paired(best["values"][f"test_{m}"], ref["values"][f"test_{m}"], "the block", ref_name)
                parts.append(f"test {m.upper()} {d.delta:+.2f}, {d.reading}")
            lines.append(f"  - vs {ref_name} (paired per seed): " + "; ".join(parts) + ".")
            compared = {_layer_label(st["layer"]): paired(st["values"]["test_auc"], ref["values"]["test_auc"])
                        for st in layers.values()}
            above = [name for name, d in compared.items() if d.excludes_zero and d.delta > 0]
            below = [name for name, d in compared.items() if d.excludes_zero and d.delta < 0]
            lines.append(f"  - blocks whose paired test-AUC 95% CI vs {ref_name} lies above 0: "
                         f"{', '.join(above) or 'none'}; below 0: {', '.join(below) or 'none'} "
                         f"({len(compared)} blocks compared; with that many, one CI excluding 0 by chance "
                         "is not unlikely).")
        random = stats.get(f"{llm}/random")
        if random is not None:
            same = next((st for st in layers.values() if st["layer"] == best["num_layers"] - 1), None)
            pairs = {"at the same position (the last layer)": same,
                     "the best block": best if best is not same else None}
            for label, st in pairs.items():
                if st is None:
                    continue
                d = paired(st["values"]["test_auc"], random["values"]["test_auc"], "pretrained", "random")
                lines.append(f"  - pretrained vs random weights, {label}: test AUC {d.delta:+.2f}, {d.reading}.")
    return lines


def render(out: str | Path) -> str:
    """Table, findings, summary.json and chart.png of a sweep folder, from its results files only."""
    out = Path(out)
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("**/seed*/results.json")):
        groups.setdefault(str(path.parent.parent.relative_to(out)), []).append(json.loads(path.read_text()))
    if not groups:
        return "no results yet"
    stats = {name: _stats(rs) for name, rs in sorted(groups.items(), key=lambda kv: _order(kv[0]))}
    plain = stats.get("plain")
    lines = ["| run | seeds | val AUC | test ACC | test AUC | ΔAUC vs plain (paired, 95% CI) | "
             "ΔAUC vs mlp control (paired, 95% CI) | collapsed |",
             "|---|---|---|---|---|---|---|---|"]

    def delta(st: dict[str, Any], ref: dict[str, Any] | None) -> str:
        if ref is None or st is ref:
            return ""
        d = paired(st["values"]["test_auc"], ref["values"]["test_auc"])
        return f"{d.delta:+.2f}" + (f" ({d.ci})" if d.ci else "")

    for name, st in stats.items():
        mlp = stats.get(f"{name.split('/')[0]}/mlp")
        label = f"{name} (random weights)" if name.endswith("/random") else name
        lines.append(f"| {label} | {st['n']} | {st['val_auc'][0]:.2f} | {_pm(st, 'test_acc')} | "
                     f"{_pm(st, 'test_auc')} | {delta(st, plain)} | {delta(st, mlp) if st is not plain else ''} | "
                     f"{st['collapsed']} |")
    first = next(iter(groups.values()))[0]
    cfg = {k: v for k, v in first["config"].items() if k not in ("model", "seed", "model_kwargs", "data_dir")}
    env = first["environment"]
    header = [f"Recipe: `{json.dumps(cfg)}`", "",
              f"Hardware: {env['processor']}, {env['cpu_count']} CPUs, CUDA: {env['cuda']}; torch {env['torch']}, "
              f"timm {env['timm']}. Each run's test metrics are of the epoch chosen on its validation split; "
              "mean ± std over seeds, in percent. `layer N` counts from 0; the random block has the last layer's "
              "shapes and random weights.", ""]
    text = "\n".join(header + lines + [""] + findings(stats)) + "\n"
    atomic_write_text(out / "table.md", text)
    atomic_write_text(out / "summary.json", json.dumps(
        {n: {k: v for k, v in st.items() if k != "values"} for n, st in stats.items()}, indent=1))
    _chart(stats, out / "chart.png", f"{first['config']['dataset']}, {first['config']['epochs']} epochs")
    return text


def _chart(stats: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    llms = sorted({n.split("/")[0] for n in stats if "/layer" in n})
    for llm in llms:
        layers = [st for n, st in stats.items() if n.startswith(f"{llm}/layer") and st["layer"] is not None]
        single = sorted((_depth(st["layer"], st["num_layers"]), st["test_auc"]) for st in layers
                        if isinstance(st["layer"], int))
        if single:
            line = ax.errorbar([p[0] for p in single], [p[1][0] for p in single], yerr=[p[1][1] for p in single],
                               marker="o", capsize=3, label=f"{llm}, one pretrained layer")
            color = line[0].get_color()
            for st in layers:
                if isinstance(st["layer"], list):
                    ax.errorbar([_depth(st["layer"], st["num_layers"]) - 0.02], [st["test_auc"][0]],
                                yerr=[st["test_auc"][1]], marker="s", color=color, capsize=3, linestyle="none",
                                label=f"{llm}, stack of {_layer_label(st['layer'])}")
        if f"{llm}/random" in stats:
            m, s = stats[f"{llm}/random"]["test_auc"]
            ax.errorbar([1.04], [m], yerr=[s], marker="x", capsize=3, linestyle="none",
                        label=f"{llm}, random block (last layer's shapes)")
        if f"{llm}/mlp" in stats:
            ax.axhline(stats[f"{llm}/mlp"]["test_auc"][0], linestyle=":", color="gray", label=f"{llm} mlp control")
    if "plain" in stats:
        ax.axhline(stats["plain"]["test_auc"][0], linestyle="--", color="black", label="plain ViT")
    ax.set_xlabel("layer depth in the LLM (0 = first, 1 = last)")
    ax.set_ylabel("test AUC (%), mean ± std over seeds")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix[1:] or "png"))
    plt.close(fig)
