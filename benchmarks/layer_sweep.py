"""Which LLM layer boosts most: the layer sweeps behind the "Which layer" section of benchmarks/RESULTS.md.

    python benchmarks/layer_sweep.py                      # every sweep below (finished runs are skipped)
    python benchmarks/layer_sweep.py --only breastmnist
    python benchmarks/layer_sweep.py --render-only

Each sweep is exactly `timm-rllm sweep ARGS --out benchmarks/results/layers/DATASET`: one run per
(LLM, layer) plus the plain ViT, the `mlp` control and a random block, over seeds, with one recipe
per dataset. Every run writes its own results.json (command, versions, hardware, seed); the tables,
findings and charts are rendered from those files only, and the RESULTS.md block from the tables.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from _report import update_results

from timm_rllm.cli import main as cli
from timm_rllm.train.report import render_layers

ROOT = Path(__file__).resolve().parent

OUT = ROOT / "results" / "layers"
RECIPE = ["--randaug", "rand-m9-mstd0.5", "--reprob", "0.25", "--model-kwargs", '{"drop_path_rate": 0.1}',
          "--llm", "smollm2", "--seeds", "0,1,2"]
# the epoch budgets are what 2 CPU cores allow for ~30 runs per dataset; PneumoniaMNIST is 9x larger
SWEEPS = {
    "breastmnist": ["--dataset", "breastmnist", "--layers=-1,-2,-4,-8,middle,first,-2..-1",
                    "--epochs", "20", "--warmup-epochs", "3", *RECIPE],
    "pneumoniamnist": ["--dataset", "pneumoniamnist", "--data-dir", "../shared/data/medmnist",
                       "--layers=-1,-2,-4,-8,middle,first", "--epochs", "3", "--warmup-epochs", "1", *RECIPE],
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, choices=list(SWEEPS), help="run just this sweep")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    names = [args.only] if args.only else list(SWEEPS)
    if not args.render_only:
        for name in names:
            cli(["sweep", *SWEEPS[name], "--out", str(OUT / name)])
    blocks = []
    for name in SWEEPS:
        rel = f"benchmarks/results/layers/{name}"
        if (OUT / name).is_dir():
            blocks += [f"#### {name}", "", f"![{name} layer sweep](results/layers/{name}/chart.png)", "",
                       f"Command: `{shlex.join(['timm-rllm', 'sweep', *SWEEPS[name], '--out', rel])}`",
                       "", render_layers(OUT / name)]
    update_results("layers", "\n".join(blocks))
    print("\n".join(blocks))


if __name__ == "__main__":
    main()
