"""Shared by the benchmark scripts: put a rendered results table into benchmarks/RESULTS.md; compare two runs."""

from __future__ import annotations

from pathlib import Path

from timm_rllm._io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def update_results(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace the block between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` of RESULTS.md (or of
    ``path``, e.g. the README)."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    content = path.read_text() if path.is_file() else ""
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        atomic_write_text(path, f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")


WALL_CLOCK = ("epoch_time_s", "train_images_per_s")


def differs(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Which of a results file's numbers two runs do not share to the last bit: ``history`` (every epoch's
    logged values but wall-clock ones and ``ignore``), ``selected_epoch``, ``val``, ``test``. Empty: a repeat."""
    skip = WALL_CLOCK + ignore

    def numbers(r: dict) -> dict:
        return {"history": [{k: v for k, v in h.items() if k not in skip} for h in r["history"]],
                **{k: r.get(k) for k in ("selected_epoch", "val", "test")}}

    na, nb = numbers(a), numbers(b)
    return [k for k in na if na[k] != nb[k]]
