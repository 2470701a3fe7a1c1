"""Do committed runs repeat bit for bit? Rerun each run folder's recorded config and compare every number.

    OMP_NUM_THREADS=1 python benchmarks/rerun_check.py                 # the default pair: one 2D and one 3D run
    OMP_NUM_THREADS=1 python benchmarks/rerun_check.py RUN [RUN ...]   # any run folders with a results.json
    python benchmarks/rerun_check.py --render-only

Each run is trained again from its results.json's config, with the torch thread count it recorded, into
``results/rerun/work/`` (git-ignored; resumable), and compared with the committed run: every epoch's logged
loss, learning rate and validation metrics, the selected epoch and the validation and test metrics must be
equal to the last bit (wall-clock fields are left out). Writes ``results/rerun/rerun.json`` and ``rerun.md``
and the ``results:rerun`` block of RESULTS.md. A repeat holds on one machine and software stack at one thread
count; another thread count can change the last bits of float sums.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from _report import differs, update_results

from timm_rllm._io import atomic_write_json, atomic_write_text
from timm_rllm.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "rerun"
DEFAULT_RUNS = [ROOT / "results" / "medmnist2d" / "breastmnist" / "plain" / "seed0",
                ROOT / "results" / "recipe_search" / "adrenalmnist3d" / "ref" / "seed0"]
def rerun(run: Path, work: Path) -> dict:
    """Train ``run``'s config again into ``work`` at its recorded thread count; the comparison as a dict."""
    original = json.loads((run / "results.json").read_text())
    threads = original["environment"]["torch_threads"]
    torch.set_num_threads(threads)
    again = fit(TrainConfig(**original["config"]), work, resume=True, progress=False)
    differ = differs(original, again)
    return {"run": str(run.relative_to(ROOT.parent)), "model": original["config"]["model"],
            "dataset": original["config"]["dataset"], "epochs": original["config"]["epochs"],
            "torch_threads": threads, "cpu_model": original["environment"].get("cpu_model"),
            "rerun_cpu_model": again["environment"].get("cpu_model"), "rerun_environment": again["environment"],
            "command": shlex.join(["python", "benchmarks/rerun_check.py", *sys.argv[1:]]), "bit_identical": not differ,
            "differs_in": differ, "test": again["test"], "selected_epoch": again["selected_epoch"]}


def render(rows: list[dict]) -> str:
    lines = ["| run | model | epochs | torch threads | CPU | selected epoch | repeats bit for bit |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        same = "yes" if row["bit_identical"] else f"**no** (differs in {', '.join(row['differs_in'])})"
        lines.append(f"| `{row['run']}` | {row['model']} | {row['epochs']} | {row['torch_threads']} | "
                     f"{row['rerun_cpu_model']} | {row['selected_epoch']} | {same} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, default=DEFAULT_RUNS, help="run folders with a results.json")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    record_path = OUT / "rerun.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"rows": {}}
    if not args.render_only:
        for run in args.runs:
            run = run.resolve()
            row = rerun(run, OUT / "work" / run.relative_to(ROOT / "results"))
            record["rows"][row["run"]] = row
            print(f"{row['run']}: {'bit-identical' if row['bit_identical'] else 'DIFFERS ' + str(row['differs_in'])}",
                  flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record, record_path)
    table = render(list(record["rows"].values()))
    atomic_write_text(OUT / "rerun.md", table + "\n")
    commands = sorted({f"`{row['command']}`" for row in record["rows"].values()})
    update_results("rerun", f"Commands: {', '.join(commands)}\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
