"""The one place where the image side asks the weights side for a block."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..layers.llm_block import LlmBlock, LlmBlockConfig
from .cache import CACHE_ENV, BlockCache
from .sources import EMBEDDED_PREFIX, BlockWeights, read_layer

HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BlockNotCachedError(RuntimeError):
    """The block's source needs a download and the block is not in the cache."""


def canonical_source(source: str) -> str:
    """Local paths become absolute, so one file or folder has one cache entry."""
    if source.startswith(EMBEDDED_PREFIX):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def get_block_weights(
    source: str, layer: int = -1, cache_dir: str | os.PathLike | None = None
) -> BlockWeights:
    """A decoder layer from the cache, extracting it from a local source on first use."""
    source = canonical_source(source)
    cache = BlockCache(cache_dir)
    entry = cache.find(source, layer)
    if entry is not None:
        return cache.load(entry)
    if HUB_REPO_ID.match(source) and not Path(source).exists():
        raise BlockNotCachedError(
            f"layer {layer} of {source} is not in the block cache ({cache.root}). Extract it from a "
            f"local copy of the checkpoint: `timm-rllm extract /path/to/{source.split('/')[-1]} "
            f"--layer {layer}` (a Hugging Face folder or .gguf file), then create the model with "
            f"llm_source='/path/to/...'; or set {CACHE_ENV} to a cache that holds it."
        )
    weights = read_layer(source, layer)
    weights.digest = cache.save(weights).metadata["digest"]
    return weights


def build_block(
    weights: BlockWeights, causal: bool = False, rope: bool = False, dtype: torch.dtype = torch.float32
) -> LlmBlock:
    """A frozen `LlmBlock` holding ``weights`` (built on the meta device: no throwaway init)."""
    with torch.device("meta"):
        block = LlmBlock(weights.config, causal=causal, rope=rope)
    tensors = {k: v.to(dtype) for k, v in weights.tensors.items()}
    block.load_state_dict(tensors, strict=True, assign=True)
    return block.requires_grad_(False)


def random_block(cfg: LlmBlockConfig, causal: bool = False, rope: bool = False) -> LlmBlock:
    """An ablation control: the same shapes with random weights (normal, std 0.02, as LLaMA's init)."""
    block = LlmBlock(cfg, causal=causal, rope=rope)
    for module in block.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    return block.requires_grad_(False)
