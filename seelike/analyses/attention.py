"""Mean attention distance per layer × head (Raghu et al. 2021, Figs 3–4) and head-subset outputs (Fig 5).

Definition (PAPER.md, Figs 3/4): for one image, one head and one query patch q, the attention distance is
sum_k a[q, k] · d(q, k), where d is the Euclidean distance in input pixels between the centres of patches q and k.
It is averaged over the query patches of the image, then over images.

Prefix tokens (CLS, registers) have no position on the image. Two conventions, chosen by `cls`:

- ``"drop_renorm"`` (default): drop prefix rows and columns, renormalise each query's attention over the patch keys to
  sum to 1. The result is "how far does this head look, among the places on the image it looks at". A query that puts
  all of its mass on prefix tokens has no such distance and is left out of the mean over queries.
- ``"keep"``: keep the attention weights as they are; the mass a query puts on prefix keys counts at distance 0 (as if
  the prefix token sat on the query). Attention to CLS/registers then pulls the mean distance down.

In both, queries are patch tokens only: a prefix query has no position from which to measure a distance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.device import exact_fp32
from seelike.models.geometry import (
    NotAnAttentionModelError,
    TokenGrid,
    patch_distance_matrix,
    token_grid,
)

CLS_MODES = ("drop_renorm", "keep")


# `mean_attention_distance` works on at most this many attention values at a time (≈ 16 MB in fp32)
ATTN_CHUNK_VALUES = 1 << 22


def mean_attention_distance(
    attn: torch.Tensor,
    grid_hw: Sequence[int],
    patch_px: float | Sequence[int | float],
    num_prefix_tokens: int = 0,
    cls: str = "drop_renorm",
    stride_px: float | Sequence[int | float] | None = None,
    distances: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean attention distance in pixels, (B, H) float64, from attention probabilities `attn` (B, H, N, N).

    Tokens are `num_prefix_tokens` prefix tokens followed by the grid's patches in row-major order. See the module
    docstring for `cls`. `distances` may pass a precomputed (P, P) matrix on attn's device (the streaming collector
    reuses one).
    """
    if cls not in CLS_MODES:
        raise ValueError(f"cls must be one of {CLS_MODES}, got {cls!r}")
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(
            f"attn must be (B, heads, N, N) probabilities, got shape {tuple(attn.shape)}"
        )
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    p = int(num_prefix_tokens)
    n = attn.shape[-1]
    if n != p + gh * gw:
        raise ValueError(
            f"attention has {n} tokens but {p} prefix tokens + a {gh}x{gw} patch grid make {p + gh * gw}; "
            "check num_prefix_tokens and the grid (windowed or pooled attention is not supported)"
        )
    # per-row sums in at least fp32; everything after the row sums in float64
    work = torch.promote_types(attn.dtype, torch.float32)
    a = attn[:, :, p:, p:].to(work)
    if distances is None:
        distances = torch.as_tensor(
            patch_distance_matrix((gh, gw), patch_px, stride_px), dtype=work, device=attn.device
        )
    # the contraction copies its (non-contiguous) operand: slices of images bound that copy
    dist = distances.to(work)
    step = max(1, ATTN_CHUNK_VALUES // max(1, a[:1].numel()))
    per_query = torch.cat(
        [torch.einsum("bhqk,qk->bhq", a[i : i + step], dist) for i in range(0, a.shape[0], step)]
    ).double()
    if cls == "keep":
        return per_query.mean(-1)
    mass = a.sum(-1).double()  # patch-key mass of each query
    valid = mass > 0
    per_query = torch.where(valid, per_query / mass.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    n_valid = valid.sum(-1)
    out = per_query.sum(-1) / n_valid.clamp_min(1)
    # no query looked at any patch: the distance is undefined, say so with NaN (counted by the collector)
    return torch.where(n_valid > 0, out, torch.full_like(out, float("nan")))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every self-attention module whose probabilities pass through `attn_drop`, in order.

    Raises NotAnAttentionModelError when there is none.
    """
    found = [
        (name, m)
        for name, m in model.named_modules()
        if hasattr(m, "attn_drop") and hasattr(m, "num_heads") and hasattr(m, "fused_attn")
    ]
    if not found:
        raise NotAnAttentionModelError(
            f"{type(model).__name__} has no self-attention modules (timm `Attention` with `attn_drop`): "
            "mean attention distance is defined for ViT-family models only; remove this model from the "
            "attention analysis (config `attention.models`) or pick a ViT"
        )
    return found


@dataclass
class AttentionDistances:
    """Streaming sums of per-image mean attention distances, per block × head."""

    block_names: list[str]
    num_heads: list[int]
    cls: str
    grid: TokenGrid
    sums: list[np.ndarray] = field(default_factory=list)
    sumsq: list[np.ndarray] = field(default_factory=list)
    n_images: int = 0
    n_undefined: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sums:
            self.sums = [np.zeros(h) for h in self.num_heads]
            self.sumsq = [np.zeros(h) for h in self.num_heads]
            self.n_undefined = [np.zeros(h, dtype=np.int64) for h in self.num_heads]

    def add(self, block: int, per_image: torch.Tensor) -> None:
        d = per_image.detach().double().cpu().numpy()
        bad = ~np.isfinite(d)
        self.n_undefined[block] += bad.sum(0)
        d = np.where(bad, 0.0, d)
        self.sums[block] += d.sum(0)
        self.sumsq[block] += (d**2).sum(0)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per block × head, with the head's rank (0 = most local) inside its block."""
        rows = []
        for b, name in enumerate(self.block_names):
            n = self.n_images - self.n_undefined[b]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n > 0, self.sums[b] / np.maximum(n, 1), np.nan)
                var = np.where(n > 1, (self.sumsq[b] - n * mean**2) / np.maximum(n - 1, 1), np.nan)
            rank = np.argsort(np.argsort(mean, kind="stable"), kind="stable")
            for h in range(self.num_heads[b]):
                rows.append(
                    {
                        "block": b,
                        "module": name,
                        "head": h,
                        "rank": int(rank[h]),
                        "mean_distance_px": float(mean[h]),
                        "std_distance_px": float(math.sqrt(max(var[h], 0.0)))
                        if np.isfinite(var[h])
                        else np.nan,
                        "n_images": int(n[h]),
                        "n_undefined": int(self.n_undefined[b][h]),
                    }
                )
        return pd.DataFrame(rows)


def unfuse_attention(mods: Sequence[tuple[str, nn.Module]]) -> list[bool]:
    """Turn fused attention off in `mods` (returns the previous flags, to restore)."""
    old = [bool(m.fused_attn) for _, m in mods]
    for _, m in mods:
        m.fused_attn = False  # the fused kernel never materialises the (B, H, N, N) probabilities
    return old


@exact_fp32()
@torch.no_grad()
def attention_distances(
    model: nn.Module,
    batches: Iterable,
    *,
    cls: str = "drop_renorm",
    n_images: int | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> AttentionDistances:
    """Stream `batches` (images (B,3,H,W) or (images, labels) tuples) through `model` and accumulate the mean
    attention distance of every block × head; attention maps are reduced inside the hook, never stored.

    Stops after `n_images` images when given (`seelike.analyses.stream`, which also reports `progress`).
    Raises NotAnAttentionModelError for a model without attention.
    """
    if cls not in CLS_MODES:
        raise ValueError(f"cls must be one of {CLS_MODES}, got {cls!r}")
    mods = attention_modules(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    old = unfuse_attention(mods)
    state: dict = {"acc": None, "dist": None}
    handles = []

    def make_hook(idx: int):
        def hook(_m: nn.Module, _inp, out: torch.Tensor) -> None:
            acc: AttentionDistances = state["acc"]
            g = acc.grid
            if out.ndim != 4 or out.shape[1] != acc.num_heads[idx] or out.shape[-1] != g.num_tokens:
                raise NotAnAttentionModelError(
                    f"attention in {acc.block_names[idx]} has shape {tuple(out.shape)}, expected (B, "
                    f"{acc.num_heads[idx]}, {g.num_tokens}, {g.num_tokens}) for a global attention over "
                    f"{g.num_prefix_tokens} prefix tokens + a {g.grid_hw[0]}x{g.grid_hw[1]} grid; windowed or "
                    "pooled attention is not supported"
                )
            d = mean_attention_distance(
                out, g.grid_hw, g.patch_px, g.num_prefix_tokens, cls, g.stride_px, state["dist"]
            )
            acc.add(idx, d)

        return hook

    try:
        for i, (_, m) in enumerate(mods):
            handles.append(m.attn_drop.register_forward_hook(make_hook(i)))
        for batch in stream(batches, device, n_images=n_images, progress=progress):
            x = batch.x
            if state["acc"] is None:
                grid = token_grid(model, x.shape[-2:])
                state["acc"] = AttentionDistances(
                    [n for n, _ in mods], [int(m.num_heads) for _, m in mods], cls, grid
                )
                state["dist"] = torch.as_tensor(
                    patch_distance_matrix(grid.grid_hw, grid.patch_px, grid.stride_px),
                    dtype=torch.float32,
                    device=device,
                )
            model(x)
            state["acc"].n_images += len(x)
    finally:
        for h in handles:
            h.remove()
        for (_, m), f in zip(mods, old):
            m.fused_attn = f
    if state["acc"] is None:
        raise ValueError("no images were given: the batch iterable was empty")
    return state["acc"]
