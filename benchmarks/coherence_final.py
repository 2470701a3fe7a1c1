"""Gradient coherence of every trained model of the main benchmark, at its last epoch, paired by seed.

    OMP_NUM_THREADS=1 python benchmarks/coherence_final.py

`coherence.py` follows coherence along training for two seeds (it retrains); this script measures it once per
finished run of ``results/medmnist2d/breastmnist/VARIANT/seedN`` (its ``last.pth``, which stays on the machine
that trained it), so every variant gets all its seeds: the same probe (the first 32 validation images), the
same measure (`timm_rllm.train.coherence.gradient_coherence`, the deployed model's own loss, in eval mode).
Writes ``results/coherence/final.json``, ``final.md`` and the ``results:coherence_final`` block of RESULTS.md.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import torch
from _report import update_results
from scipy.stats import spearmanr

from timm_rllm._io import atomic_write, atomic_write_json, atomic_write_text
from timm_rllm.train.coherence import gradient_coherence, probe_batch
from timm_rllm.train.engine import environment, restore_run, split_dataset
from timm_rllm.train.seed_stats import mean_std, paired

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "results" / "medmnist2d" / "breastmnist"
OUT = ROOT / "results" / "coherence"
ORDER = ["plain", "rllm", "aux", "tuned", "mlp", "linear", "random", "resnet"]


def measure() -> list[dict]:
    rows = []
    for path in sorted(RUNS.glob("*/seed*/last.pth")):
        if not (path.parent / "results.json").is_file():
            continue  # finished runs only
        results = json.loads((path.parent / "results.json").read_text())
        model, cfg, _ = restore_run(path)
        ds = split_dataset(cfg, "val")
        value = gradient_coherence(model, probe_batch(ds), ds.task, torch.device("cpu"))
        rows.append({"variant": path.parts[-3], "seed": cfg.seed, "model": cfg.model, "epoch": cfg.epochs,
                     "coherence": value, "test_auc": results["test"]["auc"], "test_acc": results["test"]["acc"]})
        print(f"{rows[-1]['variant']} seed {cfg.seed}: {value:.4f}", flush=True)
    return rows


def verdict(d) -> str:
    return "no evidence of a difference" if not d.excludes_zero else ("higher" if d.delta > 0 else "lower")


def cell(d) -> str:
    if d is None:
        return ""
    return f"{d.delta:+.4f} ({d.low:+.4f}..{d.high:+.4f}), {verdict(d)}" if d.low is not None else \
        f"{d.delta:+.4f}, {d.reading}"


def render(rows: list[dict]) -> tuple[str, dict]:
    by = {}
    for row in rows:
        by.setdefault(row["variant"], {})[row["seed"]] = row
    lines = ["| variant | seeds | coherence at the last epoch, mean ± std | vs plain, paired (95% CI) |",
             "|---|---|---|---|"]
    stats = {}
    for variant, seeds in sorted(by.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99):
        values = {s: r["coherence"] for s, r in seeds.items()}
        m, sd = mean_std(list(values.values()))
        d = paired(values, {s: r["coherence"] for s, r in by["plain"].items()}, variant, "plain") \
            if variant != "plain" and "plain" in by else None
        stats[variant] = {"mean": m, "std": sd, "n": len(values),
                          "vs_plain": {"delta": d.delta, "ci95": [d.low, d.high], "reading": d.reading} if d else None}
        model = next(iter(seeds.values()))["model"]
        lines.append(f"| {variant} ({model}) | {len(values)} | {m:.4f} ± {sd:.4f} | "
                     f"{cell(d)} |")
    vit = [r for r in rows if r["variant"] != "resnet"]  # another architecture, another scale of coherence
    rho, p = spearmanr([r["coherence"] for r in vit], [r["test_auc"] for r in vit])
    stats["spearman_coherence_vs_test_auc_vits"] = {"rho": float(rho), "p_value": float(p), "n_runs": len(vit)}
    lines += ["", f"Across the {len(vit)} ViT runs (every variant but the ResNet), Spearman rho between coherence "
                  f"and test AUC: {rho:+.3f} (p = {p:.3f})."]
    return "\n".join(lines), stats


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        ax.scatter([r["coherence"] for r in mine], [100 * r["test_auc"] for r in mine], label=variant)
    ax.set(xlabel="gradient coherence of the last block at the last epoch", ylabel="test AUC (%)",
           title="BreastMNIST, main benchmark runs (one point per seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--render-only", action="store_true", help="re-render final.json's measurements")
    args = p.parse_args(argv)
    previous = json.loads((OUT / "final.json").read_text()) if args.render_only else None
    rows = previous["runs"] if previous else measure()
    if not rows:
        sys.exit(f"no finished runs with last.pth under {RUNS}: run medmnist_sweep.py first")
    table, stats = render(rows)
    command = previous["command"] if previous else shlex.join(["python", *sys.argv])  # what measured them
    environment_ = previous["environment"] if previous else environment()
    atomic_write_json({"command": command, "environment": environment_, "runs": rows, "stats": stats},
                      OUT / "final.json")
    chart(rows, OUT / "final.png")
    atomic_write_text(OUT / "final.md", f"# Gradient coherence at the last epoch\n\n`{command}`\n\n{table}\n")
    update_results("coherence_final", f"Command: `{command}`\n\n{table}\n\n"
                                      "![coherence vs test AUC](results/coherence/final.png)")
    print(table)


if __name__ == "__main__":
    main()
