"""A configured model's tap family, decided once, by structure, without weights.

The workflow decides at parse time which analyses apply to which model (attention only for ViT-like
models, skip statistics only for families with known residual units, ...); the rules decide at run time
with `seelike.models.taps.tap_family` on the built model. Both go through the same structural test:
`model_family` builds the timm model on the meta device (no memory, no weights, no network) and asks
`tap_family`. Names play no part, so MobileViT, LeViT or ConvNeXt are never mistaken for a ViT or a ResNet.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

__all__ = ["FAMILY_TRAITS", "family_traits", "model_family", "model_tap_names"]

# What each family of seelike.models.taps offers the analyses; unknown families get GENERIC.
FAMILY_TRAITS: dict[str, dict[str, bool]] = {
    "vit": {"has_attention": True, "has_residual_units": True, "is_cnn": False},
    "resnet": {"has_attention": False, "has_residual_units": True, "is_cnn": True},
    "resnetv2": {"has_attention": False, "has_residual_units": True, "is_cnn": True},
    "efficientnet": {"has_attention": False, "has_residual_units": True, "is_cnn": True},
}
GENERIC = {"has_attention": False, "has_residual_units": False, "is_cnn": False}


def family_traits(family: str) -> dict[str, bool]:
    """has_attention (ViT-like blocks: attention distance, head subsets), has_residual_units (skip
    statistics, pre/post-residual ERF taps), is_cnn (a convolutional family with stages of units)."""
    return dict(FAMILY_TRAITS.get(family, GENERIC))


@cache
def _structure(arch: str, kwargs_json: str) -> tuple[str, tuple[str, ...]]:
    """(tap family, tap names in forward order) of an architecture, from one build without weights."""
    import timm
    import torch

    from seelike.models.taps import discover_taps, tap_family

    kwargs = json.loads(kwargs_json)
    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **kwargs)
    # a constructor that computes with tensors (tensor.item() on meta): build it for real
    except (RuntimeError, NotImplementedError):
        model = timm.create_model(arch, pretrained=False, **kwargs)
    try:
        names = tuple(t.name for t in discover_taps(model))
    # a family whose discovery needs more than the structure (meta tensors): names unknown until run time
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        names = ()
    return tap_family(model), names


def _key(spec: dict[str, Any]) -> tuple[str, str]:
    return spec["arch"].split(".")[0], json.dumps(spec.get("kwargs") or {}, sort_keys=True)


def model_family(spec: dict[str, Any]) -> str:
    """The tap family (`vit`, `resnet`, `resnetv2`, `efficientnet` or `generic`) of a model spec
    (`arch` with or without a pretrained tag, optional `kwargs`), cached per (arch, kwargs).

    Raises what timm raises for an unknown architecture or kwargs it does not accept."""
    return _structure(*_key(spec))[0]


def model_tap_names(spec: dict[str, Any]) -> tuple[str, ...]:
    """The tap names (`seelike.models.taps.discover_taps`) of a model spec, from the same weightless build as
    `model_family`; empty when the family's discovery cannot run on the structure alone."""
    return _structure(*_key(spec))[1]
