"""Does the closed-form layer score (`timm-rllm rank-layers`) predict the layer sweep?

    OMP_NUM_THREADS=1 python benchmarks/rank_layers.py [--seeds 0,1,2,3,4] [--llm smollm2]

For each trained plain ViT of the main benchmark (``results/medmnist2d/breastmnist/plain/seedN``, whose
checkpoints stay on the machine that trained them: run `medmnist_sweep.py` first), ranks every layer of the LLM
and correlates the score with the committed BreastMNIST layer sweep's validation AUC (Spearman). Also reports
how stable the ranking is across the ViT's seeds. Writes ``results/rank_layers/breastmnist.json``, ``.md`` and
the ``results:rank_layers`` block of RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

from _report import update_results
from scipy.stats import spearmanr

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.rank_layers import last_block_tokens, probe_images, rank_layers, spearman_against, sweep_val_auc
from timm_rllm.train.engine import environment, restore_run, split_dataset

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "results" / "medmnist2d" / "breastmnist" / "plain"
SWEEP = ROOT / "results" / "layers" / "breastmnist" / "summary.json"
OUT = ROOT / "results" / "rank_layers"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--probe", type=int, default=64)
    args = p.parse_args(argv)
    val_auc = sweep_val_auc(json.loads(SWEEP.read_text()), args.llm)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        run = RUNS / f"seed{seed}"
        if not (run / "best.pth").is_file():
            sys.exit(f"{run / 'best.pth'} is missing: run benchmarks/medmnist_sweep.py for the plain ViT first")
        model, cfg, _ = restore_run(run)
        t0 = time.perf_counter()
        tokens = last_block_tokens(model, probe_images(split_dataset(cfg, "val"), args.probe))
        scores = rank_layers(tokens, args.llm, progress=False)
        seconds = time.perf_counter() - t0
        rows.append({"seed": seed, "run": str(run.relative_to(ROOT)), "seconds": seconds,
                     "scores": {s.layer: s.score for s in scores}, "ranking": [s.layer for s in scores],
                     "vs_sweep": spearman_against(scores, val_auc)})
    stability = [spearmanr([a["scores"][i] for i in a["scores"]], [b["scores"][i] for i in a["scores"]])[0]
                 for a, b in itertools.combinations(rows, 2)]
    result = {"command": shlex.join(["python", *sys.argv]), "environment": environment(), "llm": args.llm,
              "probe_images": args.probe, "sweep": str(SWEEP.relative_to(ROOT)), "sweep_val_auc": val_auc,
              "runs": rows, "seed_to_seed_spearman": stability}
    table = render(result)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result, OUT / "breastmnist.json")
    atomic_write_text(OUT / "breastmnist.md", f"# rank-layers against the layer sweep\n\n`{result['command']}`\n\n"
                                              f"{table}\n")
    update_results("rank_layers", table)
    print(table)


def render(result: dict) -> str:
    env = result["environment"]
    lines = [f"Command: `{result['command']}`; {env['cpu_model']}, {env['torch_threads']} torch thread(s). "
             f"Sweep: `{result['sweep']}` ({len(result['sweep_val_auc'])} single layers, 3 seeds each, an earlier "
             "recipe). Score: linear CKA between the plain ViT's last-block tokens and each layer's output "
             f"({result['probe_images']} validation images).", "",
             "| plain ViT seed | top 5 layers | Spearman rho vs sweep val AUC | p | layers | seconds (tokens + all "
             "layers) |", "|---|---|---|---|---|---|"]
    for row in result["runs"]:
        c = row["vs_sweep"]
        lines.append(f"| {row['seed']} | {', '.join(map(str, row['ranking'][:5]))} | {c['rho']:+.3f} | "
                     f"{c['p_value']:.3f} | {c['n_layers']} | {row['seconds']:.1f} |")
    s = result["seed_to_seed_spearman"]
    if s:
        lines += ["", f"Seed-to-seed agreement of the score over all layers (Spearman, {len(s)} pairs of ViT seeds): "
                      f"mean {sum(s) / len(s):+.3f}, range {min(s):+.3f} .. {max(s):+.3f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
