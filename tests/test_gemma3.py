"""The Gemma 3 family: parity with transformers' Gemma3DecoderLayer, on random and on the real
(dequantised GGUF) weights of the embedded Gemma 3 270M."""

import pytest
import timm
import torch
from transformers import Gemma3TextConfig
from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer

import timm_rllm  # noqa: F401
from timm_rllm.layers import LlmBlock
from timm_rllm.llm import get_block_weights
from timm_rllm.llm.families import config_from_hf
from timm_rllm.llm.sources import embedded_gguf_path


def _no_rope(n, head_dim):
    return torch.ones(1, n, head_dim), torch.zeros(1, n, head_dim)


def _reference_output(layer, x, head_dim):
    layer.self_attn.is_causal = False
    with torch.no_grad():
        return layer(x, position_embeddings=_no_rope(x.shape[1], head_dim), attention_mask=None)


def test_parity_random_weights():
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=24)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    ref = Gemma3DecoderLayer(cfg, layer_idx=0).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = LlmBlock(config_from_hf(cfg.to_dict())[0]).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 21, 64)
    expected = _reference_output(ref, x, 32)
    with torch.no_grad():
        got = ours(x)
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def hf_gemma():
    from transformers import AutoModelForCausalLM

    path = embedded_gguf_path("gemma3")
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def test_real_weights_equal_transformers_and_outputs_match(hf_gemma):
    weights = get_block_weights("embedded:gemma3", -1)
    assert weights.layer == 17 and weights.num_layers == 18
    reference = hf_gemma.model.layers[17]
    ref_state = reference.state_dict()
    assert set(ref_state) == set(weights.tensors)
    for name, t in ref_state.items():
        assert torch.equal(weights.tensors[name], t.float()), name
    model = timm.create_model("vit_tiny_rllm_gemma3", img_size=28, patch_size=4, llm_dtype="float32")
    block = model.booster.block.eval()
    x = torch.randn(2, 50, 640)
    with torch.no_grad():
        got = block(x)
    expected = _reference_output(reference, x, 256)
    assert (got - expected).abs().max().item() <= 1e-4
    assert "Gemma Terms of Use" in repr(model.booster) and "Gemma" in model.pretrained_cfg["license"]
