"""Hub extraction against a local stand-in server: only the layer's bytes, errors, offline, locking."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from timm_rllm.llm import BlockCache, BlockSpec, get_block_weights, load_block
from timm_rllm.llm.hub import BlockNotCachedError, HubAccessError
from timm_rllm.testing import FakeHub

from conftest import HUB_REPO

REPO = HUB_REPO


def _layer_bytes(folder: Path, layer: int) -> tuple[int, int, set[str]]:
    """(the layer's tensor bytes, the header bytes of its shards, those shards), from the files."""
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    prefix = f"model.layers.{layer}."
    files = {f for k, f in weight_map.items() if k.startswith(prefix)}
    tensor_bytes = header_bytes = 0
    for f in files:
        raw = (folder / f).read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        header_bytes += 8 + n
        spans = [v["data_offsets"] for k, v in header.items() if k.startswith(prefix)]
        tensor_bytes += sum(end - start for start, end in spans)
    return tensor_bytes, header_bytes, files


def _shard_bytes_sent(hub: FakeHub) -> int:
    return sum(n for f, n in hub.sent.items() if f.endswith(".safetensors"))


def test_fetches_only_the_layer(hub, tiny_hf_folders, tmp_path):
    layer_bytes, header_bytes, files = _layer_bytes(tiny_hf_folders["sharded"], 1)
    assert len(files) >= 2, "the fixture's layer should straddle two shards"
    weights = get_block_weights(REPO, 1, cache_dir=tmp_path / "blocks", dtype=torch.float32)
    reference = tiny_hf_folders["model"].model.layers[1].state_dict()
    for name, ref in reference.items():
        assert torch.equal(weights.tensors[name], ref), name
    assert weights.revision == hub.repos[REPO]["commit"]
    # bytes sent from the shards: their headers plus the layer's own tensors, nothing else
    assert abs((_shard_bytes_sent(hub) - header_bytes) - layer_bytes) <= 0.01 * layer_bytes
    untouched = set(hub.sent) - files - {"config.json", "model.safetensors.index.json"}
    assert not untouched, f"other files were downloaded: {untouched}"


def test_bf16_default_and_cached_metadata(hub, tmp_path):
    weights = get_block_weights(REPO, -1, cache_dir=tmp_path)
    assert all(t.dtype == torch.bfloat16 for t in weights.tensors.values())
    (entry,) = BlockCache(tmp_path).entries()
    assert entry.source == REPO and entry.layer == 2
    assert entry.metadata["revision"] == hub.repos[REPO]["commit"]
    assert entry.metadata["extra.revision_requested"] == "main"
    before = len(hub.requests)
    again = get_block_weights(REPO, 2, cache_dir=tmp_path, revision=hub.repos[REPO]["commit"])
    assert len(hub.requests) == before and again.digest == weights.digest  # served from the block cache


def test_gated_missing_and_bad_revision(hub, tiny_hf_folders, tmp_path, monkeypatch):
    hub.add_repo("meta-llama/gated", tiny_hf_folders["single"], gated=True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    with pytest.raises(HubAccessError, match="gated repo and you are not logged in"):
        get_block_weights("meta-llama/gated", -1, cache_dir=tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    with pytest.raises(HubAccessError, match="gated repo.*accept the terms"):
        get_block_weights("meta-llama/gated", -1, cache_dir=tmp_path)
    with pytest.raises(HubAccessError, match="was not found"):
        get_block_weights("nobody/nothing", -1, cache_dir=tmp_path)
    with pytest.raises(HubAccessError, match="no revision 'v9'"):
        get_block_weights(REPO, -1, cache_dir=tmp_path, revision="v9")
    with pytest.raises(IndexError, match="out of range"):
        get_block_weights(REPO, 3, cache_dir=tmp_path)
    assert BlockCache(tmp_path).entries() == []


def test_dropped_connection_leaves_nothing(hub, tmp_path):
    hub.drop_after = 100
    with pytest.raises(HubAccessError, match="broke off|truncated"):
        get_block_weights(REPO, 0, cache_dir=tmp_path)
    assert BlockCache(tmp_path).entries() == []
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".safetensors"]
    hub.drop_after = None
    assert get_block_weights(REPO, 0, cache_dir=tmp_path).layer == 0  # the next call succeeds


def test_offline_uses_the_hf_cache(tiny_hf_folders, tmp_path, monkeypatch):
    # a snapshot as huggingface_hub lays it out, then HF_HUB_OFFLINE=1
    hub_cache = tmp_path / "hub"
    commit = "a" * 40
    snap = hub_cache / "models--tiny-org--tiny-llama" / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in tiny_hf_folders["sharded"].iterdir():
        (snap / f.name).symlink_to(f)
    (hub_cache / "models--tiny-org--tiny-llama" / "refs").mkdir()
    (hub_cache / "models--tiny-org--tiny-llama" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    weights = get_block_weights(REPO, -1, cache_dir=tmp_path / "blocks")
    assert weights.revision == commit and weights.source == REPO
    with pytest.raises(BlockNotCachedError, match="HF_HUB_OFFLINE.*timm-rllm extract"):
        get_block_weights("other-org/absent", -1, cache_dir=tmp_path / "blocks")


def test_two_processes_download_once(hub, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "TIMM_RLLM_CACHE": str(tmp_path / "blocks")}
    cmd = [sys.executable, "-m", "timm_rllm.cli", "extract", REPO, "--layer", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(BlockCache(tmp_path / "blocks").entries()) == 1
    # one process downloaded the layer, the other waited on the lock and reused the entry
    layer_bytes, header_bytes, _ = _layer_bytes(Path(hub.repos[REPO]["folder"]), 1)
    assert abs((_shard_bytes_sent(hub) - header_bytes) - layer_bytes) <= 0.01 * layer_bytes


def test_keep_the_source_precision(hub, tmp_path, monkeypatch):
    from timm_rllm.cli import main as cli
    from timm_rllm.llm.presets import LLM_PRESETS, LlmPreset

    assert cli(["extract", REPO, "--layer", "1", "--dtype", "keep", "--cache-dir", str(tmp_path)]) == 0
    (entry,) = BlockCache(tmp_path).entries()
    weights = BlockCache(tmp_path).load(entry)
    assert all(t.dtype == torch.float32 for t in weights.tensors.values())  # the tiny checkpoint is fp32
    monkeypatch.setitem(LLM_PRESETS, "tiny", LlmPreset("tiny", REPO, weights.config, 3, "", "the test's LLM"))
    _, info = load_block(BlockSpec(llm="tiny", layer=1, cache_dir=str(tmp_path)))
    assert info["cached_dtype"] == "float32"  # the model says what precision its cached block has
