"""One decoder layer of a LLaMA-family LLM, run on visual tokens.

Module names mirror the Hugging Face checkpoint keys of a decoder layer
(``input_layernorm``, ``self_attn.q_proj`` ...), so loading weights is a key map, not code.
By default every token sees every token (no mask) and no rotary embedding is applied, as
the R-LLM reference code runs the block; both are options.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "silu": F.silu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),  # the Hugging Face name of the same
}


@dataclass(frozen=True)
class LlmBlockConfig:
    """Sizes of one decoder layer, read from the checkpoint's own config."""

    family: str
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    attention_bias: bool = False
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    qk_norm: bool = False  # RMSNorm on each head's q and k (Gemma 3)
    sandwich_norm: bool = False  # norms after attention and MLP too (Gemma 3)
    norm_offset: float = 0.0  # norms scale by (offset + weight): Gemma stores weight - 1
    query_pre_attn_scalar: float | None = None  # attention scale is its -1/2 power (default head_dim)

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; known: {sorted(_ACTIVATIONS)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlmBlockConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32, scaled by ``offset + weight`` (offset 1 for Gemma's convention);
    ``affine=False`` gives a fixed unit gain."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True, offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - offset)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * (self.weight.float() + self.offset)
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, affine={self.weight is not None}" + (f", offset={self.offset}" if self.offset else "")


def rotary_cos_sin(
    seq_len: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of the Hugging Face (rotate-half) rotary layout for positions 0..seq_len-1."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class LlmAttention(nn.Module):
    """Grouped-query self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, cfg: LlmBlockConfig, causal: bool = False, rope: bool = False) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.rope_theta = cfg.rope_theta
        self.causal = causal
        self.rope = rope
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, offset=cfg.norm_offset)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps, offset=cfg.norm_offset)
        else:
            self.q_norm = self.k_norm = None
        self.scale = cfg.query_pre_attn_scalar**-0.5 if cfg.query_pre_attn_scalar else None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, N, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            cos, sin = rotary_cos_sin(N, self.head_dim, self.rope_theta, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=self.causal or is_causal, scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))  # explicit: B may be 0

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, causal={self.causal}, rope={self.rope}"


class LlmMlp(nn.Module):
    """Gated MLP: ``down(act(gate(x)) * up(x))`` (SwiGLU for LLaMA)."""

    def __init__(self, cfg: LlmBlockConfig) -> None:
        super().__init__()
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def compute_input(x: torch.Tensor, weight_dtype: torch.dtype) -> torch.Tensor:
    """The block's input in the dtype it computes in: autocast decides when it is on; without it, tokens are
    cast to the stored weights' dtype (e.g. fp32 tokens into a bf16-stored block)."""
    try:
        autocast = torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # device types without autocast (meta)
        autocast = False
    return x if autocast or x.dtype == weight_dtype else x.to(weight_dtype)


torch.fx.wrap("compute_input")  # one leaf call in fx graphs: it branches on dtypes and autocast state


class LlmBlock(nn.Module):
    """Pre-norm decoder layer: x + attn(norm(x)), then + mlp(norm(.)).

    With ``sandwich_norm`` (Gemma 3) the attention and MLP outputs are normed too; the names
    follow the checkpoints: there ``post_attention_layernorm`` norms the attention output and
    ``pre_feedforward_layernorm`` the MLP input, while in LLaMA ``post_attention_layernorm`` is
    the MLP's input norm.
    """

    def __init__(self, cfg: LlmBlockConfig, causal: bool = False, rope: bool = False) -> None:
        super().__init__()
        self.config = cfg
        norm = lambda: RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, offset=cfg.norm_offset)
        self.input_layernorm = norm()
        self.self_attn = LlmAttention(cfg, causal=causal, rope=rope)
        self.post_attention_layernorm = norm()
        if cfg.sandwich_norm:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()
        self.mlp = LlmMlp(cfg)

    def frozen_tensors(self) -> dict[str, torch.Tensor]:
        """The block's tensors under their checkpoint names, frozen (buffers) or not (parameters)."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def cast_frozen(self, dtype: torch.dtype) -> LlmBlock:
        """Store the projection matrices (and biases) in ``dtype``, the norms stay fp32: with bf16 a
        frozen block takes half the memory and autocast has nothing to cast in every step."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)
        return self

    def __prepare_scriptable__(self) -> LlmBlock:
        raise RuntimeError("TorchScript (torch.jit.script) is not supported by the LLM block (TorchScript is "
                           "deprecated in PyTorch): use torch.export, torch.compile or torch.fx instead")

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """``attn_mask``/``is_causal`` as in ``F.scaled_dot_product_attention``, over the same tokens (the ViT's)."""
        return self._forward(compute_input(x, self.mlp.down_proj.weight.dtype), attn_mask, is_causal).to(x.dtype)

    def _forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        if self.config.sandwich_norm:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), attn_mask, is_causal))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), attn_mask, is_causal)
        return x + self.mlp(self.post_attention_layernorm(x))


def freeze_(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a non-persistent buffer, in place.

    A frozen LLM block is then outside everything that handles trainable state: the model's state_dict
    and checkpoints (the block is re-attached from its cache, identified by its digest), optimizers,
    gradient checks and parameter counts, and EMA (timm's ModelEmaV2/V3 average the state_dict, or
    copy buffers unchanged), so the block stays bit-identical whatever a training pipeline does. It
    still moves with ``.to()`` and still passes gradients to its input."""
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            del sub._parameters[name]
            sub.register_buffer(name, param.detach(), persistent=False)
    return module
