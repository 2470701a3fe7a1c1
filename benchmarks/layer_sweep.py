"""Which LLM layer boosts most: the layer sweeps behind the "Which layer" section of benchmarks/RESULTS.md.

    python benchmarks/layer_sweep.py                      # every sweep below (finished runs are skipped)
    python benchmarks/layer_sweep.py --only breastmnist
    python benchmarks/layer_sweep.py --render-only

Each sweep is exactly `timm-rllm sweep --config benchmarks/recipes/RECIPE.yaml [FLAGS]`: one run per (LLM,
layer) plus the plain ViT, the `mlp` control and a random block, over seeds, with one recipe per dataset.
Every run writes its own results.json (command, versions, hardware, seed); the tables, findings and charts
are rendered from those files only (`timm_rllm.train.report`), and the RESULTS.md block from the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import update_results

from timm_rllm.cli import main as cli
from timm_rllm.train.report import render_layers

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "layers"
# sweep -> (its recipe file, whether its data is outside the package (PneumoniaMNIST is not bundled), its title)
SWEEPS = {"breastmnist_main": ("layers_breast_main.yaml", False, "BreastMNIST, the main benchmark's recipe"),
          "breastmnist": ("layers_breast.yaml", False, "BreastMNIST, the previous (superseded) recipe"),
          "pneumoniamnist": ("layers_pneumonia.yaml", True, "PneumoniaMNIST, the previous (superseded) recipe")}
DATA_DIR = "../shared/data/medmnist"  # where this project's sessions keep the MedMNIST files


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, choices=list(SWEEPS), help="run just this sweep")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    for name in [args.only] if args.only else list(SWEEPS):
        recipe, external, _ = SWEEPS[name]
        if not args.render_only:
            cli(["sweep", "--config", str(ROOT / "recipes" / recipe), *(["--data-dir", DATA_DIR] if external else []),
                 "--out", str(OUT / name)])
    blocks = []
    for name, (recipe, external, title) in SWEEPS.items():
        if (OUT / name).is_dir():
            command = f"timm-rllm sweep --config benchmarks/recipes/{recipe}" + (" --data-dir $MEDMNIST_DIR" if external
                                                                                  else "")
            blocks += [f"#### {title} (`{name}`)", "", f"![{name} layer sweep](results/layers/{name}/chart.png)", "",
                       f"Command: `{command}`", "", render_layers(OUT / name)]
    update_results("layers", "\n".join(blocks))
    print("\n".join(blocks))


if __name__ == "__main__":
    main()
