"""The one report module: tables, findings, summary.json and charts of a sweep folder, from its results files only.

- :func:`render_variants`: a variant sweep (``DATASET/VARIANT/seedN``): every variant against the plain model,
  paired by seed (mean difference, 95% CI), R-LLM against each control, collapsed runs flagged, published
  readings beside them (``chart.png``), and the paired differences as a forest plot (``paired.png``);
- :func:`render_layers`: a layer sweep (``LLM/layerN/seedN``): per (LLM, layer) against the plain ViT and the
  ``mlp`` control, and the findings (the best block chosen on validation, its paired differences).

The runs come from :mod:`timm_rllm.train.sweep`; charts need matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import functools
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json, atomic_write_text
from ..data import DataError, MedMNISTSplit
from .balance import build_criterion, constant_loss
from .engine import TrainConfig, describe_hardware
from .scoring import collapse_tally
from .seed_stats import Paired, by_seed, mean_interval, mean_std, paired
from .sweep import VARIANTS

BASELINE = "resnet"  # shown in every table beside the published rows, "not run" when missing
NO_FIT = 0.99  # a last train loss at or above 99% of the input-blind prediction's: the model learned nothing
LINE_STYLES = [("black", "--"), ("dimgray", ":"), ("gray", "-.")]  # published readings on the chart


def _groups(out: Path, pattern: str) -> dict[str, list[dict[str, Any]]]:
    """Run group (the seed folders' parent, relative to ``out``) -> its results, in path order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob(pattern)):
        groups.setdefault(path.parent.parent.relative_to(out).as_posix(), []).append(json.loads(path.read_text()))
    return groups


def _pm(stat: tuple[float, float], digits: int = 2) -> str:
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def _delta(d: Paired) -> str:
    return f"{d.delta:+.2f}" + (f" ({d.ci})" if d.ci else "")


def cpu_kinds(envs: list[dict[str, Any]]) -> str:
    """"" where every run ran on one kind of CPU, else how many ran on each (model and SIMD level): at one thread
    count a run repeats bit for bit only on the kind of CPU that ran it."""
    kinds = Counter(f"{e.get('cpu_model')} {e.get('cpu_capability')}" for e in envs)
    return "; runs per CPU: " + ", ".join(f"{k} {n}" for k, n in kinds.items()) if len(kinds) > 1 else ""


def _hardware(envs: list[dict[str, Any]]) -> str:
    env = envs[0]
    return f"Hardware: {describe_hardware(env)}; torch {env['torch']}, timm {env['timm']}{cpu_kinds(envs)}."


# ---- variant sweeps

def collect(out: Path) -> dict:
    """dataset -> variant -> list of results (one per seed), from a variant sweep's files on disk."""
    found: dict = {}
    for group, runs in _groups(out, "*/*/seed*/results.json").items():
        dataset, variant = group.split("/")
        found.setdefault(dataset, {})[variant] = runs
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


def _pm_values(values: list[float]) -> str:
    return _pm(mean_std(values)) if values else "n/a"


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


def constant_train_loss(run: dict[str, Any]) -> float | None:
    """The train loss of the best input-blind prediction under the run's loss: from its results file, or (files
    that predate the field) from the train split's labels; None with Mixup/CutMix or the balanced sampler (their
    batches are not the split's label mix), or when the data file is not at hand."""
    if "constant_train_loss" in run:
        return run["constant_train_loss"]
    cfg = run["config"]
    if cfg.get("mixup") or cfg.get("cutmix") or cfg.get("balance") == "sampler":
        return None
    return _constant_from_labels(cfg["dataset"], cfg.get("size", 28), cfg.get("data_dir"), cfg.get("balance", "none"),
                                 cfg.get("label_smoothing", TrainConfig.label_smoothing))


@functools.lru_cache(maxsize=64)
def _constant_from_labels(dataset: str, size: int, data_dir: str | None, balance: str,
                          label_smoothing: float) -> float | None:
    try:
        train = MedMNISTSplit(dataset, "train", size, data_dir, download=False)
    except DataError:
        return None
    criterion = build_criterion(balance, train.task, train.labels, train.num_classes, label_smoothing, False)
    return constant_loss(criterion, train.labels, train.task, train.num_classes)


def did_not_fit(run: dict[str, Any], constant: float | None = None) -> bool | None:
    """Whether a run ended training at (or above) the loss of the best input-blind prediction (``constant``,
    default: the run's own); None when either loss is unknown."""
    constant = constant_train_loss(run) if constant is None else constant
    if constant is None or not run.get("history"):
        return None
    return run["history"][-1]["train_loss"] >= NO_FIT * constant


def no_fit_tally(runs: list[dict[str, Any]]) -> str:
    """``k/n``: how many runs did not fit (see :func:`did_not_fit`), of those where it is known."""
    known = [flag for r in runs if (flag := did_not_fit(r)) is not None]
    return f"{sum(known)}/{len(known)}" if known else "n/a"


def _pair(a: list[dict] | None, b: list[dict] | None, metric: str, a_name: str, b_name: str) -> Paired | None:
    """Test ``metric`` of variant a minus b on their shared seeds; None when they share none (yet)."""
    if not a or not b or not {r["config"]["seed"] for r in a} & {r["config"]["seed"] for r in b}:
        return None
    return paired(by_seed(a, "test", metric), by_seed(b, "test", metric), a_name, b_name)


def render_variants(out: str | Path, anchors: dict | None = None) -> str:
    """table.md, summary.json and chart.png of a variant sweep folder, from its results files only; ``anchors``:
    published readings (benchmarks/medmnist_anchors.json) drawn beside the runs."""
    out, anchors = Path(out), anchors or {}
    found = collect(out)
    summary, lines, notes = {}, [], []
    forest: dict[str, list[tuple[str, Paired]]] = {}  # dataset -> ("A - B", its test AUC comparison)
    lines.append("| dataset | variant | seeds | test ACC | test BACC | test AUC | last train loss | did not fit | "
                 "ΔACC vs plain (paired, 95% CI) | ΔAUC vs plain (paired, 95% CI) | collapsed | val-selected epochs |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    constants = {}
    for dataset, variants in found.items():
        plain = variants.get("plain")
        recipe = _recipe(variants)
        constants[dataset] = sorted({round(c, 3) for runs in variants.values() for r in runs
                                     if (c := constant_train_loss(r)) is not None})
        for variant in [v for v in VARIANTS if v in variants]:
            runs = variants[variant]
            values = {m: by_seed(runs, "test", m) for m in ("acc", "bacc", "auc")}
            deltas = {m: d for m in ("acc", "auc") if variant != "plain"
                      and (d := _pair(runs, plain, m, variant, "plain"))}
            shown = {m: _delta(d) for m, d in deltas.items()}
            tally = collapse_tally(runs)
            flag = " **collapsed**" if tally != "n/a" and not tally.startswith("0/") else ""
            epochs = ",".join(str(r["selected_epoch"]) for r in runs)
            pm = {m: _pm_values(list(v.values())) for m, v in values.items()}
            # the training split's loss at the last epoch (the deployed path's): a model that never fit shows here
            losses = {r["config"]["seed"]: r["history"][-1]["train_loss"] for r in runs if r.get("history")}
            loss = _pm(mean_std(list(losses.values())), 3) if losses else "n/a"
            no_fit = no_fit_tally(runs)
            lines.append(f"| {dataset} | {_label(variant, runs)}{flag} | {len(runs)} | {pm['acc']} | {pm['bacc']} | "
                         f"{pm['auc']} | {loss} | {no_fit} | {shown.get('acc', '')} | {shown.get('auc', '')} | "
                         f"{tally} | {epochs} |")
            differs = {k: v for k, v in runs[0]["config"].items()  # a field newer than a run: it ran the default
                       if k not in SKIP and recipe.get(k, TrainConfig.defaults().get(k)) != v}
            if differs:
                notes.append(f"- {dataset}, {variant}: differs from the recipe in {json.dumps(differs)}")
            acc, auc = mean_std(list(values["acc"].values())), mean_std(list(values["auc"].values()))
            summary.setdefault(dataset, {})[variant] = {
                "model": runs[0]["config"]["model"], "seeds": [r["config"]["seed"] for r in runs],
                "test_acc_mean": acc[0], "test_acc_std": acc[1], "test_auc_mean": auc[0], "test_auc_std": auc[1],
                "test_bacc_mean": mean_std(list(values["bacc"].values()))[0] if values["bacc"] else None,
                "collapsed": tally, "last_train_loss": losses, "did_not_fit": no_fit,
                "constant_train_loss": {r["config"]["seed"]: constant_train_loss(r) for r in runs},
                "paired_vs_plain": {m: d.as_dict() for m, d in deltas.items()},
                "train_images_per_s": statistics.mean(r["train_images_per_s"] for r in runs),
            }
            for m, d in deltas.items():
                notes.append(f"- {dataset}, {variant} vs plain, test {m.upper()}: {d.delta:+.2f} points, {d.reading}")
            if "auc" in deltas:
                forest.setdefault(dataset, []).append((f"{variant} - plain", deltas["auc"]))
        # the boosted model against each control, then the other ways of using the block against it
        pairs = [("rllm", c) for c in ("mlp", "linear", "random", BASELINE)]
        pairs += [(o, "rllm") for o in ("gemma3", "rllm_prenorm", "aux", "tuned")]  # another LLM, other uses
        for a, b in [(a, b) for a, b in pairs if a in variants and b in variants]:
            for m in ("acc", "auc"):
                if d := _pair(variants[a], variants[b], m, a, b):
                    notes.append(f"- {dataset}, {a} vs {b}, test {m.upper()}: {d.delta:+.2f} points, {d.reading}")
                    summary[dataset][a].setdefault("paired_vs", {}).setdefault(b, {})[m] = d.as_dict()
                    if m == "auc":
                        forest.setdefault(dataset, []).append((f"{a} - {b}", d))
        if BASELINE not in variants:
            lines.append(f"| {dataset} | {BASELINE} (MedMNIST v2's ResNet-18 in this harness) | 0 | not run | "
                         "| | | | | | | |")
        for name, acc, auc, seeds, digits in published(anchors, dataset):
            lines.append(f"| {dataset} | published: {name} | {seeds} | {acc:.{digits}f} | | {auc:.{digits}f} "
                         "| | | | | | |")
    lines += ["", *notes]
    first = next((r for v in found.values() for rs in v.values() for r in rs), None)
    header = ["# MedMNIST sweep", ""]
    if first:
        for dataset, variants in found.items():  # every variant of a dataset shares its recipe (notes say otherwise)
            header += [f"Recipe, {dataset}: `{json.dumps(_recipe(variants))}`", ""]
            if constants[dataset]:
                shown = " / ".join(f"{c:.3f}" for c in constants[dataset])
                header += [f"Train loss of the best input-blind prediction, {dataset}: {shown}.", ""]
        envs = [r["environment"] for v in found.values() for rs in v.values() for r in rs]
        header += [f"{_hardware(envs)} Test metrics are of the epoch chosen on the validation split; "
                   "mean ± std over seeds, in percent. last train loss: the training split's loss at the last "
                   "epoch. did not fit: runs whose last train loss is at least 99% of the best input-blind "
                   "prediction's (constant logits fitted to the train labels under the run's loss): they learned "
                   "next to nothing from the images. Δ: mean over seeds of (variant - "
                   "plain) on the same seed, 95% CI from the paired t distribution. collapsed: runs whose selected "
                   "model predicts one class for the whole test split (BACC then 50% for binary tasks).", ""]
    text = "\n".join(header + lines) + "\n"
    atomic_write_text(out / "table.md", text)
    atomic_write_json(summary, out / "summary.json")
    _variant_chart(summary, {d: published(anchors, d) for d in summary}, out / "chart.png")
    _paired_chart(forest, out / "paired.png")
    return text


# the cross-dataset verdict: (column, A, B, metric), A minus B paired by seed, as each sweep's summary.json keeps it
VERDICT: list[tuple[str, str, str, str]] = [
    ("R-LLM - plain, ACC", "rllm", "plain", "acc"), ("R-LLM - plain, AUC", "rllm", "plain", "auc"),
    ("R-LLM - `random`, AUC", "rllm", "random", "auc"), ("R-LLM - `mlp`, AUC", "rllm", "mlp", "auc"),
    ("Gemma 3 - plain, AUC", "gemma3", "plain", "auc"),
    ("ResNet-18 (same harness) - plain, AUC", BASELINE, "plain", "auc")]


def _stored_pair(variants: dict[str, dict[str, Any]], a: str, b: str, metric: str) -> Paired | None:
    """A minus B on ``metric`` as render_variants stored it (``paired_vs_plain`` or ``paired_vs[B]`` of A)."""
    entry = variants.get(a, {})
    d = (entry.get("paired_vs_plain", {}) if b == "plain" else entry.get("paired_vs", {}).get(b, {})).get(metric)
    return Paired.from_dict(d) if d else None


def _collapsed(variants: dict[str, dict[str, Any]]) -> tuple[int, int] | None:
    """(collapsed, runs) over the variants whose tally is known ("k/n"; runs older than the flag say "n/a")."""
    tallies = [tally.split("/") for v in variants.values() if (tally := str(v.get("collapsed", ""))).count("/") == 1]
    known = [(int(k), int(n)) for k, n in tallies if k.isdigit() and n.isdigit()]
    return (sum(k for k, _ in known), sum(n for _, n in known)) if known else None


def render_verdict(sweeps: list[str | Path], anchors: dict | None = None) -> tuple[str, dict]:
    """One row per (sweep, dataset) from the sweeps' summary.json files only: R-LLM minus plain and minus each
    control, another LLM and the same-harness CNN against plain (paired by seed, 95% CI; bold where the interval
    excludes 0), the plain and R-LLM means beside the published ResNet-18, and the collapsed runs."""
    lines = ["| sweep | dataset | seeds | " + " | ".join(c[0] for c in VERDICT)
             + " | plain ACC / AUC | R-LLM ACC / AUC | published ResNet-18 ACC / AUC | collapsed runs |",
             "|" + "---|" * (len(VERDICT) + 7)]
    rows, against = [], []  # against: each model's 5-seed mean next to the published ResNet-18's single number
    for sweep in map(Path, sweeps):
        for dataset, variants in json.loads((sweep / "summary.json").read_text()).items():
            seeds = len(variants.get("plain", variants.get("rllm", {})).get("seeds", []))
            cells, row = [], {"sweep": sweep.name, "dataset": dataset, "seeds": seeds, "paired": {}, "means": {}}
            for column, a, b, metric in VERDICT:
                d = _stored_pair(variants, a, b, metric)
                row["paired"][column] = d.as_dict() if d else None
                if d is None:
                    cells.append("not run")
                    continue
                shown = _delta(d) + ("" if d.ci else " (no interval)")
                shown += "" if d.n == seeds else f", {d.n} seed" + "s" * (d.n != 1)
                cells.append(f"**{shown}**" if d.excludes_zero else shown)
            means = []
            for v in ("plain", "rllm"):
                stat = variants.get(v)
                row["means"][v] = {m: stat[f"test_{m}_mean"] for m in ("acc", "auc")} if stat else None
                means.append(f"{stat['test_acc_mean']:.2f} / {stat['test_auc_mean']:.2f}" if stat else "not run")
            resnet = next(((acc, auc) for name, acc, auc, _, _ in published(anchors or {}, dataset)
                           if name.startswith("MedMNIST v2 ResNet-18")), None)
            collapsed = _collapsed(variants)
            row.update(published_resnet18={"acc": resnet[0], "auc": resnet[1]} if resnet else None,
                       collapsed={"collapsed": collapsed[0], "runs": collapsed[1]} if collapsed else None,
                       vs_published={})
            published_cell = f"{resnet[0]:.1f} / {resnet[1]:.1f}" if resnet else "n/a"
            collapsed_cell = f"{collapsed[0]} of {collapsed[1]}" if collapsed else "n/a"
            lines.append(f"| {sweep.name} | {dataset} | {seeds} | " + " | ".join(cells)
                         + f" | {means[0]} | {means[1]} | {published_cell} | {collapsed_cell} |")
            for v in ("plain", "rllm", BASELINE):
                if resnet and (stat := variants.get(v)):
                    shown = []
                    for i, m in enumerate(("acc", "auc")):
                        std = stat.get(f"test_{m}_std")  # older summaries keep no std: no interval
                        ci = None if std is None else mean_interval(stat[f"test_{m}_mean"], std, len(stat["seeds"]))
                        side = ("n/a" if ci is None else "above" if ci[0] > resnet[i]
                                else "below" if ci[1] < resnet[i] else "level")
                        row["vs_published"].setdefault(v, {})[m] = {"mean": stat[f"test_{m}_mean"], "ci95": ci,
                                                                    "published": resnet[i], "reading": side}
                        interval = f" ({ci[0]:.2f}..{ci[1]:.2f})" if ci else ""
                        shown.append(f"{stat[f'test_{m}_mean']:.2f}{interval} vs {resnet[i]:.1f}: {side}")
                    against.append(f"| {sweep.name} | {dataset} | {v} | {len(stat['seeds'])} | {' | '.join(shown)} |")
            rows.append(row)
    lines += ["", "Against the published ResNet-18: each model's test mean over seeds with the 95% t interval of that "
              "mean; above or below where the interval clears the published number, level where it covers it.", "",
              "| sweep | dataset | model | seeds | test ACC (95% CI of the mean) | test AUC (95% CI of the mean) |",
              "|---|---|---|---|---|---|", *against]
    return "\n".join(lines) + "\n", {"rows": rows}


def _paired_chart(forest: dict[str, list[tuple[str, Paired]]], path: Path) -> None:
    """A forest plot per dataset: each paired comparison's per-seed test AUC differences (dots) and their mean with
    its 95% CI (bar), against a line at 0: whether an interval clears 0 is what the table's readings say."""
    if not forest:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [0.9 + 0.32 * len(rows) for rows in forest.values()]
    fig, axes = plt.subplots(len(forest), 1, figsize=(7, sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (dataset, rows) in zip(axes[:, 0], forest.items(), strict=True):
        for y, (_, d) in enumerate(reversed(rows)):
            ax.scatter(d.diffs, [y] * len(d.diffs), s=12, color="gray", alpha=0.7, zorder=2)
            color = "black" if d.low is None or not d.excludes_zero else ("tab:green" if d.delta > 0 else "tab:red")
            if d.low is not None:
                ax.hlines(y, d.low, d.high, color=color, linewidth=2, zorder=3)
            ax.plot([d.delta], [y], marker="D", color=color, markersize=5, zorder=4)
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(len(rows)), [f"{label} (n={d.n})" for label, d in reversed(rows)], fontsize=8)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("test AUC difference, points (dots: seeds; diamond and bar: mean, 95% CI)", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def _variant_chart(summary: dict, anchors: dict[str, list], path: Path) -> None:
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


# ---- layer sweeps

def _depth(layer: int | list[int], num_layers: int) -> float:
    last = layer[-1] if isinstance(layer, list) else layer
    return last / max(1, num_layers - 1)


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
        # picked on the seeds every block has, so that a block run on more seeds is not judged on other ones
        common = sorted(set.intersection(*(set(st["values"]["val_auc"]) for st in layers.values())))
        val_auc = {n: sum(st["values"]["val_auc"][s] for s in common) / len(common) if common else st["val_auc"][0]
                   for n, st in layers.items()}
        best_name = max(layers, key=val_auc.get)
        best = layers[best_name]
        if all(len(st["values"]["val_auc"]) == len(common) for st in layers.values()):
            on = ""
        elif common:
            on = f", mean over seeds {', '.join(map(str, common))}, which every block has"
        else:
            on = ", each block over its own seeds: no seed is common to all"
        lines.append(f"- **{llm}: best block on validation AUC: {_layer_label(best['layer'])} of "
                     f"{best['num_layers']}** (val AUC {val_auc[best_name]:.2f}{on}; test AUC {_pm(best['test_auc'])}, "
                     f"test ACC {_pm(best['test_acc'])}).")
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


def render_layers(out: str | Path) -> str:
    """Table, findings, summary.json and chart.png of a layer sweep folder, from its results files only."""
    out = Path(out)
    groups = _groups(out, "**/seed*/results.json")
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
        return _delta(paired(st["values"]["test_auc"], ref["values"]["test_auc"]))

    for name, st in stats.items():
        mlp = stats.get(f"{name.split('/')[0]}/mlp")
        label = f"{name} (random weights)" if name.endswith("/random") else name
        lines.append(f"| {label} | {st['n']} | {st['val_auc'][0]:.2f} | {_pm(st['test_acc'])} | "
                     f"{_pm(st['test_auc'])} | {delta(st, plain)} | {delta(st, mlp) if st is not plain else ''} | "
                     f"{st['collapsed']} |")
    first = next(iter(groups.values()))[0]
    cfg = {k: v for k, v in first["config"].items() if k not in ("model", "seed", "model_kwargs", "data_dir")}
    envs = [r["environment"] for rs in groups.values() for r in rs]
    header = [f"Recipe: `{json.dumps(cfg)}`", "",
              f"{_hardware(envs)} Each run's test metrics are of the epoch chosen on its validation split; "
              "mean ± std over seeds, in percent. `layer N` counts from 0; the random block has the last layer's "
              "shapes and random weights.", ""]
    text = "\n".join(header + lines + [""] + findings(stats)) + "\n"
    atomic_write_text(out / "table.md", text)
    atomic_write_text(out / "summary.json", json.dumps(
        {n: {k: v for k, v in st.items() if k != "values"} for n, st in stats.items()}, indent=1))
    _layer_chart(stats, out / "chart.png", f"{first['config']['dataset']}, {first['config']['epochs']} epochs")
    return text


def _layer_chart(stats: dict[str, Any], path: Path, title: str) -> None:
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
