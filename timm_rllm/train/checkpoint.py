"""Training checkpoints that load without unpickling code.

A checkpoint holds tensors and plain containers only (dict, list, tuple, str, int, float, bool,
None), so it always loads with ``torch.load(weights_only=True)``: a file whose unpickling would
run code (a planted ``__reduce__``) is refused before anything runs. RNG states are stored in
that form too (numpy's state as a tensor plus plain values).
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated, unsafe, or not ours."""


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by `timm-rllm train`, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (or is not a file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # torch refused a global: a pickle that would run code
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers; refusing to unpickle it (that could "
                "run code). Use checkpoints written by this version of `timm-rllm train` (older ones: train again)"
            ) from e
        raise CheckpointError(f"{path} is not a readable checkpoint ({e}); delete it and train again") from e
    except Exception as e:  # truncated or damaged files fail in many ways (zip, struct, key errors)
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or damaged: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); delete it and train again (or use "
                              "--no-resume)") from e
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint written by `timm-rllm train`")
    return state


def rng_state(loader: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "loader": loader.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any], loader: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader.set_state(state["loader"])
    if state.get("cuda") and torch.cuda.is_available():  # dropout / drop-path on the GPU draw from these
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
