from .booster import RESIDUAL_MODES, Booster
from .llm_block import LlmAttention, LlmBlock, LlmBlockConfig, LlmMlp, RMSNorm

__all__ = ["Booster", "LlmAttention", "LlmBlock", "LlmBlockConfig", "LlmMlp", "RESIDUAL_MODES", "RMSNorm"]
