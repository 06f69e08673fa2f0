"""Device choice and the exact-fp32 context every analysis entry function runs under.

Every device default is chosen here: `pick_device` reads a configured name (`auto` → cuda when present),
`analysis_device` gives an analysis its device (the one asked for, else the model's, else cpu) and
`place_model` puts the analysed model there in eval mode.

`exact_fp32()` is a context manager and, as `@exact_fp32()`, a decorator: the analyses in `seelike.analyses`
and `seelike.api.compare` apply it themselves, so no caller (rule, notebook, test) has to remember it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def pick_device(pref: str = "auto") -> torch.device:
    """`auto` → cuda when present, else cpu; `cuda`/`cuda:N`/`cpu` are taken as given (cuda checked)."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{pref}' requested but no CUDA device is visible; set `device: auto` or `cpu` in the config"
        )
    return torch.device(pref)


def analysis_device(
    device: str | torch.device | None = None, model: torch.nn.Module | None = None
) -> torch.device:
    """The device an analysis runs on: `device` when given (a name as `pick_device` reads it — auto, cpu, cuda,
    cuda:N — or a torch.device), else the device of `model`'s parameters (where its caller put it), else cpu
    (no model, or one without parameters)."""
    if isinstance(device, torch.device):
        return device
    if device is not None:
        return pick_device(str(device))
    if model is not None:
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


def place_model(model: torch.nn.Module, device: str | torch.device | None = None) -> torch.device:
    """`analysis_device(device, model)`, with `model` moved there and in eval mode (no analysis reads a model
    in training mode: dropout, batch statistics)."""
    dev = analysis_device(device, model)
    model.eval().to(dev)
    return dev


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """True fp32 inside: TF32 off (matmuls and cuDNN convolutions), autocast off, and fused attention
    (`F.scaled_dot_product_attention`, timm's `fused_attn`) on its math backend only.

    The flash / memory-efficient SDPA kernels do not follow the TF32 flags (the CUDA memory-efficient kernel
    multiplies fp32 with emulated tensor-core products, the CPU flash kernel reorders the softmax sums), so
    pinning the math backend makes a fused timm attention compute the same fp32 products as the unfused path:
    models keep timm's `fused_attn` setting and still give exact-fp32 activations here."""
    old_mm = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    old_prec = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        with (
            torch.autocast("cuda", enabled=False),
            torch.autocast("cpu", enabled=False),
            sdpa_kernel(SDPBackend.MATH),
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_mm
        torch.backends.cudnn.allow_tf32 = old_cudnn
        torch.set_float32_matmul_precision(old_prec)
