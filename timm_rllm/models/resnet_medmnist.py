"""MedMNIST v2's CNN baselines, so the ViTs meet them in the same harness (same data, recipe, seeds).

- ``resnet18_medmnist``: MedMNIST v2's "ResNet-18 (28)": ResNet-18 with a 3x3 stride-1 stem conv and no
  max-pool (the CIFAR-style stem of MedMNIST's experiments code), built from timm's `ResNet` with the stem
  swapped, so timm's API (forward_features, reset_classifier, features_only, layer decay) works unchanged.
- ``resnet18_3d_medmnist``: the same network with Conv3d/BatchNorm3d (3x3x3 stem, stride 1, no max-pool),
  as MedMNIST v2's "ResNet-18 + 3D" (there a 2D ResNet converted to 3D convolutions); a compact own
  implementation with timm's model interface, for (B, C, D, H, W) volumes.

The architectures follow MedMNIST; weights start from timm's initialisation (kaiming normal, fan-out), and
the last BatchNorm of each block is not zero-initialised (``zero_init_last=False``, as in MedMNIST's code).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

__all__ = ["ResNetMedMNIST", "ResNet3d", "BasicBlock3d"]

# (output channels, stride) of the four stages of ResNet-18 and its feature reductions with the stride-1 stem
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
REDUCTIONS = (1, 1, 2, 4, 8)  # act1, layer1..layer4


def _feature_info(modules: tuple[str, ...]) -> list[dict[str, Any]]:
    chans = (64, *(c for c, _ in STAGES))
    return [dict(num_chs=c, reduction=r, module=m) for c, r, m in zip(chans, REDUCTIONS, modules, strict=True)]


class ResNetMedMNIST(ResNet):
    """timm's ResNet with MedMNIST's low-resolution stem: conv 3x3 stride 1 (no bias), BN, ReLU, no max-pool."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("zero_init_last", False)
        super().__init__(**kwargs)
        in_chans = self.conv1.in_channels
        self.conv1 = nn.Conv2d(in_chans, self.bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False,
                               device=kwargs.get("device"), dtype=kwargs.get("dtype"))
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        for info, reduction in zip(self.feature_info, REDUCTIONS, strict=True):
            info["reduction"] = reduction  # the stem no longer downsamples: 1, 1, 2, 4, 8 instead of 2 .. 32


class BasicBlock3d(nn.Module):
    """ResNet basic block with 3x3x3 convolutions; a 1x1x1 conv + BN shortcut where shape changes."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(nn.Conv3d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm3d(out_chs))
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(self.drop_path(x) + shortcut)


class ResNet3d(nn.Module):
    """ResNet for volumes with MedMNIST's stem (3x3x3, stride 1, no max-pool) and timm's model interface."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 2, in_chans: int = 1,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.grad_checkpointing = False
        self.conv1 = nn.Conv3d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.act1 = nn.ReLU(inplace=True)
        dpr = torch.linspace(0, drop_path_rate, sum(layers)).tolist()
        in_chs, k = 64, 0
        for i, ((out_chs, stride), n) in enumerate(zip(STAGES, layers, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock3d(in_chs, out_chs, stride if j == 0 else 1, dpr[k]))
                in_chs, k = out_chs, k + 1
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = self.head_hidden_size = in_chs
        self.feature_info = _feature_info(("act1", "layer1", "layer2", "layer3", "layer4"))
        self.global_pool = self._check_pool(global_pool)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _check_pool(global_pool: str) -> str:
        if global_pool not in ("avg", ""):
            raise ValueError(f"ResNet3d pools with 'avg' (or '' for no pooling), got {global_pool!r}")
        return global_pool

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected volumes shaped (B, C, D, H, W), got {tuple(x.shape)}"
                             + (" (a 2D image: use resnet18_medmnist)" if x.ndim == 4 else ""))
        x = self.act1(self.bn1(self.conv1(x)))
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stages, x)
        for stage in stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3, 4))
        x = nn.functional.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # pool_size: the last feature map of a 28 px input (strides 1, 1, 2, 2, 2: 28 -> 4)
    return dict(url="", num_classes=2, input_size=(1, 28, 28), pool_size=(4, 4), mean=(0.5,), std=(0.5,),
                first_conv="conv1", classifier="fc", license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({
    "resnet18_medmnist": _cfg(notes="MedMNIST v2 ResNet-18 (28): 3x3 stride-1 stem, no max-pool"),
    # timm's pretrained cfg holds (C, H, W): the volume is (C, D, H, W) with D = H = W
    "resnet18_3d_medmnist": _cfg(notes="MedMNIST v2 ResNet-18 + 3D: 3x3x3 stride-1 stem, no max-pool"),
})


@register_model
def resnet18_medmnist(pretrained: bool = False, **kwargs: Any) -> ResNetMedMNIST:
    """ResNet-18 with MedMNIST v2's 28 px stem (3x3 stride-1 conv, no max-pool)."""
    args = dict(block=BasicBlock, layers=(2, 2, 2, 2), num_classes=2, in_chans=1)
    return build_model_with_cfg(ResNetMedMNIST, "resnet18_medmnist", pretrained, **dict(args, **kwargs))


@register_model
def resnet18_3d_medmnist(pretrained: bool = False, **kwargs: Any) -> ResNet3d:
    """3D ResNet-18 with MedMNIST v2's stem (3x3x3 stride-1 conv, no max-pool), for (B, C, D, H, W) volumes."""
    args = dict(layers=(2, 2, 2, 2), num_classes=2, in_chans=1)
    return build_model_with_cfg(ResNet3d, "resnet18_3d_medmnist", pretrained, **dict(args, **kwargs))
