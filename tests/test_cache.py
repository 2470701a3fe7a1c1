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
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]


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


def test_disk_full_leaves_nothing(tiny_hf_folders, tmp_path, monkeypatch):
    import errno

    import timm_rllm.llm.cache as cache_mod

    def full(tensors, path, metadata):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "save_file", full)
    with pytest.raises(OSError, match="No space left.*nothing was cached.*TIMM_RLLM_CACHE"):
        get_block_weights(str(tiny_hf_folders["single"]), 0, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]


def _to_meta_layout(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face q/k rows -> Meta's interleaved rotary rows (the inverse of the conversion)."""
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def test_meta_consolidated_checkpoint(tiny_hf_folders, tmp_path):
    from timm_rllm.llm.families import META_KEY_MAP

    model = tiny_hf_folders["model"]
    cfg = model.config
    state = {"tok_embeddings.weight": model.model.embed_tokens.weight.detach()}
    hf_to_meta = {v: k for k, v in META_KEY_MAP.items()}
    for i, layer in enumerate(model.model.layers):
        for name, t in layer.state_dict().items():
            if name == "self_attn.q_proj.weight":
                t = _to_meta_layout(t, cfg.num_attention_heads)
            elif name == "self_attn.k_proj.weight":
                t = _to_meta_layout(t, cfg.num_key_value_heads)
            state[f"layers.{i}.{hf_to_meta[name]}"] = t.clone()
    folder = tmp_path / "llama-meta"
    folder.mkdir()
    torch.save(state, folder / "consolidated.00.pth")
    params = {"dim": 64, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 32, "norm_eps": 1e-5,
              "ffn_dim_multiplier": 96 / int(2 * 4 * 64 / 3)}
    (folder / "params.json").write_text(json.dumps(params))
    weights = read_layer(str(folder / "consolidated.00.pth"), -1)
    assert weights.config.intermediate_size == 96 and weights.layer == 2
    for name, ref in model.model.layers[2].state_dict().items():
        assert torch.equal(weights.tensors[name], ref), name
    (folder / "consolidated.01.pth").write_bytes(b"")
    with pytest.raises(BlockSourceError, match="only single-file"):
        read_layer(str(folder), 0)


def test_multimodal_checkpoint_prefix_and_nested_text_config(tiny_hf_folders, tmp_path):
    """Gemma 3 4B+ style: the LLM's config under text_config, its layers under model.language_model."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "multimodal"
    folder.mkdir()
    text_config = json.loads((tiny_hf_folders["single"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"model_type": "wrapper", "text_config": text_config}))
    state = load_file(tiny_hf_folders["single"] / "model.safetensors")
    save_file({k.replace("model.layers.", "model.language_model.layers."): v for k, v in state.items()},
              folder / "model.safetensors")
    weights = read_layer(str(folder), 1)
    for name, ref in tiny_hf_folders["model"].model.layers[1].state_dict().items():
        assert torch.equal(weights.tensors[name], ref), name
