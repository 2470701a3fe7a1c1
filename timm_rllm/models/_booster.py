"""Building the booster stage for any backbone: the only place models ask for an LLM block."""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..layers.booster import BLOCK_FREE_MODES, FORMULAS, Booster
from ..llm.loader import BlockSpec, load_block
from ..llm.presets import get_preset


def create_booster(dim: int, llm: str | None, residual: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict]:
    """(booster, info about its block) for a backbone of width ``dim``; ``llm=None`` gives no booster (the plain
    backbone). The ``llm_*`` keys of ``kwargs`` (the model's keyword arguments) are taken out into a `BlockSpec`
    and handed to the weights side, the rest stays for the backbone."""
    if llm is None:
        if given := sorted(k for k in kwargs if k.startswith("llm_")):
            raise ValueError(f"{', '.join(given)}: this model has no LLM block (llm=None)")
        return nn.Identity(), {"llm": None}
    spec = BlockSpec.pop_from(llm, kwargs)
    if residual in BLOCK_FREE_MODES:  # a control without any LLM block
        block, info = None, {"llm": None}
    else:
        block, info = load_block(spec)
    # the formula makes results files say which function a mode name meant (`mlp` changed in #17)
    info.update(residual=residual, formula=FORMULAS.get(residual))
    booster = Booster(dim, block, get_preset(llm).config.hidden_size, residual=residual, info=info)
    trunc_normal_(booster.w_in.weight, std=0.02)
    trunc_normal_(booster.w_out.weight, std=0.02)
    return booster, info


def restore_frozen_block(module: nn.Module, reinit) -> None:
    """Run ``reinit()`` (timm re-initialises every Linear, the frozen block's too) with the booster set aside:
    the adapters keep their own init and the block its LLM weights."""
    booster = getattr(module, "booster", None)
    if booster is None:  # timm's ViT initialises before the booster exists
        reinit()
        return
    module.booster = nn.Identity()
    try:
        reinit()
    finally:
        module.booster = booster


def block_tensors(model: nn.Module, prefix: str = "booster.block.") -> dict[str, torch.Tensor]:
    """The frozen LLM block's tensors of a model, under their full names (they are not in its state_dict)."""
    block = getattr(getattr(model, "booster", None), "block", None)
    return {prefix + k: v for k, v in block.named_buffers()} if block is not None else {}


def place_booster(booster: nn.Module, like: torch.Tensor) -> None:
    """Put the booster where the backbone was built (``timm.create_model(..., device=, dtype=)``): the block, read
    from the cache on the CPU, goes to that device; the adapters take the backbone's dtype too (the block keeps its
    storage dtype and fp32 norms)."""
    booster.to(like.device)
    for adapter in (booster.w_in, booster.w_out):
        adapter.to(like.dtype)


def ignore_block_in_ddp(model: nn.Module) -> None:
    """DistributedDataParallel (ours, timm's train.py, anyone's) skips the frozen block: every process reads
    the same block from its cache, so broadcasting its buffers before each forward would only cost time."""
    model._ddp_params_and_buffers_to_ignore = list(block_tensors(model))
