"""Device choice and the exact-fp32 context the Gram matrices need."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def pick_device(pref: str = "auto") -> torch.device:
    """`auto` → cuda when present, else cpu; `cuda`/`cuda:N`/`cpu` are taken as given (cuda checked)."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{pref}' requested but no CUDA device is visible; set `device: auto` or `cpu` in the config"
        )
    return torch.device(pref)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off and autocast off: Grams are computed in true fp32 (PAPER.md pitfalls)."""
    old_mm = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    old_prec = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_mm
        torch.backends.cudnn.allow_tf32 = old_cudnn
        torch.set_float32_matmul_precision(old_prec)
