"""Build timm models from a model config (acquisition) and from an acquired `model.json` (analysis rules).

Three sources:
- `timm`: pretrained weights from the hub by name through timm's normal cache (HF_HOME);
- `checkpoint`: a local file (.pth/.pt/.bin/.safetensors) loaded into a timm architecture by timm's loader;
- `train`: a timm architecture trained here (`seelike.models.train`), weights saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from seelike.io import read_json
from seelike.models.surgery import apply_surgery

SOURCES = ("timm", "checkpoint", "train")


class ModelConfigError(ValueError):
    """A model entry in the config cannot be built (unknown architecture, missing file, offline hub)."""


def disable_fused_attention(model: nn.Module) -> nn.Module:
    """Let `attn.attn_drop` see (B, heads, N, N) probabilities: fused SDPA hides them."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


def _check_arch(arch: str) -> None:
    import timm

    base = arch.split(".")[0]
    if not timm.is_model(base):
        close = timm.list_models(f"*{base.split('_')[0]}*")[:8]
        raise ModelConfigError(
            f"unknown timm architecture {arch!r}; check the spelling (`timm.list_models('*{base.split('_')[0]}*')`"
            f" lists e.g. {close})"
        )


def create_model(spec: dict[str, Any], weights: str | Path | None = None) -> nn.Module:
    """A timm model for a model spec (source, arch, kwargs); `weights` overrides for trained models."""
    import timm

    arch, kwargs, source = spec["arch"], dict(spec.get("kwargs") or {}), spec["source"]
    _check_arch(arch)
    if source == "timm" and weights is None:
        try:
            model = timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as e:  # offline, gated or missing weights: say how to supply them
            raise ModelConfigError(
                f"could not get pretrained weights for {arch!r} from the hub ({type(e).__name__}: {e}). "
                "Without network access: download them elsewhere into the Hugging Face cache "
                "(`huggingface-cli download timm/<name>` with the same HF_HOME), or save them to a file and use "
                "`source: checkpoint` with `path: <file>` and the same `arch`."
            ) from e
    elif source == "checkpoint" and weights is None:
        path = Path(spec["path"]).expanduser()
        if not path.is_file():
            raise ModelConfigError(
                f"checkpoint file {str(path)!r} does not exist; fix models.<name>.path"
            )
        model = timm.create_model(arch, pretrained=False, **kwargs)
        try:
            timm.models.load_checkpoint(model, str(path), strict=bool(spec.get("strict", True)))
        except RuntimeError as e:
            raise ModelConfigError(
                f"checkpoint {str(path)!r} does not fit architecture {arch!r} with kwargs {kwargs}: {e}"
            ) from e
    else:
        model = timm.create_model(arch, pretrained=False, **kwargs)
        if weights is not None:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(weights)))
    try:
        apply_surgery(model, spec)
    except ValueError as e:
        raise ModelConfigError(f"model {spec.get('name', arch)!r}: {e}") from e
    overlay = spec.get("data_config")
    if overlay:
        model.pretrained_cfg = {**(model.pretrained_cfg or {}), **_as_tuples(overlay)}
    return disable_fused_attention(model)


def _as_tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def resolve_data_config(model: nn.Module) -> dict[str, Any]:
    """timm's preprocessing settings for this model (input size, mean, std, crop, interpolation)."""
    from timm.data import resolve_data_config as _resolve

    cfg = _resolve({}, model=model)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def load_model(
    model_json: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The acquired model in eval mode on `device`, and its info (name, arch, source, data_config, ...)."""
    model_json = Path(model_json)
    info = read_json(model_json)
    weights = info.get("weights")
    if weights:
        weights = model_json.parent / weights
    model = create_model(info, weights=weights)
    return model.eval().to(device), info
