"""The weights side: sources of decoder layers, their key maps, and the block cache."""

from .cache import BlockCache, CorruptCacheError, default_cache_dir, tensor_digest
from .families import FAMILIES, UnsupportedLlmError
from .loader import BlockNotCachedError, build_block, get_block_weights, random_block
from .presets import LLM_PRESETS, get_preset
from .sources import BlockSourceError, BlockWeights, read_layer

__all__ = [
    "BlockCache", "BlockNotCachedError", "BlockSourceError", "BlockWeights", "CorruptCacheError", "FAMILIES",
    "LLM_PRESETS", "UnsupportedLlmError", "build_block", "default_cache_dir", "get_block_weights", "get_preset",
    "random_block", "read_layer", "tensor_digest",
]
