"""Build models from a model config (acquisition) and from an acquired `model.json` (analysis rules).

Four sources:
- `timm`: pretrained weights from the hub by name through timm's normal cache (HF_HOME);
- `checkpoint`: a local file (.pth/.pt/.bin/.safetensors) loaded into a timm architecture by timm's loader,
  through the architecture's own checkpoint filter as timm's pretrained path does (a ViT checkpoint loads at
  another `kwargs.img_size`: its position embeddings are resampled);
- `train`: a timm architecture trained here (`seelike.models.train`), weights saved as safetensors;
- `python`: any `nn.Module` from an import path `package.module:function` (`factory`, called with `kwargs`;
  torchvision, Hugging Face encoders, a lab's own code), optionally loading a state dict from `path`; its data
  config comes from the entry (`data_config`: input_size, mean, std at least) and its taps may be chosen by
  module-name patterns (`taps`). Acquisition saves its weights, which the analysis rules load.

`build_skeleton` builds any spec without weights (the meta device where the constructor allows it) for the
structural decisions of a dry run.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable, Sequence
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
    """The model of a model spec (source, arch or factory, kwargs, ...); `weights` (a safetensors file)
    overrides the source's own weights for trained and recorded models."""
    if spec["source"] == "python":
        model = _create_python_model(spec, weights)
    else:
        model = _create_timm_model(spec, weights)
    set_tap_patterns(model, spec)
    return model


def _create_timm_model(spec: dict[str, Any], weights: str | Path | None) -> nn.Module:
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
    _surgery(model, spec)
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


def _surgery(model: nn.Module, spec: dict[str, Any]) -> None:
    try:
        apply_surgery(model, spec)
    except ValueError as e:
        label = spec.get("name", spec.get("arch", spec.get("factory")))
        raise ModelConfigError(f"model {label!r}: {e}") from e


# ------------------------------------------------------------------------------------ source: python
# What a `source: python` model's preprocessing uses where its `data_config` leaves a setting out
# (input_size, mean and std have no default: they are required).
PYTHON_DATA_DEFAULTS: dict[str, Any] = {
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "crop_mode": "center",
}
PYTHON_DATA_REQUIRED = ("input_size", "mean", "std")


def _key(spec: dict[str, Any], field: str) -> str:
    return f"models.{spec.get('name') or '<name>'}.{field}"


def resolve_factory(spec: dict[str, Any]) -> Callable[..., Any]:
    """The callable `spec["factory"]` names (`package.module:function`; the part after the colon may be
    dotted, e.g. `transformers:AutoModel.from_pretrained`), imported. A ModelConfigError naming
    `models.<name>.factory`, the problem and the fix when the module does not import or lacks the name."""
    key, factory = _key(spec, "factory"), spec.get("factory")
    mod_name, _, attr = factory.partition(":") if isinstance(factory, str) else ("", "", "")
    if not (mod_name and attr) or ":" in attr:
        raise ModelConfigError(
            f"{key} is {factory!r}, not an import path 'package.module:function'; set it to the function "
            "(or class) that returns the model, e.g. 'torchvision.models:resnet18'"
        )
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or whatever the module raises while it is imported
        raise ModelConfigError(
            f"{key} {factory!r}: module {mod_name!r} does not import ({type(e).__name__}: {e}); fix the "
            "module path before the ':', install its package in the workflow's environment, or put the "
            "folder holding it on PYTHONPATH"
        ) from e
    obj: Any = module
    parts = attr.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            owner = ".".join([mod_name, *parts[:i]])
            public = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=5, cutoff=0.5)
            raise ModelConfigError(
                f"{key} {factory!r}: {owner!r} has no attribute {part!r}"
                + (f" (close names: {', '.join(close)})" if close else "")
                + "; fix the name after the ':' (the function or class that returns the model)"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelConfigError(
            f"{key} {factory!r} is of type {type(obj).__name__}, not a callable; name the function or class "
            "that returns the model"
        )
    return obj


def _call_factory(fn: Callable[..., Any], spec: dict[str, Any]) -> nn.Module:
    key, kwargs = _key(spec, "factory"), dict(spec.get("kwargs") or {})
    try:
        model = fn(**kwargs)
    except Exception as e:
        raise ModelConfigError(
            f"{key} {spec['factory']!r} raised {type(e).__name__}: {e} when called with kwargs {kwargs}; fix "
            f"{_key(spec, 'kwargs')} (passed to it as keyword arguments) or the factory"
        ) from e
    if not isinstance(model, nn.Module):
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        raise ModelConfigError(
            f"{key} {spec['factory']!r} returned a {kind}, not a torch.nn.Module; name a function or class "
            "that returns the model itself (wrap a builder returning e.g. (model, transform) in a function of "
            "your own that returns the model)"
        )
    return model


def build_python_model(spec: dict[str, Any]) -> nn.Module:
    """The `nn.Module` that `spec["factory"]` returns when called with `spec["kwargs"]`, on the CPU, as the
    factory leaves its weights (no state dict loaded, no data config set: `create_model` adds those)."""
    return _call_factory(resolve_factory(spec), spec)


def python_data_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing of a `source: python` model: its `data_config` over `PYTHON_DATA_DEFAULTS`;
    input_size, mean and std are required (a ModelConfigError naming the key otherwise)."""
    given = dict(spec.get("data_config") or {})
    missing = [k for k in PYTHON_DATA_REQUIRED if k not in given]
    if missing:
        raise ModelConfigError(
            f"{_key(spec, 'data_config')} lacks {missing}: a source: python model has no pretrained config "
            "to take its preprocessing from; give at least input_size, mean and std, e.g. data_config: "
            "{input_size: [3, 224, 224], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]} "
            "(interpolation defaults to bilinear, crop_pct to 1.0)"
        )
    return _as_tuples({**PYTHON_DATA_DEFAULTS, **given})


def _load_state_file(model: nn.Module, spec: dict[str, Any]) -> None:
    """Load the state dict at `spec["path"]` (.safetensors, .pth/.pt/.bin, a bare state dict or one under
    `state_dict` / `model`, `module.` prefixes dropped: timm's reader), strictly unless `strict: false`."""
    import timm

    path = Path(spec["path"]).expanduser()
    if not path.is_file():
        raise ModelConfigError(
            f"{_key(spec, 'path')} {str(path)!r} is not a file; fix it, or drop it to keep the factory's own "
            "weights"
        )
    try:
        timm.models.load_checkpoint(
            model, str(path), use_ema=False, strict=bool(spec.get("strict", True))
        )
    except Exception as e:
        raise ModelConfigError(
            f"{_key(spec, 'path')} {str(path)!r} does not fit the model of {spec['factory']!r} with kwargs "
            f"{spec.get('kwargs') or {}} ({type(e).__name__}: {e}); fix the file or the kwargs, or set "
            f"{_key(spec, 'strict')}: false to load the keys that match"
        ) from e


def _create_python_model(spec: dict[str, Any], weights: str | Path | None) -> nn.Module:
    data_config = python_data_config(spec)  # before the build: a config error costs nothing
    model = build_python_model(spec)
    if weights is not None:  # the weights acquisition saved (shared tensors kept shared)
        from safetensors.torch import load_model as load_safetensors

        load_safetensors(model, str(weights), strict=True)
    elif spec.get("path"):
        _load_state_file(model, spec)
    _surgery(model, spec)
    _update_cfg(model, data_config)
    return model


# ------------------------------------------------------------------------------------ tap patterns
def module_names(model: nn.Module) -> list[str]:
    """The dotted names of every submodule (`model.named_modules()`, the root left out), in definition order."""
    return [n for n, _ in model.named_modules() if n]


def match_tap_patterns(
    module_names: Sequence[str], patterns: Sequence[str]
) -> dict[str, list[str]]:
    """pattern → the module names it matches (fnmatch, case-sensitive, against the whole dotted name: `*`
    crosses dots, so `layer*` matches `layer1` and `layer1.0.conv1`, `layer?` only `layer1`...), in the
    order of `module_names`."""
    return {p: [n for n in module_names if fnmatch.fnmatchcase(n, p)] for p in patterns}


def unmatched_pattern_error(pattern: str, module_names: Sequence[str], key: str) -> str:
    """The message for a tap pattern that matches no module: the key, the pattern, close names, the fix."""
    literal = re.sub(r"[*?\[\]]", "", pattern)
    close = set(difflib.get_close_matches(literal, list(module_names), n=5, cutoff=0.5))
    close = [n for n in module_names if n in close]  # in the model's order
    if not close:
        close = [n for n in module_names if "." not in n][:8]
        hint = (
            f" (its top-level modules: {', '.join(close)})" if close else " (it has no submodules)"
        )
    else:
        hint = f" (close names: {', '.join(close)})"
    return (
        f"{key}: pattern {pattern!r} matches no module of the model{hint}; fix or drop the pattern. Patterns "
        "are fnmatch patterns matched against the dotted names of model.named_modules(): '*' also crosses "
        "dots ('layer*' matches every module under layer1..layer4), '?' is one character ('layer?' matches "
        "the stages only)"
    )


def check_tap_patterns(model: nn.Module, patterns: Sequence[str], key: str) -> dict[str, list[str]]:
    """`match_tap_patterns` over the model's module names; a ModelConfigError for the first pattern that
    matches nothing."""
    names = module_names(model)
    matched = match_tap_patterns(names, patterns)
    for pattern, hits in matched.items():
        if not hits:
            raise ModelConfigError(unmatched_pattern_error(pattern, names, key))
    return matched


def set_tap_patterns(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """With `spec["taps"]`: check every pattern matches a module and set `model.seelike_tap_patterns`
    (read by `seelike.models.taps.discover_taps`)."""
    patterns = spec.get("taps")
    if patterns:
        check_tap_patterns(model, patterns, _key(spec, "taps"))
        model.seelike_tap_patterns = list(patterns)
    return model


# ------------------------------------------------------------------------------------ skeletons
def build_skeleton(spec: dict[str, Any]) -> nn.Module:
    """The model of a spec without its weights, for structural decisions (tap family, tap names, module
    names) at parse time: built on the meta device (no memory, no weights, no network), or for real on the
    CPU where the constructor computes with tensors. timm: `timm.create_model(arch without its pretrained
    tag, pretrained=False, **kwargs)`; python: the factory called with its kwargs (a factory that loads
    weights itself may read them), with the data config it has and its tap patterns set. No surgery.
    `spec["_device"] == "cpu"` skips the meta attempt (a caller whose meta skeleton could not be probed).

    Raises what timm raises for an unknown architecture or kwargs it does not accept, and ModelConfigError
    for a python factory that does not import, fails or returns no nn.Module."""
    real = spec.get("_device") == "cpu"
    if spec.get("source") == "python":
        fn = resolve_factory(spec)  # outside the meta context: importing may create tensors
        model = None
        if not real:
            # a factory that fails on meta (or at all) is built for real, which raises the real error
            with contextlib.suppress(ModelConfigError), torch.device("meta"):
                model = _call_factory(fn, spec)
        if model is None:
            model = _call_factory(fn, spec)
        given = spec.get("data_config") or {}
        if all(k in given for k in PYTHON_DATA_REQUIRED):
            _update_cfg(model, python_data_config(spec))
        return set_tap_patterns(model, spec)
    import timm

    arch, kwargs = spec["arch"].split(".")[0], dict(spec.get("kwargs") or {})
    if real:
        return set_tap_patterns(timm.create_model(arch, pretrained=False, **kwargs), spec)
    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **kwargs)
    # a constructor that computes with tensors (tensor.item() on meta): build it for real
    except (RuntimeError, NotImplementedError):
        model = timm.create_model(arch, pretrained=False, **kwargs)
    return set_tap_patterns(model, spec)


def check_python_spec(name: str, spec: dict[str, Any]) -> nn.Module:
    """The dry-run checks of a `source: python` model entry, without its weights: `arch`, if given, is the
    factory; `data_config` gives input_size, mean and std; `path`, if given, is a file; the factory imports,
    runs with `kwargs` and returns an nn.Module (`build_skeleton`); every `taps` pattern matches a module.
    Returns the skeleton; raises ModelConfigError naming `models.<name>.<key>`, the problem and the fix."""
    spec = {**spec, "name": name}
    if spec.get("arch") not in (None, spec.get("factory")):
        raise ModelConfigError(
            f"{_key(spec, 'arch')} is {spec['arch']!r}, but a source: python model is named by its factory "
            f"({spec.get('factory')!r}); drop {_key(spec, 'arch')}"
        )
    python_data_config(spec)
    if spec.get("path") and not Path(spec["path"]).expanduser().is_file():
        raise ModelConfigError(
            f"{_key(spec, 'path')} {spec['path']!r} is not a file (relative paths start at the working "
            f"directory {str(Path.cwd())!r}); fix it, or drop it to keep the factory's own weights"
        )
    return build_skeleton(spec)


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
    ViT-like model, or an MLP-Mixer's `stem`; `kwargs.img_size` sets it); None for models without (CNNs)."""
    pe = getattr(model, "patch_embed", None)
    if getattr(pe, "img_size", None) is None:
        pe = getattr(model, "stem", None)
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
    """The acquired model in eval mode on `device`, and its info (name, arch, source, data_config, ...): rebuilt
    from the recorded spec (timm arch or python factory, kwargs, surgery, tap patterns) with the recorded
    weights (trained and python models) or the source's own (hub, checkpoint file)."""
    model_json = Path(model_json)
    info = read_json(model_json)
    weights = info.get("weights")
    if weights:
        weights = model_json.parent / weights
    model = create_model(info, weights=weights)
    size = (info.get("data_config") or {}).get("input_size")
    if size:  # the size the analyses feed it: tap layouts are probed at it (seelike.models.taps.input_size)
        model.seelike_input_size = tuple(int(v) for v in size)
    return model.eval().to(device), info
