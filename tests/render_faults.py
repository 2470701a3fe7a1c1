"""The README's "What happens when..." table, rendered from the `FAULTS` lists that drive the fault tests.

    python tests/render_faults.py     # rewrite the README block (a test checks that it is current)
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"
BEGIN, END = "<!-- faults -->", "<!-- /faults -->"


def render_table() -> str:
    sys.path.insert(0, str(TESTS))
    rows = ["| what happens when ... | behaviour | test |", "|---|---|---|"]
    for path in sorted(TESTS.glob("test_faults_*.py")):
        module = importlib.import_module(path.stem)
        for fault_id, when, behaviour in module.FAULTS:
            rows.append(f"| {when} | {behaviour} | `{path.name}::{fault_id}` |")
    return "\n".join(rows)


def main() -> None:
    from timm_rllm._io import atomic_write_text

    text = README.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{README} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    atomic_write_text(README, f"{head}{BEGIN}\n{render_table()}\n{END}{rest.split(END, 1)[1]}")
    print(f"updated the fault table in {README}")


if __name__ == "__main__":
    main()
