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

Which attention, per family (`seelike.models.families`, record field `attention`):

- ``"global"`` (ViT, DeiT, BEiT, EVA-02, DINOv2, ConViT, CaiT's self-attention blocks): each block's `attn` module,
  probabilities (B, heads, N, N) over all tokens, read where they leave the softmax (`attn_drop`'s output; the fused
  kernel is switched off while reading). The grid is the patch grid (`token_grid`); the prefix tokens of each block
  are the tokens beyond it, N − grid size, read from the attention's own shape (CaiT's patch blocks and ConViT's
  GPSA blocks have none although the model declares a CLS token). CaiT's class-attention blocks
  (`blocks_token_only`: the CLS query only) have no query on the image and are not read.
- CaiT's talking-heads attention (`TalkingHeadAttn`) mixes heads twice: logits → `proj_l` (a linear map across
  heads) → softmax → `proj_w` (another map across heads) → values. Only the softmax output is a distribution over
  keys, so a head's attention here is the softmax output after `proj_l` and before `proj_w` (read as `proj_w`'s
  input); rows sum to 1. The values are weighted by the `proj_w` mixture of these distributions, which is not one.
- ``"window"`` (Swin, SwinV2, SwinV2-CR): each block attends inside windows of its stage's (H, W) map, with every
  other block's windows cyclically shifted. Distances are between the TRUE (un-shifted) positions of query and key
  on the stage's grid, in input pixels at the stage's stride (image size / grid size): a key that wrapped around
  the map in a shifted window is as far away as it really is (the block masks such pairs: ~0 probability). Tokens
  that pad the map to whole windows have no position: their rows are left out, and their keys are treated like
  prefix tokens by `cls` (``drop_renorm``: dropped and the row renormalised; ``keep``: counted at distance 0). The
  mean is over the H·W positions of the image, each the query of exactly one window
  (`seelike.models.geometry.window_geometry`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.device import exact_fp32, place_model
from seelike.models.geometry import (
    NotAnAttentionModelError,
    TokenGrid,
    WindowGeometry,
    patch_distance_matrix,
    token_grid,
    window_geometry,
)
from seelike.models.taps import HookSite, add_hooks, hooks

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


def window_attention_distance(
    attn: torch.Tensor, geom: WindowGeometry, cls: str = "drop_renorm"
) -> torch.Tensor:
    """Mean attention distance in pixels, (B, H) float64, of a windowed (Swin) block from its attention
    probabilities `attn` (B·nW, heads, N, N) in timm's window order, with `geom` the block's `WindowGeometry`.

    Per query: sum over keys of probability × distance between the true positions; padding keys follow `cls`
    (module docstring); averaged over the image's positions (padding queries left out).
    """
    if cls not in CLS_MODES:
        raise ValueError(f"cls must be one of {CLS_MODES}, got {cls!r}")
    nw, n = geom.num_windows, geom.window_area
    if attn.ndim != 4 or attn.shape[-1] != n or attn.shape[-2] != n or attn.shape[0] % nw:
        raise ValueError(
            f"windowed attention of shape {tuple(attn.shape)} does not fit {nw} windows of {n} tokens "
            f"({geom.grid_hw[0]}x{geom.grid_hw[1]} map, window {geom.window})"
        )
    work = torch.promote_types(attn.dtype, torch.float32)
    b, h = attn.shape[0] // nw, attn.shape[1]
    a = attn.reshape(b, nw, h, n, n).to(work)
    valid = torch.as_tensor(geom.valid, device=attn.device)
    dist = torch.as_tensor(geom.distances, dtype=work, device=attn.device)
    a = a * valid[None, :, None, None, :].to(work)  # padding keys: no distance, no mass
    step = max(1, ATTN_CHUNK_VALUES // max(1, a[:1].numel()))
    per_query = torch.cat(
        [torch.einsum("bwhqk,wqk->bwhq", a[i : i + step], dist) for i in range(0, b, step)]
    ).double()
    qv = valid[None, :, None, :].expand_as(per_query)
    if cls == "drop_renorm":
        mass = a.sum(-1).double()
        qv = qv & (mass > 0)
        per_query = per_query / mass.clamp_min(torch.finfo(torch.float64).tiny)
    per_query = torch.where(qv, per_query, 0.0)
    n_valid = qv.sum((1, 3))
    out = per_query.sum((1, 3)) / n_valid.clamp_min(1)
    return torch.where(n_valid > 0, out, torch.full_like(out, float("nan")))


@dataclass(frozen=True)
class AttentionSite:
    """One attention module whose per-head probabilities are read: `name` (its module path), `block` (the block
    that calls it: windowed blocks hold the window and shift), `kind` ("global" | "window"), `talking_heads`
    (CaiT: read at `proj_w`'s input, module docstring)."""

    name: str
    module: nn.Module
    block: nn.Module
    num_heads: int
    kind: str
    talking_heads: bool = False


def _global_sites(model: nn.Module) -> list[AttentionSite]:
    out = []
    for i, blk in enumerate(model.blocks):
        m, name = getattr(blk, "attn", None), f"blocks.{i}.attn"
        talking = isinstance(getattr(m, "proj_l", None), nn.Linear) and isinstance(
            getattr(m, "proj_w", None), nn.Linear
        )
        if m is None or not hasattr(m, "num_heads") or not (talking or hasattr(m, "attn_drop")):
            raise NotAnAttentionModelError(
                f"{name} ({type(m).__name__}) has no per-head attention probabilities to read (no `attn_drop` "
                "after its softmax): mean attention distance is not defined for this model"
            )
        out.append(AttentionSite(name, m, blk, int(m.num_heads), "global", talking))
    return out


def _window_sites(model: nn.Module) -> list[AttentionSite]:
    out = []
    for path, blk in model.named_modules():
        if hasattr(blk, "shift_size") and hasattr(blk, "window_size") and hasattr(blk, "attn"):
            m = blk.attn
            if not (hasattr(m, "num_heads") and hasattr(m, "attn_drop")):
                raise NotAnAttentionModelError(
                    f"{path}.attn ({type(m).__name__}) has no `attn_drop` after its softmax to read"
                )
            out.append(AttentionSite(f"{path}.attn", m, blk, int(m.num_heads), "window"))
    return out


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """The attention modules of `model` whose per-head probabilities over image positions are read, in order.

    Decided by the model's family record (`seelike.models.families`): ``global`` (ViT-like `blocks[i].attn`) or
    ``window`` (Swin blocks). Raises NotAnAttentionModelError, with the family's reason, for any other model.
    """
    from seelike.models.families import family_of

    fam = family_of(model)
    sites = (
        _global_sites(model)
        if fam.attention == "global"
        else _window_sites(model)
        if fam.attention == "window"
        else []
    )
    if not sites:
        raise NotAnAttentionModelError(
            f"{type(model).__name__} (family {fam.name!r}): {fam.attention_reason}. Mean attention distance is "
            "defined for ViT-family (global token attention) and Swin (windowed attention) models only; remove "
            "this model from the attention analysis (config `attention.models`)"
        )
    return sites


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every attention module read by `attention_sites`, in order (raises
    NotAnAttentionModelError when there is none)."""
    return [(s.name, s.module) for s in attention_sites(model)]


@dataclass
class AttentionDistances:
    """Streaming sums of per-image mean attention distances, per block × head.

    `grid`: the model's patch grid (`token_grid`). Per block: `prefix_tokens` (global attention: tokens before the
    grid, from the attention's shape), `block_grid_hw` / `block_stride_px` (the map the block attends over and
    its stride in input pixels), `windows` / `shifts` (windowed attention; None for global)."""

    block_names: list[str]
    num_heads: list[int]
    cls: str
    grid: TokenGrid
    sums: list[np.ndarray] = field(default_factory=list)
    sumsq: list[np.ndarray] = field(default_factory=list)
    n_images: int = 0
    n_undefined: list[np.ndarray] = field(default_factory=list)
    kind: str = "global"
    prefix_tokens: list[int | None] = field(default_factory=list)
    block_grid_hw: list[tuple[int, int] | None] = field(default_factory=list)
    block_stride_px: list[tuple[float, float] | None] = field(default_factory=list)
    windows: list[tuple[int, int] | None] = field(default_factory=list)
    shifts: list[tuple[int, int] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sums:
            self.sums = [np.zeros(h) for h in self.num_heads]
            self.sumsq = [np.zeros(h) for h in self.num_heads]
            self.n_undefined = [np.zeros(h, dtype=np.int64) for h in self.num_heads]
        for f in ("prefix_tokens", "block_grid_hw", "block_stride_px", "windows", "shifts"):
            if not getattr(self, f):
                setattr(self, f, [None] * len(self.num_heads))

    def add(self, block: int, per_image: torch.Tensor) -> None:
        d = per_image.detach().double().cpu().numpy()
        bad = ~np.isfinite(d)
        self.n_undefined[block] += bad.sum(0)
        d = np.where(bad, 0.0, d)
        self.sums[block] += d.sum(0)
        self.sumsq[block] += (d**2).sum(0)

    def geometry(self) -> list[dict]:
        """Per block: the map it attends over, its stride in pixels, window and shift (None where global)."""
        cols = zip(
            self.block_names, self.prefix_tokens, self.block_grid_hw, self.block_stride_px,
            self.windows, self.shifts, strict=True,
        )  # fmt: skip
        keys = ("module", "prefix_tokens", "grid_hw", "stride_px", "window", "shift")
        return [dict(zip(keys, c, strict=True)) for c in cols]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per block × head, with the head's rank (0 = most local) inside its block.

        Over the `n_images` images whose distance is defined: `mean_distance_px`, `std_distance_px` (SD of the
        per-image mean distances, ddof 1) and `se_distance_px` = SD / √n, the standard error of the mean."""
        rows = []
        for b, name in enumerate(self.block_names):
            n = self.n_images - self.n_undefined[b]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n > 0, self.sums[b] / np.maximum(n, 1), np.nan)
                var = np.where(n > 1, (self.sumsq[b] - n * mean**2) / np.maximum(n - 1, 1), np.nan)
            rank = np.argsort(np.argsort(mean, kind="stable"), kind="stable")
            for h in range(self.num_heads[b]):
                # the running sums can round var to just below 0 when every image gives the same distance
                std = math.sqrt(max(var[h], 0.0)) if np.isfinite(var[h]) else np.nan
                rows.append(
                    {
                        "block": b,
                        "module": name,
                        "head": h,
                        "rank": int(rank[h]),
                        "mean_distance_px": float(mean[h]),
                        "std_distance_px": std,
                        # SE of the mean over images (images independent): SD / √n
                        "se_distance_px": std / math.sqrt(n[h]) if n[h] > 1 else np.nan,
                        "n_images": int(n[h]),
                        "n_undefined": int(self.n_undefined[b][h]),
                    }
                )
        return pd.DataFrame(rows)


def unfuse_attention(mods: Sequence[tuple[str, nn.Module]]) -> list[bool | None]:
    """Turn fused attention off in `mods` (returns the previous flags, None where a module has none, to
    restore with `refuse_attention`)."""
    old = [bool(m.fused_attn) if hasattr(m, "fused_attn") else None for _, m in mods]
    for _, m in mods:
        if hasattr(m, "fused_attn"):
            m.fused_attn = (
                False  # the fused kernel never materialises the (B, H, N, N) probabilities
            )
    return old


def refuse_attention(mods: Sequence[tuple[str, nn.Module]], old: Sequence[bool | None]) -> None:
    """Restore the fused-attention flags `unfuse_attention` returned."""
    for (_, m), f in zip(mods, old, strict=True):
        if f is not None:
            m.fused_attn = f


@contextmanager
def unfused(sites: Sequence[AttentionSite]):
    """Fused attention off in the sites' modules inside the block (`unfuse_attention`), restored after."""
    mods = [(s.name, s.module) for s in sites]
    old = unfuse_attention(mods)
    try:
        yield
    finally:
        refuse_attention(mods, old)


def attention_hooks(site: AttentionSite, fn) -> list[HookSite]:
    """The hooks (`seelike.models.taps.hooks`) that call `fn(probabilities)` with `site`'s per-head
    probabilities on every forward: (B, heads, N, N) for global attention, (B·nW, heads, N, N) for windowed
    attention."""
    if site.talking_heads:
        # proj_w's input is the softmax output laid out (B, N, N, heads)
        return [(site.module.proj_w, "input", lambda a: fn(a[0].permute(0, 3, 1, 2)))]
    return [(site.module.attn_drop, "output", fn)]


def read_attention(site: AttentionSite, fn) -> list:
    """`attention_hooks` registered; returns the hook handles (remove them when done). Prefer
    `with hooks(attention_hooks(site, fn)):`, which removes them (kept for benchmarks/coverage.py)."""
    return add_hooks(attention_hooks(site, fn))


def window_map_hooks(sites: Sequence[AttentionSite], fn) -> list[HookSite]:
    """Hooks that call `fn(i, (H, W))` with the input map size of the block of every windowed site i, before
    its attention runs."""
    return [
        (s.block, "input", lambda a, i=i: fn(i, _map_hw(a[0])))
        for i, s in enumerate(sites)
        if s.kind == "window"
    ]


@contextmanager
def attention_probabilities(model: nn.Module, sites: Sequence[AttentionSite] | None = None):
    """Collect the per-head probabilities of every site for the forward passes inside the block: yields a list
    with one list per site of (probabilities, block input map (H, W) or None) (tests; small inputs only)."""
    sites = list(sites) if sites is not None else attention_sites(model)
    got: list[list] = [[] for _ in sites]
    hw: dict[int, tuple[int, int]] = {}
    observers = window_map_hooks(sites, hw.__setitem__)
    for i, s in enumerate(sites):
        observers += attention_hooks(s, lambda p, i=i: got[i].append((p.detach(), hw.get(i))))
    with unfused(sites), hooks(observers):
        yield got


def _map_hw(x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a Swin block's input map (B, H, W, C)."""
    if x.ndim != 4:
        raise NotAnAttentionModelError(
            f"a windowed attention block got an input of shape {tuple(x.shape)}, not a (B, H, W, C) map"
        )
    return int(x.shape[1]), int(x.shape[2])


def _block_window(site: AttentionSite) -> tuple[tuple[int, int], tuple[int, int]]:
    def pair(v) -> tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    return pair(site.block.window_size), pair(site.block.shift_size)


class _DistanceReader:
    """The hooks of `attention_distances`: each site's probabilities reduced to per-image mean distances as
    they leave the softmax, into `acc` (made at the first batch, when the image size is known)."""

    def __init__(self, sites: Sequence[AttentionSite], cls: str):
        self.sites, self.cls = list(sites), cls
        self.acc: AttentionDistances | None = None
        self.img_hw: tuple[int, int] | None = None
        self.hw: dict[int, tuple[int, int]] = {}  # windowed site → its block's input map (H, W)
        self.geom: dict[tuple, WindowGeometry] = {}
        self.dist: dict[int, torch.Tensor] = {}  # global attention: N tokens → (P, P) distances

    def start(self, model: nn.Module, x: torch.Tensor) -> AttentionDistances:
        if self.acc is None:
            self.img_hw = (int(x.shape[-2]), int(x.shape[-1]))
            self.acc = AttentionDistances(
                [s.name for s in self.sites],
                [s.num_heads for s in self.sites],
                self.cls,
                token_grid(model, x.shape[-2:]),
                kind=self.sites[0].kind,
            )
        return self.acc

    def observers(self) -> list[HookSite]:
        out = window_map_hooks(self.sites, self.hw.__setitem__)
        for i, s in enumerate(self.sites):
            on = self.window if s.kind == "window" else self.global_
            out += attention_hooks(s, lambda p, i=i, on=on: on(i, p))
        return out

    def global_(self, idx: int, out: torch.Tensor) -> None:
        acc = self.acc
        g = acc.grid
        gh, gw = g.grid_hw
        n = out.shape[-1] if out.ndim == 4 else -1
        prefix = n - gh * gw
        if out.ndim != 4 or out.shape[1] != acc.num_heads[idx] or out.shape[-2] != n or prefix < 0:
            raise NotAnAttentionModelError(
                f"attention in {acc.block_names[idx]} has shape {tuple(out.shape)}, expected (B, "
                f"{acc.num_heads[idx]}, N, N) with N = prefix tokens + the {gh}x{gw} patch grid: a global "
                "attention over the patch grid; windowed or pooled attention is not supported here"
            )
        if acc.prefix_tokens[idx] is None:
            acc.prefix_tokens[idx] = prefix
            acc.block_grid_hw[idx] = (gh, gw)
            acc.block_stride_px[idx] = tuple(float(v) for v in g.stride_px)
        if n not in self.dist:
            self.dist[n] = torch.as_tensor(
                patch_distance_matrix(g.grid_hw, g.patch_px, g.stride_px),
                dtype=torch.float32,
                device=out.device,
            )
        d = mean_attention_distance(
            out, g.grid_hw, g.patch_px, prefix, self.cls, g.stride_px, self.dist[n]
        )
        acc.add(idx, d)

    def window(self, idx: int, out: torch.Tensor) -> None:
        acc = self.acc
        hw = self.hw[idx]
        window, shift = _block_window(self.sites[idx])
        key = (idx, hw, window, shift)
        if key not in self.geom:
            img_h, img_w = self.img_hw
            stride = (img_h / hw[0], img_w / hw[1])
            self.geom[key] = window_geometry(hw, window, shift, stride)
            acc.block_grid_hw[idx], acc.block_stride_px[idx] = hw, stride
            acc.windows[idx], acc.shifts[idx] = window, shift
        if out.ndim != 4 or out.shape[1] != acc.num_heads[idx]:
            raise NotAnAttentionModelError(
                f"windowed attention in {acc.block_names[idx]} has shape {tuple(out.shape)}, expected "
                f"(B·windows, {acc.num_heads[idx]}, N, N)"
            )
        acc.add(idx, window_attention_distance(out, self.geom[key], self.cls))


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

    Global token attention (ViT family) and windowed attention (Swin family); see the module docstring.
    Stops after `n_images` images when given (`seelike.analyses.stream`, which also reports `progress`);
    `device`: `seelike.device.analysis_device` (default: where the model is). Raises NotAnAttentionModelError for
    a model without either.
    """
    if cls not in CLS_MODES:
        raise ValueError(f"cls must be one of {CLS_MODES}, got {cls!r}")
    sites = attention_sites(model)
    device = place_model(model, device)
    reader = _DistanceReader(sites, cls)
    with unfused(sites), hooks(reader.observers()):
        for batch in stream(batches, device, n_images=n_images, progress=progress):
            acc = reader.start(model, batch.x)
            model(batch.x)
            acc.n_images += len(batch.x)
    if reader.acc is None:
        raise ValueError("no images were given: the batch iterable was empty")
    return reader.acc
