"""timm-rllm: frozen LLM blocks as boosters inside timm vision transformers.

Importing the package registers its models with timm (``timm.list_models('*rllm*')``).
"""

from importlib.metadata import PackageNotFoundError, version

from . import models  # noqa: F401  (registers the models)
from .layers import Booster, LlmBlock, LlmBlockConfig
from .models import RllmVisionTransformer

try:
    __version__ = version("timm-rllm")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"
__all__ = ["Booster", "LlmBlock", "LlmBlockConfig", "RllmVisionTransformer", "__version__"]
