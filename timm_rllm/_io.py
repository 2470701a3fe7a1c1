"""Files and folders that are either complete or absent: atomic writes, atomic folder swaps.

A write goes to a temporary name in the same folder, is flushed and fsynced, then renamed onto
its final name (a rename within one file system is atomic), so a reader never sees half a file
and an interrupted write leaves the old file in place. Errors name the file and say what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

PARTIAL = ".partial"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path: Path, e: OSError) -> OSError:
    """One line that names the file and what to do about the usual causes."""
    what = {errno.ENOSPC: "the disk is full: free space there",
            errno.EDQUOT: "the disk quota is exceeded: free space there",
            errno.EROFS: "the file system is read-only: write somewhere else",
            errno.EACCES: "permission denied: write somewhere you may write",
            errno.ENOTDIR: "a parent of it is a file, not a folder: choose another path"}.get(
        e.errno, e.strerror or str(e))
    return OSError(e.errno, f"could not write {path} ({what}); nothing was changed there")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync the result, then rename it onto ``path``; on any failure the
    old file (if any) stays and the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the permissions open() would
    except OSError as e:
        raise write_error(path, e) from e
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, default=str)

    atomic_write(path, write)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then swap it in whole.

    Yields the temporary folder to fill. On success an existing ``path`` is replaced as a whole (moved
    aside, the new one renamed in, the old one deleted); on any failure the temporary folder is removed and
    ``path`` is left exactly as it was. One build at a time per folder (a lock beside it); a folder left
    aside by a crash between the two renames is put back first."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = held_lock(path.parent / f".{path.name}.lock", f"writing {path}", timeout=600)
        lock.__enter__()
    except OSError as e:
        raise write_error(path, e) from e
    try:
        for aside in sorted(path.parent.glob(f".{path.name}.old.*{PARTIAL}")):  # an earlier, interrupted swap
            if not path.exists() and (aside / "folder").is_dir():
                os.replace(aside / "folder", path)
            shutil.rmtree(aside, ignore_errors=True)
        for leftover in path.parent.glob(f".{path.name}.build.*{PARTIAL}"):  # builds of interrupted runs
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.build.", suffix=PARTIAL))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb+") as handle:
                        os.fsync(handle.fileno())
            old = None
            if path.exists():
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old.", suffix=PARTIAL))
                os.replace(path, old / "folder")
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None:  # put the old folder back
                    os.replace(old / "folder", path)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        lock.__exit__(None, None, None)


class LockBusyError(RuntimeError):
    """Another process holds a lock and did not release it in time."""


@contextlib.contextmanager
def held_lock(path: str | os.PathLike, what: str, timeout: float = 0.0,
              on_wait: Callable[[str], None] | None = None, hint: str = "",
              error: type[Exception] = LockBusyError) -> Iterator[None]:
    """Hold the file lock ``path`` while doing ``what`` (e.g. "training into runs/x"); the holder writes its pid
    and ``what`` beside the lock (``path.pid``), so a process that finds it taken can say whom it waits for.

    With ``timeout`` 0 a taken lock fails at once; else ``on_wait`` gets one line naming the holder, and after
    ``timeout`` seconds ``error`` is raised (``hint`` appended: what to do)."""
    from filelock import FileLock, Timeout

    path = Path(path)
    pid_file = path.with_name(path.name + ".pid")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid, _, held_for = (pid_file.read_text().strip() if pid_file.is_file() else "?").partition(" ")
        held_for = held_for or what
        if not timeout:
            raise error(f"another process (pid {pid}) is {held_for} (lock {path}); wait for it to finish, or "
                        f"stop it{hint}") from None
        if on_wait is not None:
            on_wait(f"waiting for another process {held_for} (pid {pid}) ...")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise error(f"gave up after {timeout:g} s waiting for another process (pid {pid}) {held_for}: "
                        f"stop it if it is stuck, then run again{hint}") from None
    try:
        pid_file.write_text(f"{os.getpid()} {what}\n")
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


# safetensors dtype names this project reads and writes (the Hub reader and the streaming writer).
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file tensor by tensor from the tensors' own memory (flushed and fsynced).

    safetensors' ``save_file`` first copies every tensor to bytes, doubling peak memory, which for a
    LLaMA-7B layer is 400 MB more; the format is simple enough to stream (8-byte header length,
    JSON header padded to 8 bytes, raw little-endian data)."""
    header: dict[str, dict] = {}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
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


def file_hash(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_marker(path: str | os.PathLike, memo_dir: str | os.PathLike) -> Path:
    """Where `verify_once` remembers that ``path`` was checked (one small file per checked file)."""
    return Path(memo_dir) / hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]


def verify_once(path: str | os.PathLike, expected: str, algorithm: str, memo_dir: str | os.PathLike,
                known_good: bool = False) -> str | None:
    """None when ``path`` hashes to ``expected``, else the hash it has. A match is remembered in ``memo_dir``
    with the file's size and mtime, so a file is read once (a changed file is hashed again); a folder that
    cannot be written only means checking again next time. ``known_good``: just checked by its writer."""
    stat = Path(path).stat()
    stamp = f"{algorithm} {expected} {stat.st_size} {stat.st_mtime_ns} {Path(path).resolve()}"
    marker = hash_marker(path, memo_dir)
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == stamp:
            return None
    if not known_good and (actual := file_hash(path, algorithm)) != expected:
        return actual
    with contextlib.suppress(OSError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, stamp + "\n")
    return None
