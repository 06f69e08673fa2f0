"""How a tap's activation lays out the image: channels-first maps, channels-last maps, token sequences.

A tap records its layout once, from its activation shape in a probe forward pass (`seelike.models.taps`):

- ``nchw``: (B, C, H, W), timm's CNNs and most hierarchical models between stages;
- ``nhwc``: (B, H, W, C), Swin / SwinV2 (`output_fmt` NHWC), SAM-ViT blocks, MaxViT's partitioned layers;
- ``tokens``: (B, N, C) with ``num_prefix_tokens`` non-spatial tokens (CLS, register, distillation) first, then a
  row-major grid (a grid of None: no spatial tokens, e.g. CaiT's class-attention blocks);
- ``vector``: (B, C) (pooled heads);
- ``other``: anything else (no position is defined).

Every analysis that needs positions (receptive fields, localisation, probes, skip statistics) reads them with
`positions` from the tap's layout, never by guessing from the number of dimensions.

Channels-first and channels-last maps are told apart by which pair of axes is a plausible spatial grid of the
input (sizes H/r, W/r for one stride r); where both are (a map with as many channels as rows), the model's own
declaration (timm's `output_fmt`) decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "LAYOUTS",
    "Layout",
    "infer_layout",
    "positions",
    "prefix",
    "tap_grid",
]

LAYOUTS = ("nchw", "nhwc", "tokens", "vector", "other")


@dataclass(frozen=True)
class Layout:
    kind: str  # one of LAYOUTS
    grid_hw: tuple[int, int] | None = None  # spatial positions at the probe's input size
    num_prefix_tokens: int = 0  # tokens only


def _stride_match(g: Sequence[int], img_hw: Sequence[int]) -> int:
    """2 when (gh, gw) = (H/r, W/r) rounded either way for one integer stride r, 1 when it is a grid of the
    input's aspect (valid convolutions shave a few rows: Inception), 0 when it is not a grid of this input."""
    gh, gw = int(g[0]), int(g[1])
    h, w = int(img_hw[0]), int(img_hw[1])
    if not (0 < gh <= h and 0 < gw <= w):
        return 0
    for r in range(1, max(h, w) + 1):
        if gh in (h // r, -(-h // r)) and gw in (w // r, -(-w // r)):
            return 2
    return 1 if abs(gh / h - gw / w) * min(h, w) <= 1.0 else 0


def _token_grid(n: int, img_hw: Sequence[int]) -> tuple[int, int] | None:
    """A row-major grid of `n` positions with the input's aspect ratio, or None."""
    if n <= 0:
        return None
    h, w = int(img_hw[0]), int(img_hw[1])
    gh = max(1, round(math.sqrt(n * h / w)))
    for cand in (gh, gh - 1, gh + 1):
        if cand > 0 and n % cand == 0 and _stride_match((cand, n // cand), img_hw):
            return cand, n // cand
    return None


def infer_layout(
    shape: Sequence[int],
    img_hw: Sequence[int],
    num_prefix_tokens: int | None = None,
    channels_last: bool = False,
) -> Layout:
    """The layout of a per-example activation `shape` (batch dimension removed) for an input of `img_hw`.

    `num_prefix_tokens`: the model's declared prefix tokens (timm `num_prefix_tokens`), tried first for token
    sequences; other counts up to 8 are tried when the declared one leaves no grid (CaiT's and XCiT's patch-only
    blocks). `channels_last`: the model declares channels-last maps (decides a map with as many channels as rows).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return Layout("vector")
    if len(shape) == 2:
        n = shape[0]
        declared = int(num_prefix_tokens or 0)
        for p in [declared] + [p for p in range(9) if p != declared]:
            if p > n:
                break
            if p == n:
                return Layout("tokens", None, p)
            g = _token_grid(n - p, img_hw)
            if g is not None:
                return Layout("tokens", g, p)
        return Layout("tokens", None, min(declared, n))
    if len(shape) == 3:
        first, last = _stride_match(shape[1:], img_hw), _stride_match(shape[:2], img_hw)
        if first == last == 0:
            return Layout("other")
        if first > last or (first == last and not channels_last):
            return Layout("nchw", (shape[1], shape[2]))
        return Layout("nhwc", (shape[0], shape[1]))
    return Layout("other")


def tap_grid(tap, act: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of the positions of a tap's activation `act` (batch first), from the tap's layout.

    Maps carry their own grid; token sequences are matched against the grid recorded by the probe, or a grid of
    the same aspect when the input size differs from the probe's."""
    kind = tap.layout
    if kind == "nchw":
        return int(act.shape[2]), int(act.shape[3])
    if kind == "nhwc":
        return int(act.shape[1]), int(act.shape[2])
    if kind == "tokens" and tap.grid_hw is not None:
        n = int(act.shape[1]) - int(tap.num_prefix_tokens)
        gh, gw = tap.grid_hw
        if gh * gw == n:
            return int(gh), int(gw)
        g = _token_grid(n, (gh, gw))
        if g is not None:
            return g
        raise ValueError(
            f"tap {tap.name!r}: {act.shape[1]} tokens do not form a grid of the probed {gh}x{gw} layout "
            f"after {tap.num_prefix_tokens} prefix tokens"
        )
    raise ValueError(
        f"tap {tap.name!r} has layout {kind!r}{' without a token grid' if kind == 'tokens' else ''}: it has no "
        "spatial positions; choose a tap with a feature map or a token grid (taps.csv lists each tap's layout)"
    )


def positions(tap, act: torch.Tensor) -> torch.Tensor:
    """(B, G, C) view of a tap's activation: one C-vector per grid position, row-major (prefix tokens left out)."""
    kind = tap.layout
    gh, gw = tap_grid(tap, act)
    if kind == "nchw":
        return act.flatten(2).transpose(1, 2)
    if kind == "nhwc":
        return act.reshape(act.shape[0], gh * gw, act.shape[-1])
    return act[:, int(tap.num_prefix_tokens) :]


def prefix(tap, act: torch.Tensor) -> torch.Tensor | None:
    """(B, P, C) prefix tokens of a token tap (CLS first), None when it has none."""
    if tap.layout != "tokens" or not tap.num_prefix_tokens:
        return None
    return act[:, : int(tap.num_prefix_tokens)]
