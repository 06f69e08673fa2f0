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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

CLS_MODES = ("drop_renorm", "keep")
# `mean_attention_distance` works on at most this many attention values at a time (≈ 16 MB in fp32)
ATTN_CHUNK_VALUES = 1 << 22

__all__ = [
    "CLS_MODES",
    "AttentionDistances",
    "NotAnAttentionModelError",
    "TokenGrid",
    "attention_distances",
    "attention_modules",
    "auto_subset_size",
    "default_cnn_taps",
    "group_heads",
    "head_outputs",
    "head_subset_cka",
    "head_subset_cka_from_cache",
    "head_subset_grams",
    "mean_attention_distance",
    "patch_centres",
    "patch_distance_matrix",
    "token_grid",
]


class NotAnAttentionModelError(ValueError):
    """The model has no self-attention over a patch grid (e.g. a CNN)."""


def _pair(v: float | Sequence[int | float]) -> tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    a, b = v
    return float(a), float(b)


def patch_centres(
    grid_hw: Sequence[int],
    patch_px: float | Sequence[int | float],
    stride_px: float | Sequence[int | float] | None = None,
) -> np.ndarray:
    """(P, 2) pixel coordinates (row, col) of the patch centres, patches in row-major order.

    Patch (r, c) covers rows [r·s_h, r·s_h + p_h) of the input, so its centre is r·s_h + p_h/2 (stride s defaults
    to the patch size, as in a plain ViT patch embedding).
    """
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    ph, pw = _pair(patch_px)
    sh, sw = _pair(stride_px) if stride_px is not None else (ph, pw)
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([rows.ravel() * sh + ph / 2, cols.ravel() * sw + pw / 2], axis=1).astype(
        np.float64
    )


def patch_distance_matrix(
    grid_hw: Sequence[int],
    patch_px: float | Sequence[int | float],
    stride_px: float | Sequence[int | float] | None = None,
) -> np.ndarray:
    """(P, P) Euclidean distances in pixels between patch centres (float64)."""
    c = patch_centres(grid_hw, patch_px, stride_px)
    return np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))


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


@dataclass(frozen=True)
class TokenGrid:
    """Where a ViT's tokens sit on the input: prefix tokens first, then a row-major patch grid."""

    grid_hw: tuple[int, int]
    patch_px: tuple[int, int]
    stride_px: tuple[int, int]
    num_prefix_tokens: int
    img_hw: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_hw[0] * self.grid_hw[1]

    @property
    def centre_token(self) -> int:
        """Index of the token at grid position (H//2, W//2) (PAPER.md Fig 6: centre of the patch grid)."""
        return (
            self.num_prefix_tokens + (self.grid_hw[0] // 2) * self.grid_hw[1] + self.grid_hw[1] // 2
        )


def token_grid(model: nn.Module, img_hw: Sequence[int]) -> TokenGrid:
    """The token layout of a timm ViT-like model for inputs of size `img_hw`.

    Raises NotAnAttentionModelError for a model without a patch embedding (e.g. a CNN).
    """
    pe = getattr(model, "patch_embed", None)
    if pe is None or not hasattr(pe, "patch_size"):
        raise NotAnAttentionModelError(
            f"{type(model).__name__} has no `patch_embed` with a `patch_size`: it is not a ViT-like model, so "
            "attention distances and token grids do not apply; list only ViT-family models for this analysis"
        )
    patch = tuple(int(v) for v in _pair(pe.patch_size))
    proj = getattr(pe, "proj", None)
    stride = tuple(int(v) for v in proj.stride) if isinstance(proj, nn.Conv2d) else patch
    h, w = int(img_hw[0]), int(img_hw[1])
    if hasattr(pe, "dynamic_feat_size") and (
        getattr(model, "dynamic_img_size", False) or getattr(pe, "img_size", None) is None
    ):
        grid = tuple(int(v) for v in pe.dynamic_feat_size((h, w)))
    elif getattr(pe, "grid_size", None) is not None:
        grid = tuple(int(v) for v in pe.grid_size)
    else:
        grid = ((h - patch[0]) // stride[0] + 1, (w - patch[1]) // stride[1] + 1)
    if getattr(model, "num_prefix_tokens", None) is not None:
        prefix = int(model.num_prefix_tokens)
    else:
        prefix = int(getattr(model, "cls_token", None) is not None)
    return TokenGrid(grid, patch, stride, prefix, (h, w))  # type: ignore[arg-type]


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


def _disable_fused(mods: Sequence[tuple[str, nn.Module]]) -> list[bool]:
    old = [bool(m.fused_attn) for _, m in mods]
    for _, m in mods:
        m.fused_attn = False  # the fused kernel never materialises the (B, H, N, N) probabilities
    return old


def _batches_to(batches: Iterable, device: torch.device) -> Iterator[torch.Tensor]:
    for item in batches:
        x = item[0] if isinstance(item, (tuple, list)) else item
        yield x.to(device, non_blocking=True)


@torch.no_grad()
def attention_distances(
    model: nn.Module,
    batches: Iterable,
    *,
    cls: str = "drop_renorm",
    n_images: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> AttentionDistances:
    """Stream `batches` (images (B,3,H,W) or (images, labels) tuples) through `model` and accumulate the mean
    attention distance of every block × head; attention maps are reduced inside the hook, never stored.

    Stops after `n_images` images when given. Raises NotAnAttentionModelError for a model without attention.
    """
    if cls not in CLS_MODES:
        raise ValueError(f"cls must be one of {CLS_MODES}, got {cls!r}")
    mods = attention_modules(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    old = _disable_fused(mods)
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
            acc.add(idx, d[: state["take"]])

        return hook

    try:
        for i, (_, m) in enumerate(mods):
            handles.append(m.attn_drop.register_forward_hook(make_hook(i)))
        seen = 0
        it = _batches_to(batches, device)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="attention distance", unit="batch")
        for x in it:
            if n_images is not None and seen >= n_images:
                break
            take = x.shape[0] if n_images is None else min(x.shape[0], n_images - seen)
            x = x[:take]
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
            state["take"] = take
            model(x)
            state["acc"].n_images += take
            seen += take
    finally:
        for h in handles:
            h.remove()
        for (_, m), f in zip(mods, old):
            m.fused_attn = f
    if state["acc"] is None:
        raise ValueError("no images were given: the batch iterable was empty")
    return state["acc"]


class _StopForward(Exception):
    """Raised inside a hook once the wanted activation is captured: the rest of the model need not run."""


@torch.no_grad()
def head_outputs(model: nn.Module, x: torch.Tensor, block: int = 0) -> torch.Tensor:
    """Per-head outputs of attention block `block` for images `x`: (B, N, heads, head_dim).

    They are the input of `attn.proj` (concatenated head outputs, after the optional scale-norm) reshaped per
    head; a head subset's representation is the chosen heads' slices, flattened over tokens × channels. The
    forward pass stops right after that block's attention.
    """
    mods = attention_modules(model)
    if not 0 <= block < len(mods):
        raise ValueError(f"block {block} out of range: the model has {len(mods)} attention blocks")
    name, attn = mods[block]
    if not hasattr(attn, "proj"):
        raise NotAnAttentionModelError(
            f"{name} has no `proj` output projection to read head outputs from"
        )
    got: list[torch.Tensor] = []

    def grab(_m: nn.Module, args: tuple) -> None:
        got.append(args[0].detach())
        raise _StopForward

    old = _disable_fused([(name, attn)])
    h = attn.proj.register_forward_pre_hook(grab)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        h.remove()
        attn.fused_attn = old[0]
    y = got[0]
    heads = int(attn.num_heads)
    return y.reshape(y.shape[0], y.shape[1], heads, y.shape[-1] // heads)


def group_heads(mean_distance: Sequence[float], subset_size: int) -> list[list[int]]:
    """Heads sorted by mean distance (local → global) cut into consecutive groups of `subset_size`
    (the last group holds the remainder)."""
    if subset_size < 1:
        raise ValueError(f"subset_size must be at least 1, got {subset_size}")
    d = np.asarray(mean_distance, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError(
            "mean distances must be finite to sort heads (an undefined head distance was given)"
        )
    order = np.argsort(d, kind="stable").tolist()
    return [order[i : i + subset_size] for i in range(0, len(order), subset_size)]


def auto_subset_size(num_heads: int, n_subsets: int = 4) -> int:
    """Default subset size: the heads split into `n_subsets` groups (16 heads → 4 of 4; 4 heads → 4 of 1)."""
    return max(1, math.ceil(num_heads / n_subsets))


def head_subset_grams(
    heads: torch.Tensor,
    groups: Sequence[Sequence[int]],
    num_prefix_tokens: int,
    tokens: str = "all",
) -> torch.Tensor:
    """(S, B, B) fp32 Grams of head-subset representations: heads (B, N, H, hd) → subset slices flattened over
    tokens × channels; `tokens="patches"` drops the prefix tokens first."""
    from seelike.cka import gram

    if tokens not in ("all", "patches"):
        raise ValueError(f"tokens must be 'all' or 'patches', got {tokens!r}")
    if tokens == "patches":
        heads = heads[:, num_prefix_tokens:]
    return torch.stack([gram(heads[:, :, list(g), :].reshape(heads.shape[0], -1)) for g in groups])


def head_subset_cka(
    model: nn.Module,
    vit_batches: Iterable,
    cnn_grams: Iterable,
    groups: Sequence[Sequence[int]],
    *,
    block: int = 0,
    tokens: str = "all",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """(S, T) minibatch CKA between the head subsets `groups` of attention block `block` and T CNN taps.

    `vit_batches` yields the images of minibatch i (or (images, labels)); `cnn_grams` yields the CNN's (T, n, n)
    Grams of the SAME images in the same order (e.g. from its activation cache).
    """
    from seelike.cka import CkaAccumulator

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    acc: CkaAccumulator | None = None
    for i, (item, g_cnn) in enumerate(zip(vit_batches, cnn_grams, strict=True)):
        x = item[0] if isinstance(item, (tuple, list)) else item
        g_cnn = torch.as_tensor(np.asarray(g_cnn))
        if g_cnn.shape[-1] != x.shape[0]:
            raise ValueError(
                f"minibatch {i}: {x.shape[0]} images for the ViT but CNN Grams of {g_cnn.shape[-1]} images; "
                "both must come from the same sample plan"
            )
        g_vit = head_subset_grams(head_outputs(model, x.to(device), block), groups, prefix, tokens)
        if acc is None:
            acc = CkaAccumulator(len(groups), g_cnn.shape[0])
        acc.add(g_vit.cpu(), g_cnn, batch_id=i)
    if acc is None:
        raise ValueError("no minibatches were given")
    return acc.result()


def default_cnn_taps(taps: Sequence[dict]) -> list[str]:
    """The paper's Fig 5 CNN taps from a cache's tap list: up to 3 unit outputs (`out`) of the first stage and
    up to 2 of the second (R50: stages.0.blocks.0..2, stages.1.blocks.0..1)."""
    outs = [t["name"] for t in taps if t.get("kind") == "out"]
    stages: dict[str, list[str]] = {}
    for name in outs:
        stages.setdefault(name.rsplit(".", 2)[0], []).append(name)
    firsts = list(stages.values())
    if len(firsts) < 1:
        raise ValueError(
            "the CNN cache lists no unit outputs (kind 'out'); name its taps in the config"
        )
    return firsts[0][:3] + (firsts[1][:2] if len(firsts) > 1 else [])


def head_subset_cka_from_cache(
    model: nn.Module,
    model_info: dict,
    attention_table: pd.DataFrame,
    samples_csv,
    dataset_cfg: dict,
    cnn_cache_dir,
    *,
    cnn_taps: Sequence[str] | None = None,
    subset_size: int | None = None,
    block: int = 0,
    tokens: str = "all",
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Fig 5: CKA of block `block`'s head subsets (grouped local → global by `attention_table`) with CNN taps.

    The CNN is not rerun: its Grams come from its activation cache, and the ViT sees the cache's images in the
    cache's minibatches (same sample list, checked by hash). Returns a tidy table and its metadata.
    """
    from seelike.cache import load_grams, read_cache_meta, repeat_rows
    from seelike.data.loader import make_loader, read_samples
    from seelike.data.samples import samples_hash

    meta = read_cache_meta(cnn_cache_dir)
    plan = meta["plan"]
    if plan["samples_hash"] != samples_hash(samples_csv):
        raise ValueError(
            f"the CNN cache {cnn_cache_dir} was made from another sample list than {samples_csv}; rebuild it"
        )
    names = [t["name"] for t in meta["taps"]]
    chosen = list(cnn_taps) if cnn_taps else default_cnn_taps(meta["taps"])
    missing = [t for t in chosen if t not in names]
    if missing:
        raise ValueError(
            f"CNN taps {missing} are not in the cache of {meta['model_name']!r}; it has {names}"
        )
    idx = [names.index(t) for t in chosen]
    att = attention_table[attention_table["block"] == block].sort_values("head")
    if att.empty:
        raise ValueError(f"the attention table has no block {block}")
    size = subset_size or auto_subset_size(len(att))
    groups = group_heads(att["mean_distance_px"].to_numpy(), size)
    dist = att["mean_distance_px"].to_numpy()
    samples = read_samples(samples_csv)

    def vit_batches():
        for r in range(plan["repeats"]):
            rows = repeat_rows(samples, plan["split"], plan["n_images"], r, plan["seed"])
            loader = make_loader(
                rows, dataset_cfg, model_info["data_config"], split=None,
                batch_size=plan["batch_size"], num_workers=num_workers,
            )  # fmt: skip
            yield from loader

    def grams():
        for r in range(plan["repeats"]):
            for b in range(len(meta["batch_sizes"])):
                yield load_grams(cnn_cache_dir, r, b, taps=idx)

    cka = head_subset_cka(
        model, vit_batches(), grams(), groups, block=block, tokens=tokens, device=device
    )
    rows = []
    for s, g in enumerate(groups):
        for t, tap in enumerate(chosen):
            rows.append(
                {
                    "subset": s,
                    "heads": ",".join(str(h) for h in g),
                    "subset_mean_distance_px": float(dist[g].mean()),
                    "cnn_tap": tap,
                    "cnn_tap_order": t,
                    "cka": float(cka[s, t]),
                }
            )
    out_meta = {
        "block": block, "subset_size": size, "tokens": tokens, "cnn_model": meta["model_name"],
        "cnn_taps": chosen, "plan": plan, "groups": groups,
    }  # fmt: skip
    return pd.DataFrame(rows), out_meta
