from .vision_transformer_3d import RllmVisionTransformer3D, RllmViViT
from .vision_transformer_rllm import RllmVisionTransformer

__all__ = ["RllmVisionTransformer", "RllmVisionTransformer3D", "RllmViViT"]
