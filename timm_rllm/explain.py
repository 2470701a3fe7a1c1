"""Grad-CAM maps for ViT and R-LLM models (2D), plain and boosted side by side.

The CAM itself comes from the maintained `grad-cam` package; this module only says which layer
to look at and how ViT tokens become a grid. The classifier reads the class token after the last
token-mixing layer, so the patch tokens' gradients are taken at the input of that layer: the last
ViT block's first norm for a plain ViT, the LLM block's input norm for an R-LLM model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._io import atomic_write
from .layers.booster import Booster


def cam_layer(model: nn.Module) -> nn.Module:
    booster = getattr(model, "booster", None)
    if isinstance(booster, Booster) and booster.block is not None:
        block = booster.block[-1] if isinstance(booster.block, nn.Sequential) else booster.block
        return block.input_layernorm
    if hasattr(model, "blocks"):
        return model.blocks[-1].norm1
    raise ValueError(f"no Grad-CAM layer known for {type(model).__name__}: 2D ViT and R-LLM ViT models only")


def _tokens_to_grid(model: nn.Module):
    grid = tuple(model.patch_embed.grid_size)
    if len(grid) != 2:
        raise ValueError("Grad-CAM maps are drawn for 2D models only")
    prefix = getattr(model, "num_prefix_tokens", 1)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        x = tokens[:, prefix:].float()  # a bf16-stored LLM block sees bf16 tokens; numpy takes fp32
        return x.reshape(x.shape[0], *grid, x.shape[-1]).permute(0, 3, 1, 2)

    return reshape


def gradcam(model: nn.Module, images: torch.Tensor, target_classes: list[int] | None = None) -> np.ndarray:
    """(B, H, W) maps in [0, 1] over the input, for the given classes (default: the predicted ones)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    targets = [ClassifierOutputTarget(c) for c in target_classes] if target_classes is not None else None
    with GradCAM(model=model, target_layers=[cam_layer(model)], reshape_transform=_tokens_to_grid(model)) as cam:
        return cam(input_tensor=images, targets=targets)


def compare_figure(models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor, out: str | os.PathLike,
                   class_names: dict[str, str] | None = None) -> Path:
    """One PNG: a row per image, the image then each model's map with its prediction and probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = len(images), 1 + len(models)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), squeeze=False)
    shown = images[:, 0].numpy() * 0.5 + 0.5  # undo the (0.5, 0.5) normalisation, first channel
    name = (lambda c: (class_names or {}).get(str(c), str(c)))
    for i in range(n):
        axes[i, 0].imshow(shown[i], cmap="gray")
        axes[i, 0].set_title(f"label: {name(int(labels[i]))}", fontsize=8)
    for j, (title, model) in enumerate(models.items(), start=1):
        with torch.no_grad():
            probs = model.eval()(images).softmax(-1)
        maps = gradcam(model, images)
        for i in range(n):
            pred = int(probs[i].argmax())
            axes[i, j].imshow(shown[i], cmap="gray")
            axes[i, j].imshow(maps[i], cmap="jet", alpha=0.45)
            axes[i, j].set_title(f"{title}\npred {name(pred)} ({probs[i, pred]:.2f})", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format=out.suffix[1:] or "png"))
    plt.close(fig)
    return out
