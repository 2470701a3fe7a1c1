"""LlmBlock against transformers' own decoder layers with identical weights."""

import pytest
import torch
from transformers import Qwen2Config
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from timm_rllm.layers import LlmBlock
from timm_rllm.llm.families import config_from_hf

from conftest import tiny_llama_config


def _reference(layer_cls, hf_config, impl="sdpa"):
    hf_config._attn_implementation = impl
    torch.manual_seed(0)
    ref = layer_cls(hf_config, layer_idx=0).eval()
    for p in ref.parameters():  # non-trivial weights everywhere, norms included
        torch.nn.init.normal_(p, mean=1.0 if p.ndim == 1 else 0.0, std=0.2)
    ours = LlmBlock(config_from_hf(hf_config.to_dict())[0]).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _no_rope(x, head_dim):
    n = x.shape[1]
    return torch.ones(1, n, head_dim), torch.zeros(1, n, head_dim)


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_llama_parity_no_mask_no_rope(kv_heads, impl):
    cfg = tiny_llama_config(num_key_value_heads=kv_heads)
    ref, ours = _reference(LlamaDecoderLayer, cfg, impl)
    ref.self_attn.is_causal = False  # every token sees every token, as the method runs the block
    x = torch.randn(3, 17, cfg.hidden_size)
    with torch.no_grad():
        expected = ref(x, attention_mask=None, position_embeddings=_no_rope(x, 16))
        got = ours(x)
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got - x).abs().max().item() > 1e-2  # the block did something


def test_qwen2_bias_parity():
    cfg = Qwen2Config(
        vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-6,
    )
    ref, ours = _reference(Qwen2DecoderLayer, cfg)
    assert ours.self_attn.q_proj.bias is not None and ours.self_attn.o_proj.bias is None
    ref.self_attn.is_causal = False
    x = torch.randn(2, 11, 64)
    with torch.no_grad():
        expected = ref(x, attention_mask=None, position_embeddings=_no_rope(x, 16))
        got = ours(x)
    assert (got - expected).abs().max().item() <= 1e-5


def test_rope_and_causal_options_match_transformers():
    cfg = tiny_llama_config()
    ref, _ = _reference(LlamaDecoderLayer, cfg)
    ours = LlmBlock(config_from_hf(cfg.to_dict())[0], causal=True, rope=True).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 13, 64)
    rotary = LlamaRotaryEmbedding(cfg)
    pos = torch.arange(13)[None]
    with torch.no_grad():
        expected = ref(x, attention_mask=None, position_embeddings=rotary(x, pos))  # sdpa: causal
        got = ours(x)
        plain = LlmBlock(ours.config)
        plain.load_state_dict(ref.state_dict())
    assert (got - expected).abs().max().item() <= 1e-5
    assert (plain(x) - expected).abs().max().item() > 1e-3  # the options change the result


def test_bf16_storage_is_free_under_autocast_and_runs_without_it():
    cfg = tiny_llama_config()
    _, fp32 = _reference(LlamaDecoderLayer, cfg)
    bf16 = LlmBlock(fp32.config).eval()
    bf16.load_state_dict(fp32.state_dict())
    bf16.cast_frozen(torch.bfloat16)
    assert bf16.self_attn.q_proj.weight.dtype == torch.bfloat16 and bf16.mlp.down_proj.weight.dtype == torch.bfloat16
    assert bf16.input_layernorm.weight.dtype == torch.float32  # norms keep full precision
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(bf16(x), fp32(x))  # autocast casts the fp32 weights to exactly these
        out = bf16(x)  # no autocast: fp32 tokens through the bf16 block, fp32 back
        assert out.dtype == torch.float32
        assert (out - fp32(x)).abs().max().item() < 0.1 * fp32(x).abs().max().item()


def test_attention_kernel_choice():
    from timm_rllm.layers import sdpa_context

    with sdpa_context("auto", "cpu", bf16=True):
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
    with sdpa_context("auto", "cpu", bf16=False):
        assert torch.backends.cuda.flash_sdp_enabled()  # PyTorch's own choice
    with sdpa_context("flash", "cpu", bf16=True):
        assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
    with pytest.raises(ValueError, match="unknown attention kernel"):
        sdpa_context("fastest", "cpu", bf16=True)
