"""Model cards for `hub_cards/`, built only from the sweep's results files.

    python benchmarks/make_hub_cards.py [--results benchmarks/results/medmnist] [--variants rllm,gemma3]

For each dataset and each boosted variant of the sweep, the seed whose run has the best
validation AUC is the checkpoint to publish, preferring runs that fit (see the sweep table's "did not fit";
a card says so when none did); selection never looks at the test split. Its
folder gets ``config.json`` (timm's Hub format, with the LLM block's source, layer and digest) and
``README.md`` (the card, with that run's numbers and command). Weights are not committed: the
card's command reproduces them, and `timm-rllm export RUN --out DIR` writes the full folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from timm_rllm.data import MedMNISTSplit
from timm_rllm.export import export_model, medmnist_tag
from timm_rllm.models.vision_transformer_rllm import plain_architecture
from timm_rllm.train.engine import TrainConfig, build_model
from timm_rllm.train.report import did_not_fit

ROOT = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT / "results" / "medmnist"))
    p.add_argument("--out", default=str(ROOT.parent / "hub_cards"))
    p.add_argument("--variants", default="", help="comma-separated variants to card (default: every boosted one); "
                   "leave out a variant whose seeds are still running")
    args = p.parse_args()
    wanted = set(filter(None, args.variants.split(",")))
    runs: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(Path(args.results).glob("*/*/seed*/results.json")):
        r = json.loads(path.read_text())
        info, variant = r.get("llm_info") or {}, path.parts[-3]
        # controls (a random block; mlp and linear, which skip the block) are never published
        if info.get("llm") and not info.get("random_weights") and variant not in ("mlp", "linear") \
                and (not wanted or variant in wanted):
            runs.setdefault((path.parts[-4], variant), []).append(r)
    for (dataset, variant), results in runs.items():
        # runs that fit first (a train-split criterion), then the best validation AUC
        best = max(results, key=lambda r: (did_not_fit(r) is not True, r["val"]["auc"], r["val"]["acc"]))
        cfg = TrainConfig(**best["config"])
        probe = MedMNISTSplit(cfg.dataset, "val", cfg.size, cfg.data_dir)
        model = build_model(cfg, probe.num_classes, cfg.in_chans or probe.in_chans)
        tag = medmnist_tag(cfg.dataset, cfg.size)
        if variant == "aux":  # deployed without the block: timm's own ViT, named after what trained it
            model_name, tag = plain_architecture(cfg.model), f"{tag}_rllm_aux"
        else:
            model_name, tag = cfg.model, tag + ("" if variant in ("rllm", "gemma3") else f"_{variant}")
        out = export_model(model, Path(args.out) / f"{model_name}.{tag}", best, tag=tag, weights=False,
                           sweep=sweep_of(Path(args.results), dataset, variant))
        print(f"{out}: seed {cfg.seed} (val AUC {best['val']['auc']:.4f}), test ACC {best['test']['acc']:.4f} "
              f"AUC {best['test']['auc']:.4f}")


def sweep_of(results: Path, dataset: str, variant: str) -> dict | None:
    """The variant's over-seeds numbers from the sweep's summary.json (render it first), for the card."""
    path = results / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text()).get(dataset) or {}
    if variant not in summary:
        return None
    return {"name": summary[variant]["model"], "variant": variant, "summary": summary[variant],
            "plain": summary.get("plain"), "source": str(path.resolve().relative_to(ROOT.parent))}


if __name__ == "__main__":
    main()
