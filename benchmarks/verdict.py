"""The verdict per dataset, in one table: does the frozen LLM block boost, and is it the LLM's weights?

    python benchmarks/verdict.py                     # the main sweeps (SWEEPS)
    python benchmarks/verdict.py --sweeps benchmarks/results/medmnist2d_retina,...

Read only from each variant sweep's ``summary.json`` (written by ``medmnist_sweep.py`` from its results files,
which record command, versions, hardware, threads and seeds): R-LLM minus plain on ACC and AUC, R-LLM minus the
``random`` and ``mlp`` controls, Gemma 3's layer and the same-harness ResNet-18 against plain, each paired by seed
with its 95% CI (bold where the interval excludes 0; uncorrected for the many comparisons), beside the published
MedMNIST v2 ResNet-18. Writes ``results/verdict/verdict.md`` and ``verdict.json``, the RESULTS.md block and the
README's copy of the table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from _report import update_results

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.train.report import render_verdict

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
README = ROOT.parent / "README.md"
# each dataset's current sweep (its own recipe, 5 seeds); BreastMNIST's first, underfitting recipe after its own
SWEEPS = ["medmnist2d_breast_180ep", "medmnist2d", "medmnist2d_retina", "medmnist2d_pneumonia",
          "medmnist3d_adrenal_halflr"]


def _shown(path: Path) -> str:
    """A path as the repository names it (absolute only when outside it)."""
    path = path.resolve()
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweeps", default=",".join(str(RESULTS / s) for s in SWEEPS),
                   help="comma-separated variant sweep folders, each with a summary.json")
    p.add_argument("--out", default=str(RESULTS / "verdict"))
    args = p.parse_args(argv)
    sweeps = [Path(s) for s in args.sweeps.split(",") if s]
    missing = [str(s / "summary.json") for s in sweeps if not (s / "summary.json").is_file()]
    if missing:
        print(f"error: no {', '.join(missing)}: render the sweep first (medmnist_sweep.py --render-only)",
              file=sys.stderr)
        return 2
    anchors = json.loads((ROOT / "medmnist_anchors.json").read_text())
    table, data = render_verdict(sweeps, anchors)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/verdict.py", *given])
    note = ("Each row is one variant sweep (`benchmarks/results/SWEEP/summary.json`): test metrics of the epoch "
            "chosen on validation, in percent. A - B: mean over seeds of the paired difference, 95% CI from the "
            "paired t distribution; **bold**: the interval excludes 0 (uncorrected for the many comparisons); "
            "otherwise no evidence of a difference. Published: MedMNIST v2's ResNet-18 (28), or + 3D for volumes. "
            "collapsed runs: selected models that predict one class for the whole test split, over every variant.")
    out = Path(args.out)
    atomic_write_text(out / "verdict.md", f"# The verdict per dataset\n\n`{command}`\n\n{note}\n\n{table}")
    atomic_write_json({"command": command, "sources": [_shown(s / "summary.json") for s in sweeps], **data},
                      out / "verdict.json")
    update_results("verdict", f"{note}\n\n{table}".rstrip("\n"))
    update_results("verdict", table.rstrip("\n"), README)  # the README's copy of the table
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
