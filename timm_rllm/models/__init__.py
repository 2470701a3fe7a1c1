from .resnet_medmnist import ResNet3d, ResNetMedMNIST
from .vision_transformer_3d import RllmVisionTransformer3D, RllmViViT
from .vision_transformer_rllm import RllmVisionTransformer

__all__ = ["ResNet3d", "ResNetMedMNIST", "RllmVisionTransformer", "RllmVisionTransformer3D", "RllmViViT"]
