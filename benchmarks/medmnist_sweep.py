"""MedMNIST variant sweeps: `timm-rllm sweep --variants ...` with this benchmark's defaults, plus its RESULTS.md block.

    OMP_NUM_THREADS=1 python benchmarks/medmnist_sweep.py --config benchmarks/recipes/medmnist2d_breast.yaml
    OMP_NUM_THREADS=1 python benchmarks/medmnist_sweep.py --config benchmarks/recipes/medmnist2d_breast.yaml \\
        --variants aux --seeds 0,1                      # flags override the file
    python benchmarks/medmnist_sweep.py --out benchmarks/results/medmnist2d --render-only

The options are `timm-rllm sweep`'s (``timm-rllm sweep --help``; the runner is `timm_rllm.train.sweep`, the
tables, notes and charts `timm_rllm.train.report`). Defaults beneath a recipe file are this benchmark's
(:data:`DEFAULTS`), and commands recorded by runs before the one runner existed keep working: ``--datasets``,
``--size`` (the backbone's size) and ``--drop-path`` are read as ``--dataset``, ``--backbone-size`` and the
model's ``drop_path_rate``; a 3D backbone reads its MedMNIST file at ``--img-size``.

Each run writes ``OUT/DATASET/VARIANT/seedN/results.json`` (command, versions, hardware, seed, the
validation-selected metrics, the test split scored once); finished runs are skipped and an interrupted one
resumes. Variants share seeds, so each is compared with the plain model seed by seed (mean paired difference,
95% CI); a run whose selected model gives every test image one class is flagged collapsed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _report import update_results

from timm_rllm.cli import main as cli
from timm_rllm.cli import parse_args

ROOT = Path(__file__).resolve().parent
ANCHORS = ROOT / "medmnist_anchors.json"
# this benchmark's defaults (those of the first MedMNIST sweeps, which recorded commands rely on)
DEFAULTS = {"variants": "plain,mlp,rllm,resnet", "randaug": "rand-m9-mstd0.5", "reprob": 0.25,
            "model_kwargs": {"drop_path_rate": 0.1}, "amp": "auto", "anchors": str(ANCHORS),
            "out": str(ROOT / "results" / "medmnist")}


def translate(argv: list[str]) -> list[str]:
    """This script's earlier flags as `timm-rllm sweep` flags (``--flag=value`` spellings were never recorded)."""
    out, it = [], iter(argv)
    drop_path, img_size, backbone = None, None, "vit"
    for arg in it:
        if arg == "--drop-path":
            drop_path = float(next(it))
            continue
        out.append({"--datasets": "--dataset", "--size": "--backbone-size"}.get(arg, arg))
        if arg in ("--img-size", "--backbone") and (value := next(it, None)) is not None:
            out.append(value)
            img_size, backbone = (value, backbone) if arg == "--img-size" else (img_size, value)
    if drop_path is not None:
        out += ["--model-kwargs", json.dumps({"drop_path_rate": drop_path})]
    if backbone != "vit" and img_size is not None:
        out += ["--size", img_size]  # a volume is read from the MedMNIST file of its own size
    return out


def main(argv: list[str] | None = None) -> int:
    argv = ["sweep", *translate(list(sys.argv[1:] if argv is None else argv))]
    rc = cli(argv, DEFAULTS)
    if rc == 0:
        out = Path(parse_args(argv, DEFAULTS).out)
        table = (out / "table.md").read_text().rstrip("\n").split("\n")
        update_results(out.name, "\n".join(table[2:]))  # without its "# MedMNIST sweep" title
    return rc


if __name__ == "__main__":
    sys.exit(main())
