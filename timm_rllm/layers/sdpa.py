"""Which `F.scaled_dot_product_attention` kernel runs, chosen from measurements.

On CPU under bf16, PyTorch's flash kernel is 2-4x slower than its math kernel at the sequence
lengths of MedMNIST ViTs (50-200 tokens), forward and backward together; a ViT-Tiny training step
runs ~1.6x faster with the math kernel (``python benchmarks/speed_bench.py``, table
``attention kernels``). Elsewhere PyTorch's own choice (flash / memory-efficient on CUDA) stands.
"""

from __future__ import annotations

import contextlib

from torch.nn.attention import SDPBackend, sdpa_kernel

SDPA_CHOICES = ("auto", "default", "math", "flash")


def sdpa_context(choice: str, device_type: str, bf16: bool) -> contextlib.AbstractContextManager:
    """A context that restricts the attention kernels: ``auto`` (math on CPU in bf16, else PyTorch's
    choice), ``default`` (PyTorch's choice), ``math`` or ``flash``."""
    if choice not in SDPA_CHOICES:
        raise ValueError(f"unknown attention kernel choice {choice!r}; choose one of {', '.join(SDPA_CHOICES)}")
    if choice == "auto":
        choice = "math" if device_type == "cpu" and bf16 else "default"
    if choice == "default":
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH if choice == "math" else SDPBackend.FLASH_ATTENTION)
