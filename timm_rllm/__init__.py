"""timm-rllm: frozen LLM blocks as boosters inside timm vision transformers.

Importing the package registers its models with timm (``timm.list_models('*rllm*')``).
"""

from . import models  # noqa: F401  (registers the models)
from .layers import Booster, LlmBlock, LlmBlockConfig
from .models import RllmVisionTransformer

__version__ = "0.1.0"
__all__ = ["Booster", "LlmBlock", "LlmBlockConfig", "RllmVisionTransformer", "__version__"]
