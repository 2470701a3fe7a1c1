import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# One block cache for the whole run, never the user's own (set before timm_rllm is imported), removed at the end
# (it holds the assembled Gemma GGUF, 241 MB).
SESSION_CACHE = os.environ["TIMM_RLLM_CACHE"] = tempfile.mkdtemp(prefix="timm_rllm_test_cache_")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Most tests write small synthetic files under official MedMNIST names; tests of the MD5 check unset this.
os.environ["TIMM_RLLM_SKIP_MD5"] = "1"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDMNIST_DIR = SHARED / "data" / "medmnist"


def pytest_collection_modifyitems(config, items):
    """`needs_data` tests read the real MedMNIST files in ../shared beside every checkout (CI's too); a clone
    elsewhere skips them."""
    if MEDMNIST_DIR.is_dir():
        return
    skip = pytest.mark.skip(reason=f"{MEDMNIST_DIR} not present")
    for item in items:
        if "needs_data" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)  # the session's blocks and assembled GGUF (241 MB)


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    args = dict(
        vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False,
    )
    args.update(overrides)
    return LlamaConfig(**args)


@pytest.fixture(scope="session")
def tiny_hf_folders(tmp_path_factory):
    """A tiny LLaMA checkpoint written by transformers, as a single file and sharded."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    root = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(root / "single")
    model.save_pretrained(root / "sharded", max_shard_size="40KB")
    return {"single": root / "single", "sharded": root / "sharded", "model": model}


HUB_REPO = "tiny-org/tiny-llama"  # what the `hub` fixture serves: the sharded tiny checkpoint


@pytest.fixture
def hub(tiny_hf_folders, tmp_path, monkeypatch):
    """A stand-in Hub on 127.0.0.1 serving HUB_REPO, with huggingface_hub pointed at it and its own cache."""
    from huggingface_hub import constants

    from timm_rllm.testing import FakeHub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as server:
        # what HF_ENDPOINT sets when huggingface_hub is imported
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        server.add_repo(HUB_REPO, tiny_hf_folders["sharded"])
        yield server
