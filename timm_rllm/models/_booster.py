"""Building the booster stage for any backbone: the only place models ask for an LLM block."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..layers.booster import BLOCK_FREE_MODES, FORMULAS, Booster
from ..layers.llm_block import LlmBlockConfig
from ..llm.cache import tensor_digest
from ..llm.loader import build_block, get_block_weights, random_block
from ..llm.presets import SHAPE_FIELDS, LlmPreset, get_preset

RANDOM_SOURCE = "random"  # llm_source value of the random-weights ablation


def create_booster(
    dim: int,
    llm: str | None,
    llm_source: str | None = None,
    llm_layer: int | Sequence[int] = -1,
    residual: str = "inner",
    llm_rope: bool = False,
    llm_causal: bool = False,
    llm_cache_dir: str | os.PathLike | None = None,
    llm_digest: str | None = None,
    llm_dtype: str = "bfloat16",
) -> tuple[nn.Module, dict[str, Any]]:
    """(booster, info about its block). ``llm=None`` gives no booster at all (the plain backbone).
    ``llm_layer`` may list consecutive layers (``[-2, -1]``): they run as one stack, each cached alone.
    ``llm_digest`` (recorded by exported checkpoints) refuses a block whose tensors differ from the
    one the checkpoint was trained with. ``llm_dtype``: how the block's projections are stored
    (bfloat16: half the memory, no per-step cast under bf16 autocast; float32 to run the block in fp32)."""
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(llm_dtype)
    if dtype is None:
        raise ValueError(f"llm_dtype must be 'bfloat16' or 'float32', got {llm_dtype!r}")
    if llm is None:
        return nn.Identity(), {"llm": None}
    layers = layer_list(llm_layer)
    preset = get_preset(llm)
    source = llm_source or preset.source
    # the formula makes results files say which function a mode name meant (`mlp` changed in #17)
    info: dict[str, Any] = {"llm": llm, "source": source, "residual": residual, "formula": FORMULAS.get(residual),
                            "license": preset.license, "dtype": llm_dtype}
    if residual in BLOCK_FREE_MODES:
        block, info = None, {"llm": None, "residual": residual, "formula": FORMULAS[residual]}
    elif source == RANDOM_SOURCE:
        blocks = [random_block(preset.config, causal=llm_causal, rope=llm_rope, dtype=dtype, seed=i)
                  for i in range(len(layers))]
        block = blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)
        # which random block: seeds 0.. of random_block, so a checkpoint's llm_id tells them apart from real ones
        info.update(layer=None, random_weights=True, digest=f"random:{llm}:seeds0-{len(layers) - 1}")
    else:
        all_weights = [get_block_weights(source, layer, llm_cache_dir) for layer in layers]
        for weights in all_weights:
            check_fits(weights.config, preset, source)
        indices = [w.layer for w in all_weights]
        if indices != list(range(indices[0], indices[0] + len(indices))):
            raise ValueError(f"llm_layer {list(layers)} resolves to layers {indices}: a stack must be consecutive "
                             "layers in order (e.g. [-2, -1])")
        digest = ",".join(w.digest for w in all_weights)
        if llm_digest and digest != llm_digest and not _tensors_only_match(all_weights, llm_digest):
            raise ValueError(
                f"the cached block for {source} layer {indices} has digest {digest[:12]}, but this "
                f"checkpoint was trained with {llm_digest[:12]}: the source changed (another revision, file or place). "
                f"Extract the original (`timm-rllm extract {source} --layer N --revision ...`) "
                "or pass llm_source= pointing at it."
            )
        info["digest_checked"] = bool(llm_digest)  # the caller named the block it expects, and this is it
        blocks = [build_block(w, causal=llm_causal, rope=llm_rope, dtype=dtype) for w in all_weights]
        block = blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)
        first = all_weights[0]
        info.update(
            source=first.source, revision=first.revision, layer=indices[0] if len(indices) == 1 else indices,
            num_layers=first.num_layers, digest=digest, license=first.license or preset.license,
            random_weights=False,
        )
    booster = Booster(dim, block, preset.config.hidden_size, residual=residual, info=info)
    trunc_normal_(booster.w_in.weight, std=0.02)
    trunc_normal_(booster.w_out.weight, std=0.02)
    return booster, info


def _tensors_only_match(all_weights: list, llm_digest: str) -> bool:
    """Checkpoints exported before cache format 2 recorded digests of the tensors alone; the cache entry's
    own digest (now covering its config too) was checked when it was loaded."""
    return ",".join(tensor_digest(w.tensors) for w in all_weights) == llm_digest


def layer_list(llm_layer: Any) -> list[int]:
    """``llm_layer`` as a list of layer indices: an int, or a non-empty list of ints; anything else
    (True, 1.5, "abc", []) is refused in one line rather than misread."""
    is_int = lambda x: isinstance(x, numbers.Integral) and not isinstance(x, bool)
    if is_int(llm_layer):
        return [int(llm_layer)]
    if isinstance(llm_layer, (list, tuple)) and llm_layer and all(is_int(x) for x in llm_layer):
        return [int(x) for x in llm_layer]
    raise ValueError(f"llm_layer must be an int or a non-empty list of ints (e.g. -1 or [-2, -1]), got {llm_layer!r}")


def check_fits(cfg: LlmBlockConfig, preset: LlmPreset, source: str) -> None:
    wrong = [f for f in SHAPE_FIELDS if getattr(cfg, f) != getattr(preset.config, f)]
    if wrong:
        detail = ", ".join(f"{f}={getattr(cfg, f)} (expected {getattr(preset.config, f)})" for f in wrong)
        raise ValueError(
            f"the block from {source} does not fit the '{preset.name}' models: {detail}. "
            f"Use the models of the LLM it comes from, or add a preset for it in timm_rllm.llm.presets."
        )


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
