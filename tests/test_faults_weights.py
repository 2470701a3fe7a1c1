"""Weights-side faults (issue #16): nothing untrusted runs, nothing corrupt is used, nothing hangs, and
every error is one clear line. `FAULTS` is the table the README shows; each row is a test case below
(`test_every_fault_has_a_test` keeps the two from drifting apart)."""

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from hub_server import Fault
from huggingface_hub import constants

from timm_rllm.llm import BlockCache, get_block_weights
from timm_rllm.llm.hub import HubAccessError

_STALL = ("HubAccessError after the read timeout (HF_HUB_DOWNLOAD_TIMEOUT); nothing cached, no partial file, "
          "lock released")
_BROKE = "HubAccessError (the download broke off); nothing cached, no partial file, lock released"
_FORGED = "HubAccessError before any tensor byte is requested or allocated; nothing cached"

FAULTS = [  # (id, what happens when ..., the behaviour)
    # the Hub (tests/hub_server.py stands in for it)
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
]

SLOW = {"hub-stall-config"}
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


def test_every_fault_has_a_test():
    """Every FAULTS row is a parameter of a test above (the README table cannot drift from the tests)."""
    assert _TESTED == {row[0] for row in FAULTS}
