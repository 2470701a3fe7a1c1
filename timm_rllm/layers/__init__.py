from .booster import BLOCK_FREE_MODES, FORMULAS, RESIDUAL_MODES, Booster
from .llm_block import LlmAttention, LlmBlock, LlmBlockConfig, LlmMlp, RMSNorm
from .sdpa import SDPA_CHOICES, sdpa_context

__all__ = ["BLOCK_FREE_MODES", "Booster", "FORMULAS", "LlmAttention", "LlmBlock", "LlmBlockConfig", "LlmMlp",
           "RESIDUAL_MODES", "RMSNorm", "SDPA_CHOICES", "sdpa_context"]
