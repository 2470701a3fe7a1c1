from .vision_transformer_rllm import RllmVisionTransformer

__all__ = ["RllmVisionTransformer"]
