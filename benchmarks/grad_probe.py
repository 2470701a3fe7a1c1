"""The gradient each part of a model gets, step by step, in the first epochs of a committed run: does the block's
branch take over the gradient (and so the clipping) before a boosted run stops fitting?

    OMP_NUM_THREADS=1 python benchmarks/grad_probe.py                      # AdrenalMNIST3D runs, seed 3
    OMP_NUM_THREADS=1 python benchmarks/grad_probe.py --variants plain,rllm --seed 2 --epochs 10
    python benchmarks/grad_probe.py --render-only

Each probed run is a committed sweep run (``RUNS/VARIANT/seedN``), retrained from its recorded config for its
first ``--epochs`` epochs (``max_steps``; the lr schedule is the full run's) in a scratch folder. Before every
optimizer step it records the global gradient norm before clipping (what `--clip-grad` compares with its
threshold) and the norm of each part's gradient: the spatial encoder (patch embedding, spatial transformer), the
temporal transformer with its norm, the booster (adapters; the frozen block has no gradient) and the head. The
part's gradient after clipping is its norm times min(1, clip / global norm). On the CPU and thread count that
ran the committed run, every probed epoch's logged numbers equal its own to the last bit (checked, recorded as
``repeats_committed_run``); on another CPU the last bits differ, so the table shows both runs' train losses.
Writes ``results/grad_probe/NAME.json``, ``NAME.md``, ``NAME.png`` and the ``results:grad_probe`` block of
RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from _report import differs, update_results

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.train import engine
from timm_rllm.train.engine import TrainConfig, environment, fit

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "results" / "medmnist3d_adrenal" / "adrenalmnist3d"
OUT = ROOT / "results" / "grad_probe"
PARTS = ("spatial", "temporal", "booster", "head")


def part(name: str) -> str:
    """Which part of a ViViT (or ViT: everything before the booster counts as "spatial") a parameter is in."""
    if name.startswith("booster."):
        return "booster"
    if name.startswith(("head.", "head_aux.")):
        return "head"
    if name.startswith(("temporal_", "norm.")):
        return "temporal"
    return "spatial"


@contextlib.contextmanager
def recording(steps: list[dict[str, float]]):
    """Record every step's gradient norms: the engine's model (from `engine.build_model`) and its clipping call
    (`torch.nn.utils.clip_grad_norm_`, which returns the global norm before clipping) are wrapped, not changed."""
    built: list[torch.nn.Module] = []
    build_model, clip = engine.build_model, torch.nn.utils.clip_grad_norm_

    def build_and_keep(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    def clip_and_record(parameters, max_norm, *args, **kwargs):
        squares = dict.fromkeys(PARTS, 0.0)
        for name, p in built[-1].named_parameters():
            if p.grad is not None:
                squares[part(name)] += float(p.grad.detach().float().pow(2).sum())
        total = clip(parameters, max_norm, *args, **kwargs)
        steps.append({"total": float(total), "clip": float(max_norm), **{k: v ** 0.5 for k, v in squares.items()}})
        return total

    engine.build_model, torch.nn.utils.clip_grad_norm_ = build_and_keep, clip_and_record
    try:
        yield
    finally:
        engine.build_model, torch.nn.utils.clip_grad_norm_ = build_model, clip


def probe_run(committed: dict[str, Any], epochs: int) -> dict[str, Any]:
    cfg = TrainConfig(**committed["config"])
    steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch, recording(steps):
        train_steps = max(1, len(engine.split_dataset(cfg, "train")) // cfg.batch_size)  # drop_last
        probed = fit(dataclasses.replace(cfg, max_steps=epochs * train_steps, score_test=False), scratch,
                     resume=False, progress=False)
    same = differs({"history": committed["history"][:epochs]}, {"history": probed["history"]}) == []
    per_epoch = []
    for e in range(epochs):
        rows = steps[e * train_steps:(e + 1) * train_steps]
        scale = [min(1.0, r["clip"] / r["total"]) if r["total"] > 0 else 1.0 for r in rows]
        per_epoch.append({
            "epoch": e + 1, "train_loss": probed["history"][e]["train_loss"],
            "val_auc": probed["history"][e]["val_auc"], "committed_train_loss": committed["history"][e]["train_loss"],
            "total_median": statistics.median(r["total"] for r in rows),
            "total_max": max(r["total"] for r in rows),
            "clipped_fraction": sum(s < 1 for s in scale) / len(rows),
            **{f"{k}_median": statistics.median(r[k] for r in rows) for k in PARTS},
            "spatial_after_clip_median": statistics.median(r["spatial"] * s for r, s in zip(rows, scale, strict=True)),
        })
    return {"steps_per_epoch": train_steps, "repeats_committed_run": same, "epochs": per_epoch, "steps": steps}


def render(record: dict[str, Any], name: str) -> str:
    lines = [f"Command: `{record['command']}`; {record['environment']['cpu_model']}, "
             f"{record['environment']['torch_threads']} torch thread(s). Runs: `{record['runs']}`, first "
             f"{record['epochs_probed']} epochs, clip threshold {record['clip']}.", "",
             "Per epoch, medians over its steps: the global gradient norm before clipping, the share of steps "
             "clipped, each part's gradient norm before clipping, and the spatial encoder's after clipping.", "",
             "| variant | seed | repeats the committed run bit for bit | epoch | train loss (committed run's) | "
             "val AUC | global norm (max) | clipped | spatial | temporal | booster | head | spatial after clip |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in record["probes"].items():
        variant, seed = key.split("/")
        for e in run["epochs"]:
            lines.append(
                f"| {variant} | {seed} | {'yes' if run['repeats_committed_run'] else 'NO'} | {e['epoch']} | "
                f"{e['train_loss']:.3f} ({e['committed_train_loss']:.3f}) | {100 * e['val_auc']:.2f} | "
                f"{e['total_median']:.3f} ({e['total_max']:.2f}) | "
                f"{100 * e['clipped_fraction']:.0f}% | {e['spatial_median']:.3f} | {e['temporal_median']:.3f} | "
                f"{e['booster_median']:.3f} | {e['head_median']:.3f} | {e['spatial_after_clip_median']:.3f} |")
    return "\n".join(lines) + f"\n\n![gradient norms per step](results/grad_probe/{name}.png)"


def chart(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharex=True)
    for key, run in record["probes"].items():
        steps = run["steps"]
        x = [i / run["steps_per_epoch"] for i in range(len(steps))]
        axes[0].plot(x, [s["total"] for s in steps], lw=0.6, label=key)
        axes[1].plot(x, [s["spatial"] * min(1.0, s["clip"] / s["total"]) for s in steps], lw=0.6, label=key)
        axes[2].plot(x, [s["booster"] / s["total"] for s in steps], lw=0.6, label=key)
    for ax, title in zip(axes, ("global gradient norm before clipping", "spatial encoder's gradient after clipping",
                                "booster's share of the global norm"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_yscale("linear" if title.startswith("booster") else "log")
    axes[0].axhline(record["clip"], color="k", lw=0.5, ls="--")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(RUNS), help="a sweep's dataset folder: RUNS/VARIANT/seedN")
    p.add_argument("--variants", default="plain,rllm,random")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--name", default="medmnist3d_adrenal")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    json_path = OUT / f"{args.name}.json"
    if args.render_only:
        record = json.loads(json_path.read_text())
    else:
        runs = Path(args.runs).resolve()
        record = {"command": shlex.join(["python", *sys.argv]), "environment": environment(),
                  "runs": runs.relative_to(ROOT.parent).as_posix(), "epochs_probed": args.epochs, "probes": {}}
        for variant in args.variants.split(","):
            committed = json.loads((runs / variant / f"seed{args.seed}" / "results.json").read_text())
            print(f"probing {variant} seed {args.seed} ({args.epochs} epochs)", flush=True)
            record["probes"][f"{variant}/seed{args.seed}"] = probe_run(committed, args.epochs)
            record["clip"] = committed["config"]["clip_grad"]
        atomic_write_json(record, json_path)
    text = render(record, args.name)
    atomic_write_text(OUT / f"{args.name}.md", text + "\n")
    chart(record, OUT / f"{args.name}.png")
    update_results("grad_probe", text)
    print(text)


if __name__ == "__main__":
    main()
