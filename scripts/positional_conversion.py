"""What the positional checkpoint converters share (scripts/convert_efficientnet_lite.py, scripts/convert_mobilenetv2.py):
a state dict whose tensors have timm's shapes in timm's order under other names is mapped BY POSITION, every
pair checked for shape; the result is written as safetensors only after timm's strict loader accepted it; and a
converted checkpoint is scored top-1 on an ImageNet image folder through the workflow's own loader.

Not a workflow rule and not run on its own: the converters load it by path.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("positional_conversion")


class ConversionError(RuntimeError):
    """The package's tensors do not line up with timm's architecture (count or a shape differs), or the package
    or its file is missing."""


def load_state_dict(path: Path | str) -> OrderedDict[str, torch.Tensor]:
    """A state dict file (torch.save) on CPU, tensors only (`weights_only`)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"the weight file is missing: {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ConversionError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return OrderedDict(sd)


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], arch: str = "model"
) -> OrderedDict[str, torch.Tensor]:
    """`target`'s keys with `source`'s tensors, paired in order; every pair must have the same shape.

    Order is the only link between the two naming schemes, so any mismatch (a count or a shape) is an error
    listing the first offending pairs rather than a silently shifted mapping.
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ConversionError(
            f"{len(src)} tensors in the package's state dict but {len(tgt)} in timm's {arch}: "
            "the architectures differ, a positional mapping is impossible"
        )
    bad = [
        f"#{i}: {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}"
        for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, tgt, strict=True))
        if sv.shape != tv.shape
    ]
    if bad:
        raise ConversionError(
            f"{len(bad)} of {len(src)} tensors differ in shape, e.g.\n  " + "\n  ".join(bad[:5])
        )
    return OrderedDict(
        (tk, sv.detach().to(tv.dtype).contiguous())
        for (_, sv), (tk, tv) in zip(src, tgt, strict=True)
    )


def convert_state_dict(source: dict[str, torch.Tensor], arch: str, out: Path, package: str) -> Path:
    """Map `source` by position onto timm's `arch`, write it to `out` (.safetensors, with the arch and the
    package in its metadata) and check that timm's loader accepts it (strict) before it takes its name."""
    import timm
    from safetensors.torch import save_file

    if out.suffix != ".safetensors":  # timm's loader picks safetensors by the file extension
        raise ConversionError(f"the output must end in .safetensors, got {str(out)!r}")
    model = timm.create_model(arch, pretrained=False)
    mapped = map_by_position(source, model.state_dict(), arch)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.safetensors")
    save_file(dict(mapped), str(tmp), metadata={"arch": arch, "source": package})
    timm.models.load_checkpoint(timm.create_model(arch, pretrained=False), str(tmp), strict=True)
    tmp.replace(out)  # atomic: a half-written file never carries the final name
    log.info("wrote %s (%d tensors) for timm %s", out, len(mapped), arch)
    return out


def top1(
    arch: str,
    weights: Path,
    root: Path,
    overrides: dict[str, Any] | None = None,
    batch_size: int = 100,
) -> tuple[int, int]:
    """(correct, total) top-1 of the converted `arch` on image folder `root` (`ROOT/<wnid>/<image>`, class index =
    sorted wnid order), preprocessed by the workflow's loader with timm's data config for the architecture,
    updated by `overrides` (e.g. mean / std, interpolation)."""
    import timm

    from seelike.data.loader import make_loader
    from seelike.data.samples import build_samples
    from seelike.models.load import resolve_data_config

    model = timm.create_model(arch, pretrained=False)
    timm.models.load_checkpoint(model, str(weights), strict=True)
    model.eval()
    dataset_cfg = {"source": "imagefolder", "root": str(root), "test_fraction": 1.0}
    data_config = {**resolve_data_config(model), **(overrides or {})}
    loader = make_loader(
        build_samples(dataset_cfg, seed=0),
        dataset_cfg,
        data_config,
        split="test",
        batch_size=batch_size,
    )
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct, total


def report_top1(
    arch: str, weights: Path, root: Path, preprocessings: list[tuple[str, dict[str, Any] | None]]
) -> dict[str, tuple[int, int]]:
    """`top1` under each (label, overrides) and a log line each; label → (correct, total)."""
    out = {}
    for label, overrides in preprocessings:
        correct, total = top1(arch, weights, root, overrides)
        log.info("top-1 with %s: %d/%d = %.3f", label, correct, total, correct / total)
        out[label] = (correct, total)
    return out
