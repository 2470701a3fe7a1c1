"""The LLM families this project can take a block from, and how their checkpoints name things.

A family is one row of ``FAMILIES``; a checkpoint format is one key map. Adding a family
means adding a row (and, if its layer has other tensors, their names in the key maps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ..layers.llm_block import LlmBlock, LlmBlockConfig


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # the `model_type` values of Hugging Face config.json files
    gguf_archs: tuple[str, ...]  # the `general.architecture` values of GGUF files
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    hidden_act: str = "silu"
    qk_norm: bool = False
    sandwich_norm: bool = False
    norm_offset: float = 0.0  # Hugging Face norm weights mean (offset + weight)
    gguf_permuted_qk: bool = False  # llama.cpp stores q/k rows in its own rotary order
    gguf_norm_offset: float = 0.0  # llama.cpp stores norm weights plus this (Gemma: the +1 folded in)
    gguf_key_overrides: tuple[tuple[str, str], ...] = ()  # GGUF names that mean something else here
    license: str = ""


_GEMMA_GGUF_NAMES = (
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_attention_norm.weight", "post_attention_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # LLaMA 1/2/3, SmolLM2 and TinyLlama all use the llama architecture.
        Family("llama", ("llama",), ("llama",), gguf_permuted_qk=True),
        Family("mistral", ("mistral",), (), gguf_permuted_qk=True),
        Family("qwen2", ("qwen2",), ("qwen2",), attention_bias=True),
        Family("gemma3", ("gemma3_text", "gemma3"), ("gemma3",), hidden_act="gelu_tanh", qk_norm=True,
               sandwich_norm=True, norm_offset=1.0, gguf_norm_offset=1.0, gguf_key_overrides=_GEMMA_GGUF_NAMES,
               license="gemma (Gemma Terms of Use, https://ai.google.dev/gemma/terms)"),
    )
}

# Decoder-layer tensor names per checkpoint format, mapped to the Hugging Face names that
# `LlmBlock` uses. Hugging Face checkpoints need only a prefix.
HF_LAYER_PREFIX = "model.layers.{layer}."
# multimodal checkpoints (Gemma 3 4B+, ...) keep the language model under another prefix
HF_LAYER_PREFIXES = (HF_LAYER_PREFIX, "model.language_model.layers.{layer}.", "language_model.model.layers.{layer}.")


def hf_layer_prefix(names: Iterable[str], layer: int) -> str:
    """The prefix under which this checkpoint keeps decoder layer ``layer``."""
    names = list(names)
    for template in HF_LAYER_PREFIXES:
        prefix = template.format(layer=layer)
        if any(n.startswith(prefix) for n in names):
            return prefix
    return HF_LAYER_PREFIX.format(layer=layer)
GGUF_LAYER_PREFIX = "blk.{layer}."
GGUF_KEY_MAP = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}


def gguf_key_map(family: Family) -> dict[str, str]:
    return {**GGUF_KEY_MAP, **dict(family.gguf_key_overrides)}

# Meta's original checkpoints (consolidated.*.pth + params.json), as the R-LLM authors loaded them.
META_LAYER_PREFIX = "layers.{layer}."
META_KEY_MAP = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}


class UnsupportedLlmError(ValueError):
    """The checkpoint's architecture is not one of ``FAMILIES``."""


def _family_for(value: str, attr: str) -> Family:
    for family in FAMILIES.values():
        if value in getattr(family, attr):
            return family
    known = sorted({v for f in FAMILIES.values() for v in getattr(f, attr)})
    raise UnsupportedLlmError(
        f"unsupported LLM architecture {value!r}; supported: {', '.join(known)}. "
        "Add a row to timm_rllm.llm.families.FAMILIES to support another LLaMA-like family."
    )


def _family_fields(family: Family) -> dict[str, Any]:
    return dict(family=family.name, qk_norm=family.qk_norm, sandwich_norm=family.sandwich_norm,
                norm_offset=family.norm_offset)


def config_from_hf(config: dict[str, Any]) -> tuple[LlmBlockConfig, int]:
    """Block config and number of layers from a Hugging Face ``config.json`` dict."""
    config = config.get("text_config", config)  # multimodal wrappers (Gemma 3 4B+) nest the LLM
    family = _family_for(config.get("model_type", "<missing model_type>"), "model_types")
    heads = config["num_attention_heads"]
    block = LlmBlockConfig(
        **_family_fields(family),
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_attention_heads=heads,
        num_key_value_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        rms_norm_eps=config.get("rms_norm_eps", 1e-6),
        attention_bias=config.get("attention_bias", family.attention_bias),
        hidden_act=config.get("hidden_act") or config.get("hidden_activation") or family.hidden_act,
        rope_theta=config.get("rope_theta", 10000.0),
        query_pre_attn_scalar=config.get("query_pre_attn_scalar"),
    )
    return block, config["num_hidden_layers"]


def config_from_gguf(fields: dict[str, Any], has_bias: bool) -> tuple[LlmBlockConfig, int]:
    """Block config and number of layers from GGUF metadata (``{arch}.*`` fields)."""
    arch = fields["general.architecture"]
    family = _family_for(arch, "gguf_archs")
    hidden = fields[f"{arch}.embedding_length"]
    heads = fields[f"{arch}.attention.head_count"]
    block = LlmBlockConfig(
        **_family_fields(family),
        hidden_size=hidden,
        intermediate_size=fields[f"{arch}.feed_forward_length"],
        num_attention_heads=heads,
        num_key_value_heads=fields.get(f"{arch}.attention.head_count_kv", heads),
        head_dim=fields.get(f"{arch}.attention.key_length", hidden // heads),
        rms_norm_eps=fields[f"{arch}.attention.layer_norm_rms_epsilon"],
        attention_bias=has_bias,
        hidden_act=family.hidden_act,
        rope_theta=fields.get(f"{arch}.rope.freq_base", 10000.0),
    )
    return block, fields[f"{arch}.block_count"]


def config_from_meta(params: dict[str, Any]) -> tuple[LlmBlockConfig, int]:
    """Block config and number of layers from Meta's ``params.json`` (LLaMA 1/2/3)."""
    dim, heads = params["dim"], params["n_heads"]
    hidden = int(2 * 4 * dim / 3 * (params.get("ffn_dim_multiplier") or 1.0))
    multiple = params.get("multiple_of", 256)
    block = LlmBlockConfig(
        family="llama",
        hidden_size=dim,
        intermediate_size=multiple * ((hidden + multiple - 1) // multiple),
        num_attention_heads=heads,
        num_key_value_heads=params.get("n_kv_heads") or heads,
        head_dim=dim // heads,
        rms_norm_eps=params.get("norm_eps", 1e-6),
        rope_theta=params.get("rope_theta", 10000.0),
    )
    return block, params["n_layers"]


def resolve_layer(layer: int, num_layers: int) -> int:
    """A layer index, negative ones counted from the end (-1 is the last)."""
    if not -num_layers <= layer < num_layers:
        raise IndexError(
            f"layer {layer} is out of range for an LLM with {num_layers} layers "
            f"(valid: 0..{num_layers - 1}, or -{num_layers}..-1 counted from the end)"
        )
    return layer % num_layers


def expected_shapes(cfg: LlmBlockConfig) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes an `LlmBlock` of this config holds."""
    with torch.device("meta"):
        block = LlmBlock(cfg)
    return {name: tuple(t.shape) for name, t in block.state_dict().items()}


def check_tensors(tensors: dict[str, torch.Tensor], cfg: LlmBlockConfig, where: str) -> None:
    """Fail with a clear message unless ``tensors`` are exactly the block's tensors."""
    shapes = expected_shapes(cfg)
    missing = sorted(set(shapes) - set(tensors))
    extra = sorted(set(tensors) - set(shapes))
    if missing or extra:
        raise ValueError(
            f"{where}: tensors do not match a {cfg.family} decoder layer "
            f"(missing: {missing or 'none'}; unexpected: {extra or 'none'})"
        )
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{where}: {name} has shape {tuple(tensors[name].shape)}, the config says {shape}"
            )
