"""Build timm models from a model config (acquisition) and from an acquired `model.json` (analysis rules).

Three sources:
- `timm`: pretrained weights from the hub by name through timm's normal cache (HF_HOME);
- `checkpoint`: a local file (.pth/.pt/.bin/.safetensors) loaded into a timm architecture by timm's loader,
  through the architecture's own checkpoint filter as timm's pretrained path does (a ViT checkpoint loads at
  another `kwargs.img_size`: its position embeddings are resampled);
- `train`: a timm architecture trained here (`seelike.models.train`), weights saved as safetensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seelike.io import read_json
from seelike.models.surgery import apply_surgery


class ModelConfigError(ValueError):
    """A model entry in the config cannot be built (unknown architecture, missing file, offline hub)."""


def disable_fused_attention(model: nn.Module) -> nn.Module:
    """Let `attn.attn_drop` see (B, heads, N, N) probabilities: fused SDPA hides them. Models are built with
    timm's setting (`create_model`); the analyses that read probabilities (attention distance, head subsets)
    switch fused attention off on their own modules for their pass, and `seelike.device.exact_fp32` computes
    fused attention on SDPA's math backend, so the other analyses get the same fp32 numbers either way."""
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
        try:  # as timm's pretrained path: the architecture's filter adapts e.g. pos_embed to img_size
            timm.models.load_checkpoint(
                model,
                str(path),
                strict=bool(spec.get("strict", True)),
                filter_fn=checkpoint_filter(arch, model),
            )
        except Exception as e:  # a strict-load RuntimeError, or a filter that cannot read the dict
            raise ModelConfigError(
                f"checkpoint {str(path)!r} does not fit architecture {arch!r} with kwargs {kwargs}: "
                f"{type(e).__name__}: {e}"
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
    built = built_input_size(model)
    cfg = model.pretrained_cfg or {}
    if built is not None and tuple(cfg.get("input_size", ())) != built:
        # built for another size (kwargs.img_size): preprocess at that size, the rest of the
        # pretrained config (crop_pct, mean, std, interpolation) stays
        _update_cfg(model, {"input_size": built})
    overlay = spec.get("data_config")
    if overlay:
        _update_cfg(model, _as_tuples(overlay))
    return model


def _as_tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _update_cfg(model: nn.Module, update: dict[str, Any]) -> None:
    """Update the config timm's `resolve_data_config` reads (`pretrained_cfg`; `default_cfg` is its
    alias in timm and is kept pointing at the same dict)."""
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}), **update}
    model.default_cfg = model.pretrained_cfg


def checkpoint_filter(arch: str, model: nn.Module) -> Callable | None:
    """The architecture's own checkpoint filter, the one timm's pretrained loading applies: the
    `checkpoint_filter_fn` of the module that registers `arch` (e.g. timm.models.vision_transformer's,
    which resamples pos_embed to the model's grid), else of the module defining the model's class;
    None (load as is) where neither has one (ResNet, EfficientNet)."""
    import importlib

    import timm

    base = arch.split(".")[0]
    names = [timm.models.model_entrypoint(base).__module__] if timm.is_model(base) else []
    names.append(type(model).__module__)
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        fn = getattr(module, "checkpoint_filter_fn", None)
        if callable(fn):
            return fn
    return None


def built_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """(C, H, W) the model was built for, where it has one (a patch embedding with `img_size`, i.e. a
    ViT-like model; `kwargs.img_size` sets it); None for models without (CNNs)."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        return None
    chans = getattr(getattr(pe, "proj", None), "in_channels", None)
    if chans is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        chans = cfg.get("input_size", (3, 0, 0))[0]
    return (int(chans), int(size[0]), int(size[1]))


def fixed_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The only input size the model accepts, for a ViT-like model that refuses others (timm's patch
    embedding with `strict_img_size` and no `dynamic_img_size`); None when it is not fixed that way."""
    pe = getattr(model, "patch_embed", None)
    if getattr(model, "dynamic_img_size", False) or not getattr(pe, "strict_img_size", False):
        return None
    return built_input_size(model)


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
