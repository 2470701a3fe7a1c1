"""The R-LLM booster stage: W_in -> frozen LLM block -> unit-gain RMSNorm -> residual -> W_out."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .llm_block import RMSNorm

RESIDUAL_MODES = ("inner", "outer", "hybrid", "none", "mlp", "linear", "aux")
BLOCK_FREE_MODES = ("mlp", "linear")  # controls without an LLM block
# Each mode's formula (z: tokens in, h = W_in z, u = norm(block(h))), recorded in the model's llm_info.
FORMULAS = {
    "inner": "W_out(u + h)",
    "outer": "W_out(u) + z",
    "hybrid": "W_out(u + h) + z",
    "none": "W_out(u)",
    "mlp": "W_out(h) + z",
    "linear": "W_out(h)",
    # train with the block, deploy without it (Bai et al., AAAI 2025): the booster feeds a second head in training
    "aux": "z to the head; head_aux(W_out(u + h)) only in training, weighted in the loss",
}


def block_id(digest: str) -> torch.Tensor:
    """A block's identity as a small tensor: the 256 bits of sha256 of its digest (comma-joined for a stack, or
    "random"). Bits as bool survive any EMA: timm's ModelEmaV2 averages every state_dict entry, integers too
    (d * x + (1 - d) * x is not always x in floating point, but it is nonzero exactly when x is)."""
    bits = [(byte >> i) & 1 for byte in hashlib.sha256(digest.encode()).digest() for i in range(8)]
    return torch.tensor(bits, dtype=torch.bool, device="cpu")  # the booster follows the model's device later


def _check_block_id(module: Booster, state_dict: dict, prefix: str, *args) -> None:
    theirs, ours = state_dict.get(prefix + "llm_id"), module.llm_id
    if theirs is None or "meta" in (theirs.device.type, ours.device.type) or torch.equal(theirs.to(ours.device), ours):
        return
    info = module.info
    what = ("a random block (an ablation control)" if info.get("random_weights") else
            f"{info.get('source')} layer {info.get('layer')} (digest {str(info.get('digest'))[:12]})")
    raise ValueError(f"this checkpoint was trained with another LLM block than this model's {what}: create the model "
                     "with the llm_source / llm_layer the checkpoint was trained with")


class Booster(nn.Module):
    """Tokens (B, N, dim) -> (B, N, dim) through one frozen LLM block (an `LlmBlock`, or a stack of
    consecutive ones in an nn.Sequential).

    Modes (SPEC table, h = W_in z, u = norm(block(h))):
      inner  W_out(u + h)        the R-LLM default
      outer  W_out(u) + z
      hybrid W_out(u + h) + z
      none   W_out(u)            Pang et al.
      mlp    W_out(h) + z        the paper's capacity control (its 2D reference code): the adapters with
                                 the outer skip, no LLM block
      linear W_out(h)            block-free ablation of `inner`: the adapters alone, no skip, no block
      aux    W_out(u + h)        as `inner`, but on a side branch: the model runs it (and a second head) only in
                                 training, so the deployed model is the plain backbone
    """

    def __init__(
        self, dim: int, block: nn.Module | None, llm_dim: int, residual: str = "inner", info: dict | None = None
    ) -> None:
        super().__init__()
        if residual not in RESIDUAL_MODES:
            raise ValueError(f"unknown residual mode {residual!r}; choose one of {', '.join(RESIDUAL_MODES)}")
        if (block is None) != (residual in BLOCK_FREE_MODES):
            raise ValueError("the 'mlp' and 'linear' controls take no LLM block; every other mode needs one")
        self.residual = residual
        self.info = dict(info or {})  # where the block came from, shown in the repr
        self.w_in = nn.Linear(dim, llm_dim, bias=False)
        self.block = block
        # The block's output scale is arbitrary; a fixed unit-gain norm (not from the LLM) tames it.
        self.norm = RMSNorm(llm_dim, eps=1e-6, affine=False) if block is not None else nn.Identity()
        self.w_out = nn.Linear(llm_dim, dim, bias=False)
        if block is not None:
            # The block is not in the state_dict (its tensors are frozen buffers, re-attached from the cache), but
            # which block it is travels with every checkpoint: 32 bytes, checked when a state_dict is loaded.
            self.register_buffer("llm_id", block_id(self.info.get("digest") or "random"))
            self.register_load_state_dict_pre_hook(_check_block_id)

    def forward(self, z: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        h = self.w_in(z)
        if self.block is None:
            return self.w_out(h) + z if self.residual == "mlp" else self.w_out(h)
        u = h
        for block in self.block if isinstance(self.block, nn.Sequential) else (self.block,):  # a stack in order
            u = block(u, attn_mask, is_causal)
        u = self.norm(u)
        if self.residual in ("inner", "hybrid", "aux"):
            u = u + h
        out = self.w_out(u)
        if self.residual in ("outer", "hybrid"):
            out = out + z
        return out

    def extra_repr(self) -> str:
        if self.info.get("random_weights"):
            return f"residual={self.residual!r}, llm={self.info.get('llm')}, RANDOM WEIGHTS (ablation control)"
        shown = {k: self.info[k] for k in ("llm", "source", "layer", "digest", "cached_dtype", "license")
                 if self.info.get(k)}
        if "digest" in shown:
            shown["digest"] = shown["digest"][:12]
        return ", ".join([f"residual={self.residual!r}"] + [f"{k}={v}" for k, v in shown.items()])
