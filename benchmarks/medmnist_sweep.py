"""MedMNIST sweep: variants x datasets x seeds with one shared recipe, then a table and a chart.

    python benchmarks/medmnist_sweep.py --datasets breastmnist --seeds 0,1,2 --epochs 30

Each run writes ``OUT/DATASET/VARIANT/seedN/results.json`` (command, versions, hardware, seed,
validation-selected metrics, the test split scored once); finished runs are skipped and an
interrupted one resumes. ``OUT/table.md``, ``OUT/summary.json`` and ``OUT/chart.png`` are
rendered from those files only (``--render-only`` re-renders without training).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from _report import update_readme  # noqa: E402

from timm_rllm.train import TrainConfig, fit  # noqa: E402
from timm_rllm.train.seed_stats import mean_std, versus  # noqa: E402

# variant -> (timm model, extra model kwargs); {plain} is timm's ViT for 2D and our llm-free model for 3D.
VARIANTS = {
    "plain": ("{plain}", {}),
    "mlp": ("{backbone}_{size}_rllm_{llm}", {"residual": "mlp"}),
    "rllm": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner"}),
    "gemma3": ("{backbone}_{size}_rllm_gemma3", {"residual": "inner"}),
    "outer": ("{backbone}_{size}_rllm_{llm}", {"residual": "outer"}),
    "hybrid": ("{backbone}_{size}_rllm_{llm}", {"residual": "hybrid"}),
    "random": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner", "llm_source": "random"}),
}
ANCHORS = ROOT / "medmnist_anchors.json"
LINE_STYLES = [("black", "--"), ("dimgray", ":"), ("gray", "-.")]  # published readings on the chart


def run_config(args: argparse.Namespace, dataset: str, variant: str, seed: int) -> TrainConfig:
    model, extra = VARIANTS[variant]
    plain = f"vit_{args.size}_patch16_224" if args.backbone == "vit" else f"{args.backbone}_{args.size}"
    return TrainConfig(
        model=model.format(plain=plain, backbone=args.backbone, size=args.size, llm=args.llm), dataset=dataset,
        size=args.img_size if args.backbone != "vit" else 28, data_dir=args.data_dir, shift=args.shift,
        img_size=args.img_size, patch_size=args.patch_size, model_kwargs=dict(extra, drop_path_rate=args.drop_path),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, hflip=args.hflip,
        randaug=args.randaug or None, reprob=args.reprob, mixup=args.mixup, cutmix=args.cutmix,
        amp=args.amp, seed=seed,
    )


def folder(dataset: str, size: int) -> str:
    """A dataset's results folder: its flag, plus the size when it is not MedMNIST's 28 (e.g. adrenalmnist3d_64)."""
    return dataset if size == 28 else f"{dataset}_{size}"


def collect(out: Path) -> dict:
    """dataset -> variant -> list of results (one per seed), from the files on disk."""
    found: dict = {}
    for path in sorted(out.glob("*/*/seed*/results.json")):
        r = json.loads(path.read_text())
        dataset, variant = path.parts[-4], path.parts[-3]
        found.setdefault(dataset, {}).setdefault(variant, []).append(r)
    return found


def published(anchors: dict, dataset: str) -> list[tuple[str, float, float, str, int]]:
    """Published (name, test ACC %, test AUC %, seeds, digits as published) readings for a results folder."""
    # MedMNIST v2's numbers are at 28 px / 28^3 voxels only: a folder such as adrenalmnist3d_64 matches none
    v2 = {**anchors.get("medmnist_v2_2d", {}), **anchors.get("medmnist_v2_3d", {})}.get(dataset, {})
    rows = [(f"MedMNIST v2 {name}", 100 * v2[name]["ACC"], 100 * v2[name]["AUC"], "-", 1)
            for name in ("ResNet-18 (28)", "ResNet-50 (28)", "ResNet-18 + 3D", "ResNet-18 + ACS", "ResNet-50 + 3D")
            if name in v2]
    plus = anchors.get("medmnist_plus_per_dataset_end_to_end", {}).get(dataset, {}).get("ViT-B/16")
    if plus:
        rows.append(("MedMNIST+ ViT-B/16 (28, padded to 224)", plus["ACC"]["28"], plus["AUC"]["28"], "3", 2))
    return rows


def render(out: Path) -> str:
    found = collect(out)
    anchors = json.loads(ANCHORS.read_text()) if ANCHORS.is_file() else {}
    summary, lines = {}, []
    lines.append("| dataset | variant | seeds | test ACC | test AUC | ΔACC vs plain | ΔAUC vs plain | "
                 "val-selected epochs |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for dataset, variants in found.items():
        plain = variants.get("plain")
        base = {m: mean_std([100 * r["test"][m] for r in plain])[0] for m in ("acc", "auc")} if plain else None
        for variant in [v for v in VARIANTS if v in variants]:
            runs = variants[variant]
            acc, auc = (mean_std([100 * r["test"][m] for r in runs]) for m in ("acc", "auc"))
            delta = (f"{acc[0] - base['acc']:+.2f}", f"{auc[0] - base['auc']:+.2f}") if base else ("", "")
            epochs = ",".join(str(r["selected_epoch"]) for r in runs)
            lines.append(f"| {dataset} | {variant} ({runs[0]['config']['model']}) | {len(runs)} | "
                         f"{acc[0]:.2f} ± {acc[1]:.2f} | {auc[0]:.2f} ± {auc[1]:.2f} | {delta[0]} | {delta[1]} | "
                         f"{epochs} |")
            summary.setdefault(dataset, {})[variant] = {
                "model": runs[0]["config"]["model"], "seeds": [r["config"]["seed"] for r in runs],
                "test_acc_mean": acc[0], "test_acc_std": acc[1], "test_auc_mean": auc[0], "test_auc_std": auc[1],
                "train_images_per_s": statistics.mean(r["train_images_per_s"] for r in runs),
            }
        for name, acc, auc, seeds, digits in published(anchors, dataset):
            lines.append(f"| {dataset} | published: {name} | {seeds} | {acc:.{digits}f} | {auc:.{digits}f} | | | |")
    lines.append("")
    for dataset, variants in found.items():
        base = variants.get("plain")
        for variant in [v for v in VARIANTS if v in variants and v != "plain" and base]:
            for metric in ("acc", "auc"):
                delta, _, reading = versus([100 * r["test"][metric] for r in variants[variant]],
                                           [100 * r["test"][metric] for r in base])
                lines.append(f"- {dataset}, {variant} vs plain, test {metric.upper()}: {delta:+.2f} points, {reading}")
    first = next((r for v in found.values() for rs in v.values() for r in rs), None)
    header = ["# MedMNIST sweep", ""]
    if first:
        skip = ("model", "seed", "model_kwargs", "dataset", "data_dir")
        for dataset, variants in found.items():  # every variant of a dataset shares its recipe
            run = next(r for rs in variants.values() for r in rs)
            cfg = {k: v for k, v in run["config"].items() if k not in skip}
            header += [f"Recipe, {dataset}: `{json.dumps(cfg)}`", ""]
        env = first["environment"]
        header += [f"Hardware: {env['processor']}, {env['cpu_count']} CPUs, CUDA: {env['cuda']}; torch {env['torch']}, "
                   f"timm {env['timm']}. Test metrics are of the epoch chosen on the validation split; mean ± std "
                   "over seeds, in percent.", ""]
    text = "\n".join(header + lines) + "\n"
    (out / "table.md").write_text(text)
    update_readme(out.name, "\n".join(header[2:] + lines))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _chart(summary, {d: published(anchors, d) for d in summary}, out / "chart.png")
    return text


def _chart(summary: dict, anchors: dict[str, list], path: Path) -> None:
    """Grouped bars per dataset and variant; published readings as dashed lines across their dataset's group."""
    if not summary:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    datasets = list(summary)
    variants = [v for v in VARIANTS if any(v in summary[d] for d in datasets)]
    width = 0.8 / max(1, len(variants))
    for ax, metric in zip(axes, ("acc", "auc"), strict=True):
        for i, v in enumerate(variants):
            xs = [j + i * width for j, d in enumerate(datasets) if v in summary[d]]
            ys = [summary[d][v][f"test_{metric}_mean"] for d in datasets if v in summary[d]]
            es = [summary[d][v][f"test_{metric}_std"] for d in datasets if v in summary[d]]
            model = next(summary[d][v]["model"] for d in datasets if v in summary[d])
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"{v} ({model})")
        styles: dict[str, tuple[str, str]] = {}
        for j, d in enumerate(datasets):
            for name, acc, auc, _, _ in anchors.get(d, []):
                label = None if name in styles else name  # one legend entry per published model
                color, style = styles.setdefault(name, LINE_STYLES[len(styles) % len(LINE_STYLES)])
                ax.hlines(acc if metric == "acc" else auc, j - width / 2, j + width * (len(variants) - 0.5),
                          colors=color, linestyles=style, label=label)
        ax.set_xticks([j + width * (len(variants) - 1) / 2 for j in range(len(datasets))], datasets)
        ax.set_ylabel(f"test {metric.upper()} (%)")
        lo = min([summary[d][v][f"test_{metric}_mean"] for d in datasets for v in summary[d]]
                 + [a[1 if metric == "acc" else 2] for d in datasets for a in anchors.get(d, [])])
        ax.set_ylim(max(0, lo - 15), 100)
    handles, labels = axes[0].get_legend_handles_labels()
    rows = -(-len(labels) // 3)
    fig.set_figheight(3.8 + 0.22 * rows)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)  # below: bars stay visible
    fig.suptitle("MedMNIST, mean ± std over seeds (validation-selected epoch)")
    fig.tight_layout(rect=(0, 0.22 * rows / (3.8 + 0.22 * rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="breastmnist")
    p.add_argument("--variants", default="plain,mlp,rllm")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--backbone", default="vit", choices=["vit", "vit3d", "vivit"])
    p.add_argument("--size", default="tiny", help="backbone size: tiny, small, base (vivit: tiny, small, medium)")
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(ROOT / "results" / "medmnist"))
    p.add_argument("--img-size", type=int, default=28)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--hflip", type=float, default=0.5)
    p.add_argument("--randaug", default="rand-m9-mstd0.5")
    p.add_argument("--reprob", type=float, default=0.25)
    p.add_argument("--mixup", type=float, default=0.0)
    p.add_argument("--cutmix", type=float, default=0.0)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--shift", type=int, default=0, help="3D: random shifts of up to this many voxels")
    p.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.render_only:
        for dataset in args.datasets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for variant in args.variants.split(","):
                    if variant not in VARIANTS:
                        p.error(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
                    cfg = run_config(args, dataset, variant, seed)
                    r = fit(cfg, out / folder(dataset, cfg.size) / variant / f"seed{seed}", resume=True,
                            progress=False)
                    print(f"{dataset} {variant} seed {seed}: test acc {r['test']['acc']:.4f} auc {r['test']['auc']:.4f}"
                          f" (epoch {r['selected_epoch']})", flush=True)
    print(render(out))


if __name__ == "__main__":
    main()
