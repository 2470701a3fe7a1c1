"""Gradient coherence along training, plain ViT vs R-LLM, on the main benchmark's recipe and seeds.

    OMP_NUM_THREADS=1 python benchmarks/coherence.py [--seeds 0] [--variants plain,rllm] [--render-only]

Runs `medmnist_sweep.py` with the BreastMNIST recipe of `benchmarks/results/medmnist2d/` plus
``--grad-coherence 1`` into ``benchmarks/results/coherence/``. Measuring coherence changes no trained number,
so each run must repeat its `medmnist2d` twin bit for bit (same machine, same thread count): the script
checks that too, which makes it the rerun check of the main benchmark. Writes ``coherence.json``,
``coherence.md``, ``coherence.png`` and the ``results:coherence`` block of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import medmnist_sweep
from _report import differs, update_results

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.train.engine import environment

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "coherence"
TWINS = ROOT / "results" / "medmnist2d"
# the main benchmark's recipe, unchanged
RECIPE = ["--config", str(ROOT / "recipes" / "medmnist2d_breast.yaml")]
def compare(out: Path, twins: Path) -> list[dict]:
    """One row per coherence run: its coherence curve, and whether it repeats its twin bit for bit."""
    rows = []
    for path in sorted(out.glob("breastmnist/*/seed*/results.json")):
        r = json.loads(path.read_text())
        twin_path = twins / path.relative_to(out)
        twin = json.loads(twin_path.read_text()) if twin_path.is_file() else None
        # the twin did not measure coherence: every other number must repeat
        same = None if twin is None else not differs(r, twin, ignore=("grad_coherence",))
        rows.append({"variant": path.parts[-3], "seed": r["config"]["seed"], "model": r["config"]["model"],
                     "coherence": [h.get("grad_coherence") for h in r["history"]],
                     "val_auc": [h["val_auc"] for h in r["history"]], "test": r["test"],
                     "selected_epoch": r["selected_epoch"], "bit_identical_to_medmnist2d": same,
                     "torch_threads": r["environment"].get("torch_threads"),
                     "cpu": r["environment"].get("cpu_model")})
    return rows


def render(rows: list[dict]) -> str:
    lines = ["| variant | seed | coherence, epochs 1-5 (mean) | epochs 26-30 (mean) | test AUC | "
             "repeats the medmnist2d run bit for bit |", "|---|---|---|---|---|---|"]
    for row in rows:
        c = [v for v in row["coherence"] if v is not None]
        early, late = sum(c[:5]) / len(c[:5]), sum(c[-5:]) / len(c[-5:])
        same = {True: "yes", False: "**no**", None: "no twin"}[row["bit_identical_to_medmnist2d"]]
        lines.append(f"| {row['variant']} ({row['model']}) | {row['seed']} | {early:.4f} | {late:.4f} | "
                     f"{100 * row['test']['auc']:.2f} | {same} |")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row in rows:
        label = f"{row['variant']} seed {row['seed']}"
        epochs = range(1, len(row["coherence"]) + 1)
        ax.plot(epochs, row["coherence"], label=label)
        ax2.plot(epochs, [100 * v for v in row["val_auc"]], label=label)
    ax.set(xlabel="epoch", ylabel="gradient coherence (mean pairwise cosine)", title="last ViT block, 32 val images")
    ax2.set(xlabel="epoch", ylabel="validation AUC (%)", title="BreastMNIST, the fitted recipe")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0")
    p.add_argument("--variants", default="plain,rllm")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    if not args.render_only:
        if medmnist_sweep.main([*RECIPE, "--variants", args.variants, "--seeds", args.seeds, "--grad-coherence", "1",
                                "--out", str(OUT)]):
            sys.exit("the sweep failed (its error is above)")
    rows = compare(OUT, TWINS)
    if not rows:
        sys.exit(f"no runs in {OUT}: run without --render-only first")
    table = render(rows)
    chart(rows, OUT / "coherence.png")
    command, env = shlex.join(["python", *sys.argv]), environment()
    if args.render_only and (OUT / "coherence.json").is_file():  # keep what the measuring run recorded
        recorded = json.loads((OUT / "coherence.json").read_text())
        command, env = recorded["command"], recorded["environment"]
    atomic_write_json({"command": command, "environment": env, "runs": rows}, OUT / "coherence.json")
    atomic_write_text(OUT / "coherence.md", f"# Gradient coherence\n\n`{command}`\n\n{table}\n")
    update_results("coherence", table)
    print(table)


if __name__ == "__main__":
    main()
