"""MedMNIST sweep: variants x datasets x seeds with one shared recipe, then a table and a chart.

    python benchmarks/medmnist_sweep.py --datasets breastmnist --seeds 0,1,2 --epochs 30
    python benchmarks/medmnist_sweep.py --config benchmarks/recipes/medmnist2d_breast.yaml --variants aux

Each run writes ``OUT/DATASET/VARIANT/seedN/results.json`` (command, versions, hardware, seed,
validation-selected metrics, the test split scored once); finished runs are skipped and an
interrupted one resumes. ``OUT/table.md``, ``OUT/summary.json`` and ``OUT/chart.png`` are
rendered from those files only (``--render-only`` re-renders without training).

Variants share seeds, so each is compared with the plain ViT seed by seed: the mean paired
difference with its 95% CI (``timm_rllm.train.seed_stats.paired``). A run "collapsed" when its
validation-selected model gives every test image the same class; such rows are flagged.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _report import update_results

from timm_rllm._io import atomic_write, atomic_write_json, atomic_write_text
from timm_rllm.train import TrainConfig, fit
from timm_rllm.train.balance import BALANCE_MODES
from timm_rllm.train.engine import resolve_amp
from timm_rllm.train.scoring import collapse_tally
from timm_rllm.train.seed_stats import by_seed, mean_std, paired

ROOT = Path(__file__).resolve().parent

# variant -> (timm model, extra model kwargs, TrainConfig overrides); {plain} is timm's ViT for 2D and our
# llm-free model for 3D; {resnet} is MedMNIST v2's ResNet-18 (28) or ResNet-18 + 3D, in this harness.
VARIANTS = {
    "plain": ("{plain}", {}, {}),
    "mlp": ("{backbone}_{size}_rllm_{llm}", {"residual": "mlp"}, {}),
    "linear": ("{backbone}_{size}_rllm_{llm}", {"residual": "linear"}, {}),
    "rllm": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner"}, {}),
    "gemma3": ("{backbone}_{size}_rllm_gemma3", {"residual": "inner"}, {}),
    "outer": ("{backbone}_{size}_rllm_{llm}", {"residual": "outer"}, {}),
    "hybrid": ("{backbone}_{size}_rllm_{llm}", {"residual": "hybrid"}, {}),
    "random": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner", "llm_source": "random"}, {}),
    # train with the block on a side branch, deploy the plain ViT (Bai et al., AAAI 2025); aux_weight untuned
    "aux": ("{backbone}_{size}_rllm_{llm}", {"residual": "aux", "aux_weight": 1.0}, {}),
    # the paper's "R-LLM fine-tuned" row: the block unfrozen (gradients, optimizer state, saved in checkpoints)
    "tuned": ("{backbone}_{size}_rllm_{llm}", {"residual": "inner", "llm_trainable": True}, {}),
    "resnet": ("{resnet}", {"drop_path_rate": 0.0}, {}),  # MedMNIST's network has no stochastic depth
}
BASELINE = "resnet"  # shown in every table beside the published rows, "not run" when missing
ANCHORS = ROOT / "medmnist_anchors.json"
LINE_STYLES = [("black", "--"), ("dimgray", ":"), ("gray", "-.")]  # published readings on the chart


def run_config(args: argparse.Namespace, dataset: str, variant: str, seed: int) -> TrainConfig:
    model, extra, overrides = VARIANTS[variant]
    plain = f"vit_{args.size}_patch16_224" if args.backbone == "vit" else f"{args.backbone}_{args.size}"
    resnet = "resnet18_medmnist" if args.backbone == "vit" else "resnet18_3d_medmnist"
    cfg = dict(
        model=model.format(plain=plain, resnet=resnet, backbone=args.backbone, size=args.size, llm=args.llm),
        dataset=dataset, size=args.img_size if args.backbone != "vit" else 28, data_dir=args.data_dir,
        shift=args.shift, img_size=args.img_size, patch_size=args.patch_size,
        model_kwargs=dict(dict(drop_path_rate=args.drop_path), **extra),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, hflip=args.hflip,
        randaug=args.randaug or None, reprob=args.reprob, mixup=args.mixup, cutmix=args.cutmix,
        amp=resolve_amp(args.amp), balance=args.balance, seed=seed, grad_coherence=args.grad_coherence,
    )
    cfg = {**cfg, **overrides}
    if cfg["amp"] == "none" and "_rllm_" in cfg["model"]:
        # without autocast a bf16-stored block runs in bf16, emulated (7x slower here) on CPUs without bf16
        cfg["model_kwargs"] = {"llm_dtype": "float32", **cfg["model_kwargs"]}
    return TrainConfig(**cfg)


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


def _pm(values: list[float]) -> str:
    if not values:
        return "n/a"
    m, sd = mean_std(values)
    return f"{m:.2f} ± {sd:.2f}"


def _label(variant: str, runs: list[dict]) -> str:
    """The variant's row label; mlp runs from before #17 ran W_out(W_in z) (now `linear`) and say so."""
    label = f"{variant} ({runs[0]['config']['model']})"
    if variant == "mlp" and any("formula" not in (r.get("llm_info") or {}) for r in runs):
        label += " [pre-#17 runs: W_out(W_in z), i.e. today's `linear`]"
    return label


SKIP = ("model", "seed", "model_kwargs", "dataset", "data_dir")


def _recipe(variants: dict) -> dict:
    """A dataset's shared recipe: the plain run's config (or the first run's) without per-variant fields."""
    run = (variants.get("plain") or next(iter(variants.values())))[0]
    return {k: v for k, v in run["config"].items() if k not in SKIP}


def render(out: Path) -> str:
    found = collect(out)
    anchors = json.loads(ANCHORS.read_text()) if ANCHORS.is_file() else {}
    summary, lines, notes = {}, [], []
    lines.append("| dataset | variant | seeds | test ACC | test BACC | test AUC | ΔACC vs plain (paired, 95% CI) | "
                 "ΔAUC vs plain (paired, 95% CI) | collapsed | val-selected epochs |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for dataset, variants in found.items():
        plain = variants.get("plain")
        recipe = _recipe(variants)
        for variant in [v for v in VARIANTS if v in variants]:
            runs = variants[variant]
            values = {m: by_seed(runs, "test", m) for m in ("acc", "bacc", "auc")}
            deltas = {m: paired(values[m], by_seed(plain, "test", m), variant, "plain")
                      for m in ("acc", "auc")} if plain and variant != "plain" else {}
            shown = {m: f"{d.delta:+.2f}" + (f" ({d.ci})" if d.ci else "") for m, d in deltas.items()}
            tally = collapse_tally(runs)
            flag = " **collapsed**" if tally != "n/a" and not tally.startswith("0/") else ""
            epochs = ",".join(str(r["selected_epoch"]) for r in runs)
            pm = {m: _pm(list(v.values())) for m, v in values.items()}
            lines.append(f"| {dataset} | {_label(variant, runs)}{flag} | {len(runs)} | {pm['acc']} | {pm['bacc']} | "
                         f"{pm['auc']} | {shown.get('acc', '')} | {shown.get('auc', '')} | {tally} | {epochs} |")
            differs = {k: v for k, v in runs[0]["config"].items()  # a field newer than a run: it ran the default
                       if k not in SKIP and recipe.get(k, TrainConfig.defaults().get(k)) != v}
            if differs:
                notes.append(f"- {dataset}, {variant}: differs from the recipe in {json.dumps(differs)}")
            acc, auc = mean_std(list(values["acc"].values())), mean_std(list(values["auc"].values()))
            summary.setdefault(dataset, {})[variant] = {
                "model": runs[0]["config"]["model"], "seeds": [r["config"]["seed"] for r in runs],
                "test_acc_mean": acc[0], "test_acc_std": acc[1], "test_auc_mean": auc[0], "test_auc_std": auc[1],
                "test_bacc_mean": mean_std(list(values["bacc"].values()))[0] if values["bacc"] else None,
                "collapsed": tally,
                "paired_vs_plain": {m: {"delta": d.delta, "ci95": [d.low, d.high], "n": d.n, "reading": d.reading}
                                    for m, d in deltas.items()},
                "train_images_per_s": statistics.mean(r["train_images_per_s"] for r in runs),
            }
            for m, d in deltas.items():
                notes.append(f"- {dataset}, {variant} vs plain, test {m.upper()}: {d.delta:+.2f} points, {d.reading}")
        boosted = variants.get("rllm")
        for control in [v for v in ("mlp", "linear", "random", BASELINE) if v in variants and boosted]:
            for m in ("acc", "auc"):  # the boosted model against each control, paired by seed as against plain
                d = paired(by_seed(boosted, "test", m), by_seed(variants[control], "test", m), "rllm", control)
                notes.append(f"- {dataset}, rllm vs {control}, test {m.upper()}: {d.delta:+.2f} points, {d.reading}")
        for other in [v for v in ("aux", "tuned") if v in variants and boosted]:
            for m in ("acc", "auc"):  # the two ways of training with the block, against R-LLM as published
                d = paired(by_seed(variants[other], "test", m), by_seed(boosted, "test", m), other, "rllm")
                notes.append(f"- {dataset}, {other} vs rllm, test {m.upper()}: {d.delta:+.2f} points, {d.reading}")
        if BASELINE not in variants:
            lines.append(f"| {dataset} | {BASELINE} (MedMNIST v2's ResNet-18 in this harness) | 0 | not run | "
                         f"| | | | | |")
        for name, acc, auc, seeds, digits in published(anchors, dataset):
            lines.append(f"| {dataset} | published: {name} | {seeds} | {acc:.{digits}f} | | {auc:.{digits}f} "
                         "| | | | |")
    lines += ["", *notes]
    first = next((r for v in found.values() for rs in v.values() for r in rs), None)
    header = ["# MedMNIST sweep", ""]
    if first:
        for dataset, variants in found.items():  # every variant of a dataset shares its recipe (notes say otherwise)
            header += [f"Recipe, {dataset}: `{json.dumps(_recipe(variants))}`", ""]
        env = first["environment"]
        cpu = f" ({env['cpu_model']}, {env['torch_threads']} torch threads)" if env.get("cpu_model") else ""
        header += [f"Hardware: {env['processor']}{cpu}, {env['cpu_count']} CPUs, CUDA: {env['cuda']}; torch "
                   f"{env['torch']}, timm {env['timm']}. Test metrics are of the epoch chosen on the validation split; "
                   "mean ± std over seeds, in percent. Δ: mean over seeds of (variant - plain) on the same seed, "
                   "95% CI from the paired t distribution. collapsed: runs whose selected model predicts one class "
                   "for the whole test split (BACC then 50% for binary tasks).", ""]
    text = "\n".join(header + lines) + "\n"
    atomic_write_text(out / "table.md", text)
    update_results(out.name, "\n".join(header[2:] + lines))
    atomic_write_json(summary, out / "summary.json")
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
            bars = ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"{v} ({model})")
            tallies = [summary[d][v].get("collapsed", "n/a") for d in datasets if v in summary[d]]
            for bar, y, e, tally in zip(bars, ys, es, tallies, strict=True):
                if tally != "n/a" and not tally.startswith("0/"):  # some seeds collapsed: hatch and say how many
                    bar.set_hatch("//")
                    bar.set_edgecolor("black")
                    ax.annotate(tally, (bar.get_x() + bar.get_width() / 2, y + e), ha="center", va="bottom",
                                fontsize=7)
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
    from matplotlib.container import BarContainer
    from matplotlib.patches import Patch

    handles, labels = axes[0].get_legend_handles_labels()
    # plain swatches: a variant's legend entry must not inherit the hatch of its first (collapsed) bar
    handles = [Patch(facecolor=h.patches[0].get_facecolor()) if isinstance(h, BarContainer) else h for h in handles]
    if any(not st.get("collapsed", "n/a").startswith(("0/", "n/a")) for d in datasets for st in summary[d].values()):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//"))
        labels.append("hatched: k/n seeds collapsed (one class for every test image)")
    rows = -(-len(labels) // 3)
    fig.set_figheight(3.8 + 0.22 * rows)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)  # below: bars stay visible
    fig.suptitle("MedMNIST, mean ± std over seeds (validation-selected epoch)")
    fig.tight_layout(rect=(0, 0.22 * rows / (3.8 + 0.22 * rows) + 0.02, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a YAML recipe (benchmarks/recipes/medmnist2d_breast.yaml): its "
                   "keys are these options; flags override them")
    p.add_argument("--datasets", default="breastmnist")
    p.add_argument("--variants", default="plain,mlp,rllm,resnet", help=f"comma-separated, of: {', '.join(VARIANTS)}")
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
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"],
                   help="auto: bf16 where the hardware runs it natively, else none (fp32)")
    p.add_argument("--balance", default="none", choices=BALANCE_MODES,
                   help="class imbalance: class-weighted loss or a balanced sampler (timm_rllm.train.balance)")
    p.add_argument("--grad-coherence", type=int, default=0,
                   help="every N epochs, log gradient coherence (timm_rllm.train.coherence); changes no number")
    p.add_argument("--render-only", action="store_true")
    return p


def load_sweep_recipe(p: argparse.ArgumentParser, path: str) -> None:
    """A YAML file under benchmarks/recipes/ whose keys are this script's options (``datasets``, ``variants``,
    ``epochs``, ``randaug`` ...): they become the defaults, and flags on the command line override them."""
    import yaml

    try:
        recipe = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        p.error(f"cannot read the recipe {path}: {' '.join(str(e).split())}")
    if not isinstance(recipe, dict):
        p.error(f"the recipe {path} must be a YAML mapping of option names to values")
    recipe = {str(k).replace("-", "_"): v for k, v in recipe.items()}
    known = {a.dest for a in p._actions} - {"help", "config", "render_only"}
    if unknown := sorted(set(recipe) - known):
        p.error(f"the recipe {path} has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    lists = {"datasets", "variants", "seeds"}  # comma-separated on the command line, YAML lists in a file
    p.set_defaults(**{k: ",".join(map(str, v)) if k in lists and isinstance(v, list) else v
                      for k, v in recipe.items()})


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options, with a ``--config`` YAML recipe's values as defaults."""
    p = build_parser()
    known, _ = p.parse_known_args(argv)
    if known.config:
        load_sweep_recipe(p, known.config)
    return p, p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    p, args = parse_args(argv)
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
                          f" (epoch {r['selected_epoch']}{', COLLAPSED' if r.get('collapsed') else ''})", flush=True)
    print(render(out))


if __name__ == "__main__":
    main()
