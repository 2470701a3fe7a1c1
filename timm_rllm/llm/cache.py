"""The block cache: one safetensors file per (source, layer), with provenance in its metadata.

Files are written to a temporary name and renamed, so a file with the final name is always
complete; its metadata carries a digest of the tensors, checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..layers.llm_block import LlmBlockConfig
from .sources import BlockWeights

CACHE_ENV = "TIMM_RLLM_CACHE"
FORMAT_VERSION = "1"
SUFFIX = ".safetensors"


class CorruptCacheError(RuntimeError):
    """A cache entry cannot be read or its tensors no longer match its digest."""


def default_cache_dir() -> Path:
    """``$TIMM_RLLM_CACHE``, else ``$XDG_CACHE_HOME/timm_rllm/blocks`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "timm_rllm" / "blocks"


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file tensor by tensor from the tensors' own memory.

    safetensors' ``save_file`` first copies every tensor to bytes, doubling peak memory, which for a
    LLaMA-7B layer is 400 MB more; the format is simple enough to stream (8-byte header length,
    JSON header padded to 8 bytes, raw little-endian data)."""
    header: dict[str, dict] = {}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = metadata  # type: ignore[assignment]
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(tensors):
            f.write(memoryview(tensors[name].detach().contiguous().reshape(-1).view(torch.uint8).numpy()))
        f.flush()
        os.fsync(f.fileno())


def entry_name(source: str, layer: int) -> str:
    """A readable, unique file name for a source and a (non-negative) layer index."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source.strip("/")).strip("-")[-60:]
    short = hashlib.sha256(source.encode()).hexdigest()[:8]
    return f"{slug}-{short}-layer{layer:03d}{SUFFIX}"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    metadata: dict[str, str]

    @property
    def source(self) -> str:
        return self.metadata["source"]

    @property
    def layer(self) -> int:
        return int(self.metadata["layer"])

    @property
    def num_layers(self) -> int:
        return int(self.metadata["num_layers"])

    @property
    def config(self) -> LlmBlockConfig:
        return LlmBlockConfig.from_dict(json.loads(self.metadata["config"]))


class BlockCache:
    """A folder of cached decoder layers."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def entries(self) -> list[CacheEntry]:
        """Every complete entry (temporary files of interrupted writes are not listed)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob(f"*{SUFFIX}")):
            try:
                with safe_open(path, "pt") as f:
                    metadata = f.metadata() or {}
            except (SafetensorError, OSError):
                metadata = {"source": "<unreadable>", "layer": "-1", "num_layers": "0"}
            found.append(CacheEntry(path, metadata))
        return found

    def find(self, source: str, layer: int, revision: str | None = None) -> CacheEntry | None:
        """The entry for ``source`` and ``layer`` (negative counts from the end), if cached; with a
        ``revision``, only an entry of that commit (or fetched under that branch or tag name)."""
        for entry in self.entries():
            if entry.source != source or not entry.num_layers:
                continue
            names = (entry.metadata.get("revision"), entry.metadata.get("extra.revision_requested"))
            if revision and revision not in names:
                continue
            if entry.layer == layer or entry.layer == layer + entry.num_layers:
                return entry
        return None

    def lock(self, source: str, layer: int, revision: str | None = None) -> FileLock:
        """A lock per requested block, so two processes asking at once extract it once."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"{source}@{revision}#{layer}".encode()).hexdigest()[:16]
        return FileLock(locks / f"{key}.lock")

    def save(self, weights: BlockWeights) -> CacheEntry:
        """Write ``weights`` atomically; returns the new entry."""
        tensors = {name: t.contiguous() for name, t in weights.tensors.items()}
        metadata = {
            "format": "timm_rllm.block",
            "format_version": FORMAT_VERSION,
            "source": weights.source,
            "revision": weights.revision,
            "file_hash": weights.file_hash,
            "layer": str(weights.layer),
            "num_layers": str(weights.num_layers),
            "family": weights.config.family,
            "config": weights.config.to_json(),
            "license": weights.license,
            "digest": tensor_digest(tensors),
            **{f"extra.{k}": v for k, v in weights.extra.items()},
        }
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / entry_name(weights.source, weights.layer)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".partial")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        except OSError as e:  # disk full, read-only folder ...
            Path(tmp).unlink(missing_ok=True)
            raise OSError(e.errno, f"could not write the block to {self.root} ({e.strerror or e}); nothing was "
                          f"cached. Free space there or point ${CACHE_ENV} at another folder.") from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return CacheEntry(path, metadata)

    def load(self, entry: CacheEntry) -> BlockWeights:
        """Read an entry and check its digest."""
        try:
            tensors = load_file(entry.path)
        except (SafetensorError, OSError) as e:
            raise CorruptCacheError(self._corrupt_message(entry.path, f"unreadable ({e})")) from e
        if tensor_digest(tensors) != entry.metadata.get("digest"):
            raise CorruptCacheError(self._corrupt_message(entry.path, "its tensors do not match its digest"))
        meta = entry.metadata
        return BlockWeights(
            tensors=tensors,
            config=entry.config,
            source=meta["source"],
            layer=entry.layer,
            num_layers=entry.num_layers,
            revision=meta.get("revision", ""),
            file_hash=meta.get("file_hash", ""),
            license=meta.get("license", ""),
            digest=meta["digest"],
            extra={k[len("extra."):]: v for k, v in meta.items() if k.startswith("extra.")},
        )

    def verify(self) -> dict[Path, str]:
        """Check every entry; maps each path to 'ok' or what is wrong with it."""
        report = {}
        for entry in self.entries():
            try:
                self.load(entry)
                report[entry.path] = "ok"
            except CorruptCacheError as e:
                report[entry.path] = str(e)
        return report

    def remove(self, entry: CacheEntry) -> None:
        entry.path.unlink(missing_ok=True)

    @staticmethod
    def _corrupt_message(path: Path, what: str) -> str:
        return (
            f"cached block {path} is corrupt: {what}. Delete it (`timm-rllm cache remove {path.name}`) "
            "and it will be extracted again from its source."
        )
