"""Recipe search for the plain ViT, on the validation split only: which training recipe should the sweep use?

    python benchmarks/recipe_search.py --dataset breastmnist --data-dir ../shared/data/medmnist --threads 1
    python benchmarks/recipe_search.py --dataset breastmnist --only light-ra   # one candidate
    python benchmarks/recipe_search.py --dataset breastmnist --render-only

One fixed architecture per dimension (ViT-Tiny, patch 4, 28 px for 2D; ViViT-Tiny, 28^3 voxels, for 3D)
runs every candidate of ``CANDIDATES`` (named TrainConfig overrides of ``BASE``; edit the dict freely, but
give a changed candidate a new name: a finished run folder only answers for the config it was run with)
over ``SEEDS``. Each run is an ordinary, resumable `fit` folder
``OUT/DATASET/CANDIDATE/seedN`` with ``score_test=False``: the test split is never loaded, never scored,
and nothing here reads it. ``OUT/DATASET/search.json`` and ``search.md`` list every candidate's mean
validation AUC / ACC / BACC and the chosen one: among the candidates with no seed collapsed on validation
(all of them, if every one has), the best mean validation AUC, ties (equal to 0.01 points) going to fewer
epochs. The sweep then runs the chosen recipe for every variant.

``--threads`` fixes torch's thread count: at a fixed count on one machine and software stack, a run is
bit-identical when repeated; another count can change the last bits of float sums and so the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from _report import update_results

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.train import TrainConfig, fit
from timm_rllm.train.engine import resolve_amp
from timm_rllm.train.report import cpu_kinds
from timm_rllm.train.scoring import collapse_tally

ROOT = Path(__file__).resolve().parent

OUT = ROOT / "results" / "recipe_search"
SEEDS = (0, 1)
# the fixed architecture: plain (no booster), as in the sweep's "plain" variant
ARCH = {
    "2d": dict(model="vit_tiny_patch16_224", img_size=28, patch_size=4, model_kwargs={"drop_path_rate": 0.1}),
    "3d": dict(model="vivit_tiny", img_size=28, patch_size=4, model_kwargs={"drop_path_rate": 0.1}),
}
# Epochs of the reference recipe per dataset (what 2 CPU cores allow; PneumoniaMNIST has 9x BreastMNIST's
# images). A candidate's "epochs_factor" scales them; others default to DEFAULT_EPOCHS.
EPOCHS = {"breastmnist": 40, "retinamnist": 30, "pneumoniamnist": 8, "adrenalmnist3d": 20}
DEFAULT_EPOCHS = 20
# The reference recipe: today's sweep recipe (README, benchmarks/medmnist_sweep.py defaults).
BASE = {
    "2d": dict(batch_size=64, lr=5e-4, weight_decay=0.05, warmup_epochs=3, label_smoothing=0.1, hflip=0.5,
               randaug="rand-m9-mstd0.5", reprob=0.25, ema_decay=None, balance="none"),
    "3d": dict(batch_size=32, lr=5e-4, weight_decay=0.05, warmup_epochs=2, label_smoothing=0.1, hflip=0.5, shift=2,
               randaug=None, reprob=0.0, ema_decay=None, balance="none"),
}
LIGHT_RA = dict(randaug="rand-m5-n1-mstd0.5", reprob=0.0)
HFLIP_WEIGHTED = dict(randaug=None, reprob=0.0, balance="weighted-loss")
# name -> overrides of BASE; "epochs_factor" scales the dataset's EPOCHS
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "2d": {
        "ref": {},  # RandAugment m9 + random erasing 0.25, label smoothing 0.1, 3 warm-up epochs
        "no-aug": dict(hflip=0.0, randaug=None, reprob=0.0),
        "hflip": dict(randaug=None, reprob=0.0),
        "light-ra": LIGHT_RA,
        "light-ra-ls0": dict(LIGHT_RA, label_smoothing=0.0),
        "light-ra-ema": dict(LIGHT_RA, ema_decay=0.998),
        "light-ra-lr1e-3": dict(LIGHT_RA, lr=1e-3),
        "light-ra-lr2e-4": dict(LIGHT_RA, lr=2e-4),
        "light-ra-bs32-warm1": dict(LIGHT_RA, batch_size=32, warmup_epochs=1),
        "light-ra-half": dict(LIGHT_RA, epochs_factor=0.5),
        "light-ra-weighted": dict(LIGHT_RA, balance="weighted-loss"),
        "light-ra-sampler": dict(LIGHT_RA, balance="sampler"),
        "ref-weighted": dict(balance="weighted-loss"),
        "hflip-weighted": HFLIP_WEIGHTED,
        "hflip-lr1e-3": dict(randaug=None, reprob=0.0, lr=1e-3),
        # BreastMNIST's chosen recipe still underfits (train loss falling at the last epoch, 240 steps in all):
        # more steps, by smaller batches and by longer training
        "hflip-weighted-bs16": dict(HFLIP_WEIGHTED, batch_size=16),
        "hflip-weighted-x3": dict(HFLIP_WEIGHTED, epochs_factor=3.0),
        "hflip-weighted-bs16-x3": dict(HFLIP_WEIGHTED, batch_size=16, epochs_factor=3.0),
        "hflip-weighted-x6": dict(HFLIP_WEIGHTED, epochs_factor=6.0),
    },
    "3d": {
        "ref": {},  # flips (p 0.5 per axis) + shifts of up to 2 voxels, label smoothing 0.1
        "no-aug": dict(hflip=0.0, shift=0),
        "flip": dict(shift=0),
        "ref-ls0": dict(label_smoothing=0.0),
        "ref-ema": dict(ema_decay=0.998),
        "ref-lr1e-3": dict(lr=1e-3),
        "ref-lr2e-4": dict(lr=2e-4),
        "ref-half": dict(epochs_factor=0.5),
        "ref-weighted": dict(balance="weighted-loss"),
        "ref-sampler": dict(balance="sampler"),
        # every candidate above had a seed whose AUC-selected epoch predicts one class on validation
        "ref-weighted-bacc": dict(balance="weighted-loss", select_on="bacc"),
        "ref-weighted-long": dict(balance="weighted-loss", epochs_factor=2.0),
        # boosted runs often did not fit under ref-weighted-bacc; at half its lr two of them did (a diagnostic)
        "ref-weighted-bacc-halflr": dict(balance="weighted-loss", select_on="bacc", lr=2.5e-4),
    },
}
TIE = 0.01  # validation AUC points: closer than this counts as a tie


def dim(dataset: str) -> str:
    return "3d" if dataset.endswith("3d") else "2d"


def candidate_config(dataset: str, name: str, seed: int, data_dir: str | None = None,
                     epochs: int | None = None, amp: str = "none") -> TrainConfig:
    """The TrainConfig of one candidate run: architecture, BASE, the candidate's overrides; test never scored.
    ``amp="auto"``: bf16 where the hardware runs it natively, else fp32 (`engine.resolve_amp`)."""
    d = dim(dataset)
    overrides = dict(CANDIDATES[d][name])
    base_epochs = epochs or EPOCHS.get(dataset, DEFAULT_EPOCHS)
    n_epochs = max(1, round(base_epochs * overrides.pop("epochs_factor", 1.0)))
    cfg = {**ARCH[d], "amp": resolve_amp(amp), **BASE[d], **overrides}
    cfg["warmup_epochs"] = min(cfg["warmup_epochs"], n_epochs - 1)
    return TrainConfig(dataset=dataset, data_dir=data_dir, epochs=n_epochs, seed=seed, score_test=False, **cfg)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Validation numbers of one candidate over its seeds, in percent (results' ``test`` is never read)."""
    val = {m: [100 * r["val"][m] for r in runs if r["val"].get(m) is not None] for m in ("auc", "acc", "bacc")}
    stats = {f"val_{m}": _mean_std(v) for m, v in val.items()}
    return {
        "seeds": [r["config"]["seed"] for r in runs],
        "epochs": runs[0]["config"]["epochs"],
        **{f"{k}_mean": v[0] for k, v in stats.items()}, **{f"{k}_std": v[1] for k, v in stats.items()},
        "val_collapsed": collapse_tally([{"collapsed": r.get("val_collapsed")} for r in runs]),
        "selected_epochs": [r["selected_epoch"] for r in runs],
        # how far the recipe fits the training split (against the input-blind loss; the logs show if it still falls)
        "last_train_loss_mean": statistics.mean(r["history"][-1]["train_loss"] for r in runs),
        "train_time_s_mean": statistics.mean(r["train_time_s"] for r in runs),
        "train_images_per_s_mean": statistics.mean(r["train_images_per_s"] for r in runs),
    }


def choose(summary: dict[str, dict[str, Any]]) -> str | None:
    """Among the candidates none of whose seeds collapsed on validation (all of them if every one has), the best
    mean validation AUC; within TIE of it, the fewest epochs; then the first in CANDIDATES order."""
    scored = [(n, s) for n, s in summary.items() if s.get("val_auc_mean") is not None]
    if not scored:
        return None
    if healthy := [(n, s) for n, s in scored if str(s["val_collapsed"]).startswith("0/")]:
        scored = healthy
    top = max(s["val_auc_mean"] for _, s in scored)
    tied = [(s["epochs"], i, n) for i, (n, s) in enumerate(scored) if top - s["val_auc_mean"] < TIE]
    return min(tied)[2]


def _overrides(dataset: str, name: str) -> dict[str, Any]:
    return dict(CANDIDATES[dim(dataset)][name])


def render(out: Path, dataset: str, seeds: list[int], epochs: int | None = None, amp: str = "none") -> str:
    """search.json and search.md of one dataset, from its run folders (validation numbers only). A run folder
    whose config is no longer its candidate's (the dict was edited) is left out and listed as stale."""
    folder = out / dataset
    summary: dict[str, dict[str, Any]] = {}
    envs, threads, stale = [], set(), []
    for name in CANDIDATES[dim(dataset)]:
        runs = []
        for path in sorted((folder / name).glob("seed*/results.json")):
            r = json.loads(path.read_text())
            seed, data_dir = r["config"]["seed"], r["config"]["data_dir"]
            if seed not in seeds:
                continue
            if not candidate_config(dataset, name, seed, data_dir, epochs, amp).same_as(r["config"]):
                stale.append(f"{name}/seed{seed}")
                continue
            runs.append(r)
            threads.add(r["environment"]["torch_threads"])
        if runs:
            summary[name] = {"overrides": _overrides(dataset, name), **summarize(runs)}
            envs += [r["environment"] for r in runs]
    chosen = choose(summary)
    arch = ARCH[dim(dataset)]
    skip = ("seed", "data_dir", "dataset", "score_test")
    base = {**BASE[dim(dataset)], "epochs": epochs or EPOCHS.get(dataset, DEFAULT_EPOCHS), "amp": resolve_amp(amp)}
    record = {
        "dataset": dataset, "architecture": arch, "base": base, "seeds": seeds,
        "rule": f"no seed collapsed on validation (unless every candidate has one), then best mean validation AUC; "
                f"within {TIE} points, fewer epochs; then CANDIDATES order",
        "split_policy": "validation only: every run has score_test=False (the test split is never loaded)",
        "torch_threads": sorted(threads), "environment": envs[0] if envs else None, "candidates": summary,
        "stale_runs": stale,
        "chosen": chosen,
        "chosen_config": None if chosen is None else {k: v for k, v in dataclasses.asdict(candidate_config(
            dataset, chosen, 0, None, epochs, amp)).items() if k not in skip},
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, folder / "search.json")

    def pm(s: dict[str, Any], key: str) -> str:
        return "n/a" if s[f"{key}_mean"] is None else f"{s[f'{key}_mean']:.2f} ± {s[f'{key}_std']:.2f}"

    lines = [f"# Recipe search, {dataset}", "",
             f"Architecture: `{json.dumps(arch)}` (plain, no booster). Base recipe: `{json.dumps(base)}`.", "",
             f"Seeds {', '.join(map(str, seeds))} per candidate; numbers are the validation split's at the epoch "
             "chosen on it, mean ± std over seeds, in percent. The test split was never loaded. "
             f"Choice: {record['rule']}.", ""]
    if envs:
        env = envs[0]
        lines += [f"Hardware: {env.get('cpu_model') or env['processor']}, {env['cpu_count']} CPUs, "
                  f"torch threads {'/'.join(map(str, sorted(threads)))}, CUDA: {env['cuda']}; torch {env['torch']}, "
                  f"timm {env['timm']}{cpu_kinds(envs)}. At a fixed thread count a run repeats bit for bit on the "
                  "kind of CPU that ran it; another thread count or CPU can change the numbers slightly.", ""]
    lines += ["| candidate | overrides | epochs | seeds | val AUC | val ACC | val BACC | val collapsed | "
              "selected epochs | last train loss | train s/run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        mark = f"**{name}** (chosen)" if name == chosen else name
        lines.append(f"| {mark} | `{json.dumps(s['overrides'])}` | {s['epochs']} | {len(s['seeds'])} | "
                     f"{pm(s, 'val_auc')} | {pm(s, 'val_acc')} | {pm(s, 'val_bacc')} | {s['val_collapsed']} | "
                     f"{','.join(map(str, s['selected_epochs']))} | {s['last_train_loss_mean']:.3f} | "
                     f"{s['train_time_s_mean']:.0f} |")
    missing = [n for n in CANDIDATES[dim(dataset)] if n not in summary]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    if stale:
        lines += ["", f"Left out (run with another config than the candidate's now): {', '.join(stale)}."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(folder / "search.md", text)
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="a MedMNIST flag, e.g. breastmnist or adrenalmnist3d")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (recorded in every file)")
    p.add_argument("--epochs", type=int, default=None, help="override the dataset's reference epochs")
    p.add_argument("--amp", default="none", choices=["auto", "bf16", "none"],
                   help="none (fp32, every committed search run's: a run of another precision is another candidate "
                        "and shows as stale); auto: bf16 where the hardware runs it natively, else fp32")
    p.add_argument("--only", default=None, help="run just this candidate (the report covers all that have run)")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(CANDIDATES[dim(args.dataset)])
    if args.only and args.only not in names:
        p.error(f"unknown candidate {args.only!r}; known: {', '.join(names)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    if not args.render_only:
        for name in [args.only] if args.only else names:
            for seed in seeds:
                cfg = candidate_config(args.dataset, name, seed, args.data_dir, args.epochs, args.amp)
                r = fit(cfg, out / args.dataset / name / f"seed{seed}", resume=True, progress=False)
                print(f"{args.dataset} {name} seed {seed}: val auc {r['val']['auc']:.4f} acc {r['val']['acc']:.4f} "
                      f"bacc {r['val']['bacc']:.4f} (epoch {r['selected_epoch']}/{cfg.epochs}, "
                      f"{r['train_time_s']:.0f}s)", flush=True)
    text = render(out, args.dataset, seeds, args.epochs, args.amp)
    if out == OUT:  # the committed search: its RESULTS.md block, where there is one (without the title)
        update_results(f"recipe_search_{args.dataset}", text.split("\n", 2)[2].rstrip("\n"))
    print(text)


if __name__ == "__main__":
    main()
