"""Gradient coherence (Bai et al., AAAI 2025, "Frozen Language Models Are Gradient Coherence Rectifiers in
Vision Transformers"): how much the per-sample gradients of the last backbone stage agree. A diagnostic only:
it reads gradients with `torch.autograd.grad` in eval mode, so it touches no `.grad`, no RNG and no weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..data import MULTI_LABEL


def last_stage(model: nn.Module) -> nn.Module:
    """The last backbone block before the booster and head: the ViT's last block, ViViT's last temporal block,
    a ResNet's last stage."""
    for name in ("blocks", "temporal_blocks", "layer4"):
        stage = getattr(model, name, None)
        if stage is not None:
            return stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else stage
    raise ValueError(f"--grad-coherence: {type(model).__name__} has no blocks / temporal_blocks / layer4 to probe")


def probe_batch(dataset: Dataset, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` items of a split with its evaluation transform: the same images at every measurement."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def gradient_coherence(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], task: str,
                       device: torch.device) -> float:
    """Mean pairwise cosine similarity of the per-sample loss gradients with respect to ``last_stage(model)``'s
    parameters (plain cross-entropy, or BCE for multi-label), in fp32 and eval mode. 1: all samples pull the
    same way; 0: unrelated directions."""
    stage_params = [p for p in last_stage(model).parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        directions = []
        for x, y in zip(*batch, strict=True):
            logits = model(x[None].to(device)).float()
            y = y.to(device)
            loss = (F.binary_cross_entropy_with_logits(logits[0], y.float()) if task == MULTI_LABEL
                    else F.cross_entropy(logits, y.reshape(1).long()))
            grads = torch.autograd.grad(loss, stage_params)
            g = torch.cat([t.reshape(-1) for t in grads]).double()  # fp64: the pair sum cancels n
            directions.append(g / g.norm().clamp_min(1e-12))
    finally:
        model.train(was_training)
    n = len(directions)
    total = torch.stack(directions).sum(0)
    # sum over pairs i != j of cos(g_i, g_j) = |sum of unit vectors|^2 - n
    return float((total.dot(total) - n) / (n * (n - 1)))
