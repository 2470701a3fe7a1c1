"""The one place where the image side asks the weights side for a block."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from ..layers.llm_block import LlmBlock, LlmBlockConfig, freeze_
from .cache import BlockCache
from .hub import BlockNotCachedError, read_hub
from .sources import EMBEDDED_PREFIX, BlockWeights, read_layer

__all__ = ["BlockNotCachedError", "build_block", "canonical_source", "get_block_weights", "random_block"]

logger = logging.getLogger(__name__)
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def canonical_source(source: str) -> str:
    """Local paths become absolute, so one file or folder has one cache entry."""
    if source.startswith(EMBEDDED_PREFIX):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def is_hub_repo_id(source: str) -> bool:
    return bool(HUB_REPO_ID.match(source)) and not Path(source).expanduser().exists()


def get_block_weights(
    source: str,
    layer: int = -1,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> BlockWeights:
    """A decoder layer from the block cache, extracting it from its source on first use.

    ``source``: ``embedded:NAME``, a Hub repo id (only the layer's bytes are fetched), a local
    Hugging Face folder, a Meta ``consolidated.00.pth`` (or its folder), or a .gguf file.
    ``dtype`` converts on extraction (Hub default bf16; local sources keep theirs).
    """
    source = canonical_source(source)
    cache = BlockCache(cache_dir)
    entry = cache.find(source, layer, revision)
    if entry is not None and entry.current:
        return cache.load(entry)
    with cache.lock(source, layer):
        entry = cache.find(source, layer, revision)  # another process may have extracted it meanwhile
        if entry is not None and entry.current:
            return cache.load(entry)
        if entry is not None:  # an older cache format, whose digest did not cover the config: extract again
            logger.warning("%s was written by an older timm-rllm (cache format %s); extracting it again",
                           entry.path, entry.metadata.get("format_version"))
        if is_hub_repo_id(source):
            weights = read_hub(source, layer, revision, dtype=dtype or torch.bfloat16, progress=progress)
        else:
            weights = read_layer(source, layer, cache_dir=cache.root)
            if dtype is not None:
                weights.tensors = {k: v.to(dtype) for k, v in weights.tensors.items()}
        weights.digest = cache.save(weights).metadata["digest"]
    return weights


def build_block(
    weights: BlockWeights, causal: bool = False, rope: bool = False, dtype: torch.dtype = torch.float32
) -> LlmBlock:
    """A frozen `LlmBlock` holding ``weights`` (built on the meta device: no throwaway init), its
    projections stored in ``dtype`` and its norms in fp32."""
    with torch.device("meta"):
        block = LlmBlock(weights.config, causal=causal, rope=rope)
    tensors = {k: v.float() if "norm" in k else v.to(dtype) for k, v in weights.tensors.items()}
    block.load_state_dict(tensors, strict=True, assign=True)
    return freeze_(block)


def random_block(
    cfg: LlmBlockConfig, causal: bool = False, rope: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0
) -> LlmBlock:
    """An ablation control: the same shapes with random weights (normal, std 0.02, as LLaMA's init), drawn from
    their own generator seeded with ``seed``: the same block every time it is built (a checkpoint trained with it
    is restored with it; the block is not saved), and the training run's own random stream is left untouched."""
    block = LlmBlock(cfg, causal=causal, rope=rope)
    generator = torch.Generator().manual_seed(seed)
    for module in block.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02, generator=generator)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    return freeze_(block.cast_frozen(dtype))
