"""The one builder of every output's metadata (the parquet schema metadata, a CSV's `.meta.json`, a cache's or
probe store's `meta.json`): what made the output, in the same keys whichever analysis it is.

Common keys (left out where they do not apply): `analysis`; `model`, `arch`, `family` (the model's info,
`model.json`); `samples_hash`, `samples_order`, `samples_seed` (the sample list's sidecar,
`seelike.data.samples.sample_list_meta`); `split`, `n_images`; `device`; `torch_version`, `timm_version`.
Analysis-specific fields follow and win over the common ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE_KEYS = {"samples_hash": "samples_hash", "order": "samples_order", "seed": "samples_seed"}


def sample_fields(samples: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """`samples_hash`, `samples_order`, `samples_seed` of a sample list (a path: its sidecar, read by
    `sample_list_meta`), or the same keys taken over from another output's metadata (a dict)."""
    if samples is None:
        return {}
    if isinstance(samples, dict):
        return {k: samples[k] for k in SAMPLE_KEYS.values() if k in samples}
    from seelike.data.samples import sample_list_meta

    meta = sample_list_meta(samples)
    return {ours: meta.get(theirs) for theirs, ours in SAMPLE_KEYS.items()}


def versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "timm"):
        try:
            out[f"{name}_version"] = __import__(name).__version__
        except ImportError:
            pass
    return out


def build_metadata(
    analysis: str,
    *,
    info: dict[str, Any] | None = None,
    network: Any = None,
    samples: str | Path | dict[str, Any] | None = None,
    split: str | None = None,
    n_images: int | None = None,
    device: Any = None,
    **fields: Any,
) -> dict[str, Any]:
    """The metadata of one output (module docstring). `info` is the model's info (model.json); `model` the
    built model (torch module), asked for its tap family only when `info` has none."""
    meta: dict[str, Any] = {"analysis": analysis}
    if info is not None:
        family = info.get("family")
        if family is None and network is not None:
            from seelike.models.taps import tap_family

            family = tap_family(network)
        meta.update({"model": info.get("name"), "arch": info.get("arch"), "family": family})
    meta.update(sample_fields(samples))
    for key, value in (("split", split), ("n_images", n_images)):
        if value is not None:
            meta[key] = value
    if device is not None:
        meta["device"] = str(device)
    meta.update(versions())
    meta.update(fields)
    return meta
