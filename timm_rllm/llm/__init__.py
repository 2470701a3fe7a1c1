"""The weights side: sources of decoder layers, their key maps, and the block cache.

Models meet it in one call: ``load_block(BlockSpec(...)) -> (frozen block, info)``.
"""

from .cache import BlockCache, CorruptCacheError, default_cache_dir, tensor_digest
from .families import FAMILIES, UnsupportedLlmError
from .loader import BlockNotCachedError, BlockSpec, build_block, get_block_weights, load_block, random_block
from .presets import LLM_PRESETS, get_preset
from .sources import BlockSourceError, BlockWeights, read_layer

__all__ = [
    "BlockCache", "BlockNotCachedError", "BlockSpec", "BlockSourceError", "BlockWeights", "CorruptCacheError",
    "FAMILIES", "LLM_PRESETS", "UnsupportedLlmError", "build_block", "default_cache_dir", "get_block_weights",
    "get_preset", "load_block", "random_block", "read_layer", "tensor_digest",
]
