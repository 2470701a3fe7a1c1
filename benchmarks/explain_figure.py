"""The Grad-CAM figure of benchmarks/RESULTS.md: a plain and a boosted run of the sweep, side by side on the
bundled BreastMNIST test images.

    python benchmarks/explain_figure.py --boosted RUN --plain RUN

Writes ``results/explain/breastmnist_gradcam.png`` and a JSON beside it with the command, the
runs (their seeds and test metrics), versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from timm_rllm._io import atomic_write_json
from timm_rllm.cli import main as cli
from timm_rllm.train.engine import environment

ROOT = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boosted", required=True, help="a finished run folder of an R-LLM model")
    p.add_argument("--plain", required=True, help="a finished run folder of the plain ViT, same recipe")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "results" / "explain" / "breastmnist_gradcam.png"))
    args = p.parse_args()
    rc = cli(["explain", "--checkpoint", args.boosted, "--compare", args.plain, "--n", str(args.n), "--out", args.out])
    if rc:
        sys.exit(rc)
    runs = {}
    for run in (args.boosted, args.plain):
        r = json.loads((Path(run) / "results.json").read_text())
        runs[run] = {"model": r["config"]["model"], "seed": r["config"]["seed"], "test": r["test"],
                     "selected_epoch": r["selected_epoch"]}
    record = {"command": shlex.join([sys.executable, *sys.argv]), "environment": environment(), "runs": runs,
              "figure": str(Path(args.out).name)}
    atomic_write_json(record, Path(args.out).with_suffix(".json"))


if __name__ == "__main__":
    main()
