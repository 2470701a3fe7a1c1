"""Local Hugging Face folders, the block cache and its failure modes."""

import json

import pytest
import torch
from safetensors import safe_open

from timm_rllm.llm import (
    BlockCache,
    BlockNotCachedError,
    BlockSourceError,
    CorruptCacheError,
    UnsupportedLlmError,
    get_block_weights,
    read_layer,
)


@pytest.mark.parametrize("kind", ["single", "sharded"])
@pytest.mark.parametrize("layer", [0, -1])
def test_hf_folder_layer_equals_transformers_weights(tiny_hf_folders, kind, layer):
    folder = tiny_hf_folders[kind]
    if kind == "sharded":
        assert len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]) > 0
        assert len(list(folder.glob("model-*.safetensors"))) > 3
    weights = read_layer(str(folder), layer)
    reference = tiny_hf_folders["model"].model.layers[layer].state_dict()
    assert set(weights.tensors) == set(reference)
    for name, ref in reference.items():
        assert torch.equal(weights.tensors[name], ref), name
    assert weights.config.num_key_value_heads == 2 and weights.num_layers == 3


def test_cache_round_trip_and_metadata(tiny_hf_folders, tmp_path):
    first = get_block_weights(str(tiny_hf_folders["sharded"]), -1, cache_dir=tmp_path)
    (entry,) = BlockCache(tmp_path).entries()
    assert entry.layer == 2 and entry.num_layers == 3
    meta = entry.metadata
    for key in ("source", "file_hash", "layer", "family", "config", "digest", "format_version"):
        assert meta[key], key
    assert json.loads(meta["config"])["hidden_size"] == 64
    # a second call reads the cache (the source could be gone by then)
    again = get_block_weights(str(tiny_hf_folders["sharded"]), 2, cache_dir=tmp_path)
    assert again.digest == first.digest == meta["digest"]
    assert all(torch.equal(again.tensors[k], first.tensors[k]) for k in first.tensors)
    assert not list(tmp_path.glob(".*partial"))  # nothing left of the atomic write


def test_changed_bytes_fail_the_digest(tiny_hf_folders, tmp_path):
    get_block_weights(str(tiny_hf_folders["single"]), 0, cache_dir=tmp_path)
    (entry,) = BlockCache(tmp_path).entries()
    data = bytearray(entry.path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last tensor
    entry.path.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match="do not match its digest.*cache remove"):
        get_block_weights(str(tiny_hf_folders["single"]), 0, cache_dir=tmp_path)
    assert "digest" in BlockCache(tmp_path).verify()[entry.path]


def test_truncated_entry_is_reported(tiny_hf_folders, tmp_path):
    get_block_weights(str(tiny_hf_folders["single"]), 1, cache_dir=tmp_path)
    (entry,) = BlockCache(tmp_path).entries()
    entry.path.write_bytes(entry.path.read_bytes()[:-100])
    with pytest.raises(CorruptCacheError, match="corrupt"):
        BlockCache(tmp_path).load(entry)


def test_interrupted_write_leaves_no_entry(tiny_hf_folders, tmp_path, monkeypatch):
    import timm_rllm.llm.cache as cache_mod

    def boom(tensors, path, metadata):
        open(path, "wb").write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        get_block_weights(str(tiny_hf_folders["single"]), 0, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_sources(tiny_hf_folders, tmp_path):
    with pytest.raises(IndexError, match="out of range.*3 layers"):
        read_layer(str(tiny_hf_folders["single"]), 3)
    with pytest.raises(BlockSourceError, match="unknown LLM source"):
        read_layer("no/such/thing/here", 0)
    with pytest.raises(BlockSourceError, match="no config.json"):
        read_layer(str(tmp_path), 0)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UnsupportedLlmError, match="unsupported LLM architecture 'gpt2'.*llama"):
        read_layer(str(gpt2), 0)
    with pytest.raises(BlockNotCachedError, match="not in the block cache.*timm-rllm extract"):
        get_block_weights("some-org/some-model", -1, cache_dir=tmp_path)


def test_wrong_tensor_shapes_are_refused(tiny_hf_folders, tmp_path):
    folder = tmp_path / "lying"
    folder.mkdir()
    config = json.loads((tiny_hf_folders["single"] / "config.json").read_text())
    config["intermediate_size"] = 128  # the tensors say 96
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").symlink_to(tiny_hf_folders["single"] / "model.safetensors")
    with pytest.raises(ValueError, match="gate_proj.weight has shape"):
        read_layer(str(folder), 0)


def test_cached_safetensors_is_plain_safetensors(tiny_hf_folders, tmp_path):
    get_block_weights(str(tiny_hf_folders["single"]), 0, cache_dir=tmp_path)
    (entry,) = BlockCache(tmp_path).entries()
    with safe_open(entry.path, "pt") as f:
        assert "self_attn.q_proj.weight" in f.keys()
        assert f.metadata()["family"] == "llama"
