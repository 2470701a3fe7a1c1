"""rank-layers: linear CKA against an independent formula, a planted similar block ranked first, the CLI."""

import json
import re

import pytest
import torch
from test_train import TINY, write_npz

from timm_rllm.cli import main as cli
from timm_rllm.llm.loader import random_block
from timm_rllm.llm.presets import get_preset
from timm_rllm.rank_layers import isometric_map, linear_cka, rank_blocks, spearman_against, sweep_val_auc
from timm_rllm.train import TrainConfig, fit


def _cka_by_gram(x, y):
    """The textbook form on the (n, n) Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), centred by H."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = h @ (x.double() @ x.double().T) @ h, h @ (y.double() @ y.double().T) @ h
    return float((k * l_).sum() / ((k * k).sum() * (l_ * l_).sum()).sqrt())


def test_linear_cka_matches_the_gram_form_and_its_invariances():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 8, generator=g), torch.randn(50, 5, generator=g)
    assert linear_cka(x, y) == pytest.approx(_cka_by_gram(x, y), abs=1e-10)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, 3 * x @ q + 1) == pytest.approx(1.0)  # rotation, scale, shift
    m = isometric_map(8, 20)
    assert m.shape == (20, 8) and torch.allclose(m.T @ m, torch.eye(8) * 20 / 8, atol=1e-5)


def test_a_planted_similar_block_ranks_first():
    cfg = get_preset("smollm2").config
    tokens = torch.randn(4, 10, 64, generator=torch.Generator().manual_seed(1))
    blocks = {i: random_block(cfg, seed=i) for i in range(4)}
    with torch.no_grad():
        for i, block in blocks.items():  # blocks whose attention and MLP rewrite the tokens (as trained layers can)
            scale = 1e-3 if i == 2 else 30.0  # and a planted one that adds almost nothing: it keeps their geometry
            block.self_attn.o_proj.weight.mul_(scale)
            block.mlp.down_proj.weight.mul_(scale)
    scores = rank_blocks(tokens, ((i, (b, {})) for i, b in blocks.items()), cfg.hidden_size)
    assert [s.layer for s in scores][0] == 2 and scores[0].score > 0.99 and scores[1].score < 0.9


def test_spearman_against_a_sweep():
    from timm_rllm.rank_layers import LayerScore

    summary = {"smollm2/layer0": {"layer": 0, "val_auc": [60.0, 1]}, "smollm2/layer5": {"layer": 5, "val_auc": [70, 1]},
               "smollm2/layer9": {"layer": 9, "val_auc": [80, 1]}, "smollm2/mlp": {"layer": None, "val_auc": [1, 1]}}
    auc = sweep_val_auc(summary, "smollm2")
    assert auc == {0: 60.0, 5: 70, 9: 80}
    scores = [LayerScore(i, s, None) for i, s in ((0, 0.1), (5, 0.5), (9, 0.9), (3, 0.2))]
    assert spearman_against(scores, auc)["rho"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3"):
        spearman_against(scores[:2], auc)


def test_cli_ranks_real_layers_of_a_trained_run(tmp_path, capsys):
    write_npz(tmp_path / "pneumoniamnist.npz", classes=2, n=(32, 16, 16))
    cfg = TrainConfig(dataset="pneumoniamnist", data_dir=str(tmp_path), **{**TINY, "model": "vit_tiny_patch16_224",
                                                                            "epochs": 1, "model_kwargs": {"depth": 2}})
    fit(cfg, tmp_path / "run", progress=False)
    summary = {f"smollm2/layer{i}": {"layer": i, "val_auc": [v, 0]} for i, v in ((27, 1), (28, 2), (29, 3))}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert cli(["rank-layers", "--checkpoint", str(tmp_path / "run"), "--layers=-3,-2,-1", "--probe", "8",
                "--sweep", str(tmp_path / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"layer +\d+ +CKA", out)) == 3
    assert "Spearman rho" in out and "over 3 layers [27, 28, 29]" in out
