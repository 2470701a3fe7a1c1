"""Shared by the benchmark scripts: put a rendered results table into the README."""

from __future__ import annotations

from pathlib import Path

from timm_rllm._io import atomic_write_text

README = Path(__file__).resolve().parent.parent / "README.md"


def update_readme(name: str, text: str) -> None:
    """Replace the README's block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    content = README.read_text() if README.is_file() else ""
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        atomic_write_text(README, f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
