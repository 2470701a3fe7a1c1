"""Shared by the benchmark scripts: put a rendered results table into benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

from timm_rllm._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def update_results(name: str, text: str) -> None:
    """Replace RESULTS.md's block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    content = RESULTS.read_text() if RESULTS.is_file() else ""
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        atomic_write_text(RESULTS, f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
