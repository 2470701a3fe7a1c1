"""Where a ViViT that did not fit lost its input: how much each stage's features vary across volumes.

    OMP_NUM_THREADS=1 python benchmarks/fit_probe.py            # results/medmnist3d_adrenal/adrenalmnist3d
    OMP_NUM_THREADS=1 python benchmarks/fit_probe.py --runs benchmarks/results/medmnist3d/adrenalmnist3d

A run "did not fit" when its last train loss is that of the best input-blind prediction (`timm_rllm.train.report`,
the sweep tables' column). This script takes every finished run's model at its last epoch (``last.pth``, which
stays on the machine that trained it), feeds it the first 64 volumes of the train split (no augmentation, eval
mode) and measures, at each stage, the relative spread of the features across volumes: sqrt(mean_i |f_i - m|^2)
/ |m|, m the mean feature. 0 means every volume gives the same feature, so nothing after that stage can tell the
volumes apart. Stages: the per-slice class tokens leaving the spatial transformer (the temporal stage's input),
the temporal class token leaving the temporal transformer, the booster's output class token (when the model runs
one), the head's input, and the logits (their std across volumes). Writes ``results/fit_probe/NAME.json``,
``NAME.md`` and the ``results:fit_probe`` block of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from _report import update_results

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.train.engine import environment, restore_run, split_dataset
from timm_rllm.train.report import NO_FIT, constant_train_loss, did_not_fit
from timm_rllm.train.seed_stats import mean_std

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "results" / "medmnist3d_adrenal" / "adrenalmnist3d"
OUT = ROOT / "results" / "fit_probe"
STAGES = ("slices", "temporal", "booster", "pre_logits")
PROBE = 64  # the first volumes of the train split


def spread(features: torch.Tensor) -> float:
    """Relative spread of (B, ...) features across the B inputs (0: every input gives the same feature)."""
    f = features.detach().float().reshape(len(features), -1)
    mean = f.mean(0)
    return float((f - mean).pow(2).sum(-1).mean().sqrt() / mean.norm().clamp_min(1e-12))


@torch.no_grad()
def probe(model: torch.nn.Module, volumes: torch.Tensor) -> dict[str, float | None]:
    """The spread at each stage of a ViViT (`timm_rllm.models.vision_transformer_3d.ViViT`)."""
    seen: dict[str, torch.Tensor] = {}
    b = len(volumes)
    hooks = [model.spatial_blocks.register_forward_hook(lambda m, i, o: seen.update(slices=o[:, 0].reshape(b, -1))),
             model.temporal_blocks.register_forward_hook(lambda m, i, o: seen.update(temporal=o[:, 0]))]
    if model._boosts():
        hooks.append(model.booster.register_forward_hook(lambda m, i, o: seen.update(booster=o[:, 0])))
    try:
        features = model.forward_features(volumes)
    finally:
        for hook in hooks:
            hook.remove()
    seen["pre_logits"] = model.forward_head(features, pre_logits=True)
    logits = model.forward_head(features)
    out = {stage: spread(seen[stage]) if stage in seen else None for stage in STAGES}
    out["logit_std"] = float(logits.float().std(0).mean())
    return out


def measure(runs: Path) -> list[dict]:
    rows, volumes = [], None
    for path in sorted(runs.glob("*/seed*/last.pth")):
        results_path = path.parent / "results.json"
        if not results_path.is_file():
            continue  # finished runs only
        results = json.loads(results_path.read_text())
        model, cfg, _ = restore_run(path)
        if not hasattr(model, "temporal_blocks"):
            continue  # a ViViT probe
        if volumes is None:
            train = split_dataset(cfg, "train")  # without train=True: no augmentation
            volumes = torch.stack([train[i][0] for i in range(min(PROBE, len(train)))])
        rows.append({"variant": path.parts[-3], "seed": cfg.seed, "model": cfg.model,
                     "last_train_loss": results["history"][-1]["train_loss"],
                     "constant_train_loss": constant_train_loss(results), "did_not_fit": did_not_fit(results),
                     "test_auc": (results["test"] or {}).get("auc"), **probe(model, volumes)})
        print(f"{rows[-1]['variant']} seed {cfg.seed}: {rows[-1]}", flush=True)
    return rows


def render(rows: list[dict], runs: Path) -> str:
    def cell(v: float | None) -> str:
        return "" if v is None else f"{v:.3f}"

    lines = ["| variant | seed | last train loss | did not fit | slices | temporal | booster | head input | "
             "logit std | test AUC (selected epoch) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = {True: "yes", False: "", None: "n/a"}[r["did_not_fit"]]
        auc = "" if r["test_auc"] is None else f"{100 * r['test_auc']:.2f}"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['last_train_loss']:.3f} | {flag} | "
                     f"{' | '.join(cell(r[s]) for s in STAGES)} | {r['logit_std']:.4f} | {auc} |")
    lines += ["", "| runs | n | slices | temporal | head input | logit std |", "|---|---|---|---|---|---|"]
    for label, group in (("fitted", [r for r in rows if r["did_not_fit"] is False]),
                         ("did not fit", [r for r in rows if r["did_not_fit"] is True])):
        if group:
            stats = [mean_std([r[k] for r in group]) for k in ("slices", "temporal", "pre_logits", "logit_std")]
            lines.append(f"| {label} | {len(group)} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in stats) + " |")
    constant = next((r["constant_train_loss"] for r in rows if r["constant_train_loss"] is not None), None)
    head = [f"Runs: `{runs.relative_to(ROOT.parent) if runs.is_relative_to(ROOT.parent) else runs}`, each at its "
            f"last epoch, on the first {PROBE} train volumes (no augmentation). Relative spread across volumes "
            "(0: every volume gives the same feature) of the per-slice class tokens leaving the spatial transformer "
            "(slices), the temporal class token (temporal), the booster's output class token, the head's input; "
            "logit std: std of the logits across volumes. did not fit: last train loss at least "
            f"{NO_FIT:.0%} of the best input-blind prediction's" + (f" ({constant:.3f})." if constant else "."), ""]
    return "\n".join(head + lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=RUNS, help="a variant sweep's dataset folder (VARIANT/seedN)")
    p.add_argument("--name", default=None, help="results file name (default: the sweep folder's name)")
    args = p.parse_args(argv)
    runs = args.runs.resolve()
    name = args.name or runs.parent.name
    rows = measure(runs)
    if not rows:
        print(f"no finished ViViT run with its last.pth under {runs}", file=sys.stderr)
        return 1
    table = render(rows, runs)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json({"command": shlex.join([sys.executable, *sys.argv]), "environment": environment(),
                       "probe_volumes": PROBE, "rows": rows}, OUT / f"{name}.json")
    atomic_write_text(OUT / f"{name}.md", f"# Where the runs that did not fit lost their input\n\n{table}\n")
    if name == RUNS.parent.name:
        update_results("fit_probe", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
