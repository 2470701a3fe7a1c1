"""The one place where the image side asks the weights side for a block."""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers.llm_block import LlmBlock, LlmBlockConfig, freeze_
from .cache import BlockCache, tensor_digest
from .hub import BlockNotCachedError, read_hub
from .presets import SHAPE_FIELDS, LlmPreset, get_preset
from .sources import EMBEDDED_PREFIX, BlockWeights, read_layer

__all__ = ["BlockNotCachedError", "BlockSpec", "RANDOM_SOURCE", "build_block", "canonical_source",
           "get_block_weights", "load_block", "random_block"]

RANDOM_SOURCE = "random"  # the source of the random-weights ablation
KEEP = "keep"  # get_block_weights: keep the source's precision
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class BlockSpec:
    """Which LLM block a model wants: the one thing models hand to the weights side (`load_block`).

    Models take these as ``llm_*`` keyword arguments (``llm_source=``, ``llm_layer=`` ...), next to ``llm``:
        llm: the LLM preset (``smollm2``, ``gemma3``, ``llama``): fixes the block's shapes and default source.
        source: where the block comes from instead: ``embedded:NAME``, a Hub repo id, a Hugging Face folder,
            a .gguf file, a Meta ``consolidated.00.pth``, or ``random`` (random weights of the same shapes:
            an ablation control, never a fallback).
        layer: decoder layer index, negative from the end (-1, the last, is the paper's); a list of
            consecutive layers (e.g. [-2, -1]) runs them as one stack, each cached alone.
        rope, causal: apply rotary embedding / a causal mask in the block (off in the method).
        cache_dir: the block cache (default ``$TIMM_RLLM_CACHE`` or ~/.cache/timm_rllm/blocks).
        digest: refuse a block whose digest differs (exported checkpoints record it).
        dtype: storage of the frozen projections, ``bfloat16`` (half the memory, no per-step cast under bf16
            autocast) or ``float32`` (the block then runs in fp32 without autocast).
        trainable: fine-tune the block too (the paper's "R-LLM fine-tuned" row): its tensors are then parameters
            in fp32, with gradients and optimizer state, saved in checkpoints and exports.
    """

    llm: str
    source: str | None = None
    layer: int | tuple[int, ...] = -1
    rope: bool = False
    causal: bool = False
    cache_dir: str | None = None
    digest: str | None = None
    dtype: str = "bfloat16"
    trainable: bool = False

    @classmethod
    def pop_from(cls, llm: str, kwargs: dict[str, Any]) -> BlockSpec:
        """The spec from a model's keyword arguments: ``llm_source=`` is ``source`` and so on; the ``llm_*`` keys
        are taken out of ``kwargs`` (the rest is for the backbone) and an unknown one is refused."""
        names = {f"llm_{f.name}" for f in dataclasses.fields(cls) if f.name != "llm"}
        given = {k: kwargs.pop(k) for k in [k for k in kwargs if k.startswith("llm_")]}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(f"unknown argument(s) {', '.join(unknown)}; the LLM block takes "
                             f"{', '.join(sorted(names))}")
        spec = {k[len("llm_"):]: v for k, v in given.items()}
        if "layer" in spec:
            spec["layer"] = layer_list(spec["layer"])
        if spec.get("cache_dir") is not None:
            spec["cache_dir"] = str(spec["cache_dir"])
        return cls(llm=llm, **spec)

    @property
    def layers(self) -> list[int]:
        return layer_list(self.layer)


def layer_list(layer: Any) -> list[int] | int:
    """``layer`` checked: an int, or a non-empty list of ints; anything else (True, 1.5, "abc", []) is refused
    in one line rather than misread. Lists come back as lists, ints as ints."""
    is_int = lambda x: isinstance(x, numbers.Integral) and not isinstance(x, bool)
    if is_int(layer):
        return int(layer)
    if isinstance(layer, (list, tuple)) and layer and all(is_int(x) for x in layer):
        return [int(x) for x in layer]
    raise ValueError(f"llm_layer must be an int or a non-empty list of ints (e.g. -1 or [-2, -1]), got {layer!r}")


def load_block(spec: BlockSpec) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen block a spec names (a stack of consecutive layers runs in an nn.Sequential) and what it is:
    source, revision, layer(s), digest, licence, or ``random_weights``."""
    dtype = DTYPES.get(spec.dtype)
    if dtype is None:
        raise ValueError(f"llm_dtype must be one of {', '.join(DTYPES)}, got {spec.dtype!r}")
    if spec.trainable:  # optimizer updates need full-precision weights
        dtype = torch.float32
    layers = spec.layers if isinstance(spec.layers, list) else [spec.layers]
    preset = get_preset(spec.llm)
    source = spec.source or preset.source
    info: dict[str, Any] = {"llm": spec.llm, "source": source, "license": preset.license,
                            "dtype": "float32" if spec.trainable else spec.dtype, "trainable": spec.trainable}
    if source == RANDOM_SOURCE:
        blocks = [random_block(preset.config, causal=spec.causal, rope=spec.rope, dtype=dtype, seed=i,
                               freeze=not spec.trainable) for i in range(len(layers))]
        # which random block: seeds 0.. of random_block, so a checkpoint's id tells it apart from real ones
        info.update(layer=None, random_weights=True, digest=f"random:{spec.llm}:seeds0-{len(layers) - 1}")
        return (blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)), info
    all_weights = [get_block_weights(source, layer, spec.cache_dir) for layer in layers]
    for weights in all_weights:
        check_fits(weights.config, preset, source)
    indices = [w.layer for w in all_weights]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise ValueError(f"llm_layer {layers} resolves to layers {indices}: a stack must be consecutive "
                         "layers in order (e.g. [-2, -1])")
    digest = ",".join(w.digest for w in all_weights)
    if spec.digest and digest != spec.digest and not _tensors_only_match(all_weights, spec.digest):
        raise ValueError(
            f"the cached block for {source} layer {indices} has digest {digest[:12]}, but this "
            f"checkpoint was trained with {spec.digest[:12]}: the source changed (another revision, file or place). "
            f"Extract the original (`timm-rllm extract {source} --layer N --revision ...`) "
            "or pass llm_source= pointing at it."
        )
    blocks = [build_block(w, causal=spec.causal, rope=spec.rope, dtype=dtype, freeze=not spec.trainable)
              for w in all_weights]
    first = all_weights[0]
    info.update(
        source=first.source, revision=first.revision, layer=indices[0] if len(indices) == 1 else indices,
        num_layers=first.num_layers, digest=digest, license=first.license or preset.license, random_weights=False,
        cached_dtype=str(first.tensors["mlp.down_proj.weight"].dtype).removeprefix("torch."),  # e.g. bf16 from the Hub
        digest_checked=bool(spec.digest),  # the caller named the block it expects, and this is it
    )
    return (blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks)), info


def _tensors_only_match(all_weights: list[BlockWeights], digest: str) -> bool:
    """Checkpoints exported before cache format 2 recorded digests of the tensors alone; the cache entry's
    own digest (now covering its config too) was checked when it was loaded."""
    return ",".join(tensor_digest(w.tensors) for w in all_weights) == digest


def check_fits(cfg: LlmBlockConfig, preset: LlmPreset, source: str) -> None:
    wrong = [f for f in SHAPE_FIELDS if getattr(cfg, f) != getattr(preset.config, f)]
    if wrong:
        detail = ", ".join(f"{f}={getattr(cfg, f)} (expected {getattr(preset.config, f)})" for f in wrong)
        raise ValueError(
            f"the block from {source} does not fit the '{preset.name}' models: {detail}. "
            f"Use the models of the LLM it comes from, or add a preset for it in timm_rllm.llm.presets."
        )

logger = logging.getLogger(__name__)
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def canonical_source(source: str) -> str:
    """Local paths become absolute, so one file or folder has one cache entry."""
    if source.startswith(EMBEDDED_PREFIX):
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def is_hub_repo_id(source: str) -> bool:
    return bool(HUB_REPO_ID.match(source)) and not Path(source).expanduser().exists()


def get_block_weights(
    source: str,
    layer: int = -1,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    progress: bool = False,
) -> BlockWeights:
    """A decoder layer from the block cache, extracting it from its source on first use.

    ``source``: ``embedded:NAME``, a Hub repo id (only the layer's bytes are fetched), a local
    Hugging Face folder, a Meta ``consolidated.00.pth`` (or its folder), or a .gguf file.
    ``dtype`` converts on extraction; ``"keep"`` keeps the source's precision; None (the default) keeps it
    for local sources and stores Hub downloads in bf16 (half the bytes on disk; the frozen block runs in bf16
    by default anyway). An entry already cached is returned as it is: its ``tensors`` say their dtype.
    """
    source = canonical_source(source)
    cache = BlockCache(cache_dir)
    entry = cache.find(source, layer, revision)
    if entry is not None and entry.current:
        return cache.load(entry)
    with cache.lock(source, layer):
        entry = cache.find(source, layer, revision)  # another process may have extracted it meanwhile
        if entry is not None and entry.current:
            return cache.load(entry)
        if entry is not None:  # an older cache format, whose digest did not cover the config: extract again
            logger.warning("%s was written by an older timm-rllm (cache format %s); extracting it again",
                           entry.path, entry.metadata.get("format_version"))
        if is_hub_repo_id(source):
            hub_dtype = None if dtype == KEEP else (dtype or torch.bfloat16)
            weights = read_hub(source, layer, revision, dtype=hub_dtype, progress=progress)
        else:
            weights = read_layer(source, layer, cache_dir=cache.root)
            if dtype not in (None, KEEP):
                weights.tensors = {k: v.to(dtype) for k, v in weights.tensors.items()}
        weights.digest = cache.save(weights).metadata["digest"]
    return weights


def build_block(
    weights: BlockWeights, causal: bool = False, rope: bool = False, dtype: torch.dtype = torch.float32,
    freeze: bool = True,
) -> LlmBlock:
    """An `LlmBlock` holding ``weights`` (built on the meta device: no throwaway init), its projections stored
    in ``dtype`` and its norms in fp32; frozen (buffers, see `freeze_`) unless ``freeze=False``."""
    with torch.device("meta"):
        block = LlmBlock(weights.config, causal=causal, rope=rope)
    tensors = {k: v.float() if "norm" in k else v.to(dtype) for k, v in weights.tensors.items()}
    block.load_state_dict(tensors, strict=True, assign=True)
    return freeze_(block) if freeze else block


def random_block(
    cfg: LlmBlockConfig, causal: bool = False, rope: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0,
    freeze: bool = True,
) -> LlmBlock:
    """An ablation control: the same shapes with random weights (normal, std 0.02, as LLaMA's init), drawn from
    their own generator seeded with ``seed``: the same block every time it is built (a checkpoint trained with it
    is restored with it; the block is not saved), and the training run's own random stream is left untouched."""
    block = LlmBlock(cfg, causal=causal, rope=rope)
    generator = torch.Generator().manual_seed(seed)
    for module in block.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02, generator=generator)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    block.cast_frozen(dtype)
    return freeze_(block) if freeze else block
