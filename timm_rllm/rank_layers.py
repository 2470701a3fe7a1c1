"""Choosing the LLM block without a sweep: rank every layer of an LLM by how similar its output is to the
representation of the ViT block it would follow (Bai et al., AAAI 2025, find larger gains from more similar
blocks).

Closed form, no training: the tokens after the last ViT block of a trained model (patch tokens of a probe set,
each scaled to unit RMS) enter each LLM layer through a fixed isometric map (orthonormal columns, scaled so a
token keeps unit RMS in the LLM's width), the layer's output gets the booster's unit-gain RMSNorm, and the score
is linear CKA (Kornblith et al., 2019) between the ViT tokens and the layer's output tokens. The input scale is a
convention: a layer whose update is small next to its input scores high (it keeps the ViT's geometry).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .layers.llm_block import RMSNorm
from .llm.loader import BlockSpec, load_block
from .llm.presets import get_preset

_logger = logging.getLogger(__name__)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n samples, (n, d1) and (n, d2): 1 for representations
    equal up to rotation and scale, near 0 for unrelated ones. Computed in fp64 from the feature-space Gram
    matrices (d x d), so n can be large."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(0), y - y.mean(0)
    cross = (y.T @ x).square().sum()
    return float(cross / ((x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()))


def isometric_map(dim: int, llm_dim: int, seed: int = 0) -> torch.Tensor:
    """(llm_dim, dim) with orthonormal columns, times sqrt(llm_dim / dim): a unit-RMS token stays unit-RMS."""
    if llm_dim < dim:
        raise ValueError(f"the LLM's width ({llm_dim}) is below the ViT's ({dim}): no isometric map into it")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(llm_dim, dim, generator=g, dtype=torch.float64))
    return (q * (llm_dim / dim) ** 0.5).float()


def last_block_tokens(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(B, N, dim) patch tokens after the model's last ViT block (before any booster and the final norm), through
    timm's ``forward_intermediates``."""
    blocks = getattr(model, "blocks", None) or getattr(model, "temporal_blocks", None)
    if blocks is None or not hasattr(model, "forward_intermediates"):
        raise ValueError(f"rank-layers reads the last ViT block: {type(model).__name__} has no blocks / "
                         "temporal_blocks with forward_intermediates (ViT, ViT3D and ViViT models)")
    model.eval()
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            (tokens,) = model.forward_intermediates(chunk, indices=[len(blocks) - 1], output_fmt="NLC",
                                                    intermediates_only=True)
            out.append(tokens.float())
    return torch.cat(out)


def probe_images(dataset: Dataset, n: int) -> torch.Tensor:
    """The first ``n`` images of a split, with its evaluation transform."""
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])


@torch.no_grad()
def block_score(tokens: torch.Tensor, block: nn.Module, embed: torch.Tensor) -> float:
    """CKA between ViT tokens (B, N, dim) and the block's normed output on their isometric image."""
    x = tokens / tokens.square().mean(-1, keepdim=True).add(1e-12).sqrt()  # unit RMS per token
    h = x @ embed.T
    dtype = next((t.dtype for t in block.buffers() if t.is_floating_point()), torch.float32)
    u = block(h.to(dtype)).float()
    u = RMSNorm(u.shape[-1], eps=1e-6, affine=False)(u)
    return linear_cka(x.reshape(-1, x.shape[-1]), u.reshape(-1, u.shape[-1]))


@dataclass
class LayerScore:
    layer: int
    score: float
    digest: str | None


def rank_layers(tokens: torch.Tensor, llm: str, layers: list[int] | None = None, source: str | None = None,
                cache_dir: str | None = None, progress: bool = True) -> list[LayerScore]:
    """Score every layer (or ``layers``) of an LLM preset's block source against ViT ``tokens``; best first."""
    preset = get_preset(llm)
    n = preset.num_layers
    layers = list(range(n)) if layers is None else [i % n for i in layers]
    blocks = ((layer, load_block(BlockSpec(llm, source=source, layer=layer, cache_dir=cache_dir, dtype="float32")))
              for layer in layers)  # one block in memory at a time
    return rank_blocks(tokens, tqdm(blocks, total=len(layers), desc=f"rank-layers {llm}", disable=not progress),
                       preset.config.hidden_size)


def rank_blocks(tokens: torch.Tensor, blocks, llm_dim: int) -> list[LayerScore]:
    """Score ``(layer, (block, info))`` pairs against ViT ``tokens`` through one shared isometric map; best first."""
    embed = isometric_map(tokens.shape[-1], llm_dim)
    scores = [LayerScore(layer, block_score(tokens, block, embed), info.get("digest"))
              for layer, (block, info) in blocks]
    return sorted(scores, key=lambda s: -s.score)


def spearman_against(scores: list[LayerScore], val_auc: dict[int, float]) -> dict[str, Any]:
    """Spearman's rho (scipy) between the score and a layer sweep's validation AUC over the layers both have."""
    from scipy.stats import spearmanr

    common = sorted({s.layer for s in scores} & set(val_auc))
    if len(common) < 3:
        raise ValueError(f"the sweep shares {len(common)} layers with the ranking: need at least 3 to correlate")
    by_layer = {s.layer: s.score for s in scores}
    rho, p = spearmanr([by_layer[i] for i in common], [val_auc[i] for i in common])
    return {"rho": float(rho), "p_value": float(p), "n_layers": len(common), "layers": common}


def sweep_val_auc(summary: dict[str, Any], llm: str) -> dict[int, float]:
    """layer -> mean validation AUC of single-layer runs, from a layer sweep's summary.json."""
    return {row["layer"]: row["val_auc"][0] for name, row in summary.items()
            if name.startswith(f"{llm}/layer") and isinstance(row.get("layer"), int)}
