"""Spatial localisation (Figs 9, 10): how much of its own input patch a token's representation still holds.

For a chosen tap (default: the last block output with a spatial grid larger than 1×1) and every chosen position
t, minibatch CKA across images between the position's representation [n, D] and the raw input region at every
grid position g [n, P·P·3], giving one heatmap over the grid per position. Positions are read through the tap's
layout (`seelike.models.layout.positions`: NCHW and NHWC maps, token sequences after the tap's own prefix tokens,
which have no position and are left out). "Raw" is the model's preprocessed input (timm's transform: resize,
crop, normalise) cut into the regions the positions see:

- a tap whose grid is the patch embedding's (a ViT's tokens, a Swin's first stage): the patch embedding's kernel
  and stride (non-overlapping P×P patches for a standard ViT);
- any other grid (CNN maps, later stages of hierarchical models, overlapping or padded patch embeddings): the
  tap's own (h, w) grid over the input, position (i, j) covering rows ⌊iH/h⌋ … ⌈(i+1)H/h⌉ and likewise for
  columns (adaptive-pooling boundaries; exact tiles when h divides H).

The estimator is the unbiased-HSIC minibatch CKA of `seelike.cka` (ratio of means over minibatches). All
tokens × positions share one accumulator: per minibatch the Grams of every token and every patch are
U-centred once and multiplied once, so a full G × G map costs about as much as one row.

Uncertainty: every cell gets its delete-one-minibatch jackknife SE (`cka_se`, `CkaAccumulator.jackknife_se`). The
Figs 9/10 summary of the map (`seelike.claims.metrics.localisation_stats`: own-patch and other-patch CKA of the
interior positions, the share whose best patch is their own) is resampled as a whole, before the per-minibatch
terms are dropped: the accumulator's terms are summed over groups of consecutive minibatches
(`seelike.analyses.replicates`, at most 20 groups), the summary is recomputed on each group-deleted map (the
delete-one-group jackknife SE of `own`, `other`, `own − other`) and on 1000 seeded bootstrap resamples of the
groups (the own-is-argmax share is a step function of the cells, for which a jackknife is not reliable: its SE is
the SD of the draws, with the 95% percentile interval). These model-level numbers ride along as constant
`summary_*` columns (`SUMMARY_COLUMNS`), so the claims read them from the table alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seelike.analyses.replicates import CkaGroups, bootstrap, group_terms, jackknife
from seelike.analyses.stream import Progress, stream
from seelike.cka import MIN_BATCH, CkaAccumulator, ConstantRepresentationWarning
from seelike.device import analysis_device, exact_fp32, place_model
from seelike.models.geometry import PositionGrid, cnn_position_grid, token_grid, vit_position_grid
from seelike.models.kinds import BLOCK_OUTPUT_KINDS
from seelike.models.layout import positions, tap_grid


def patches(images: torch.Tensor, grid: PositionGrid) -> list[torch.Tensor] | torch.Tensor:
    """The input region of every position, flattened: (G, B, P) for a regular grid, else a list of (B, P_g)."""
    if grid.kernel is not None:
        u = F.unfold(
            images, kernel_size=grid.kernel, stride=grid.stride
        )  # (B, 3·kh·kw, L), row-major L
        if u.shape[-1] != grid.size:
            raise ValueError(
                f"input {tuple(images.shape[-2:])} gives {u.shape[-1]} patches, grid has {grid.size}"
            )
        return u.permute(2, 0, 1)
    return [images[:, :, r0:r1, c0:c1].reshape(len(images), -1) for r0, r1, c0, c1 in grid.regions]


def position_features(tap, act: torch.Tensor, grid: PositionGrid) -> torch.Tensor:
    """(G, B, C): one representation per grid position of `tap`'s activation, read through its layout."""
    hw = tap_grid(tap, act)
    if hw != tuple(grid.grid_hw):
        raise ValueError(
            f"tap {tap.name!r} has a {hw[0]}x{hw[1]} grid, the position grid is {grid.grid_hw[0]}x"
            f"{grid.grid_hw[1]}"
        )
    return positions(tap, act).transpose(0, 1)


def position_grid(
    model: nn.Module, tap, grid_hw: Sequence[int], img_hw: Sequence[int]
) -> PositionGrid:
    """The input region of every position of a tap with a (gh, gw) grid over (H, W) inputs: the patch
    embedding's patches where the grid is the patch embedding's (and its convolution is unpadded), else
    `cnn_position_grid`. `num_prefix_tokens` is the tap's own."""
    grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
    grid = None
    pe = getattr(model, "patch_embed", None)
    proj = getattr(pe, "proj", None)
    pad = getattr(proj, "padding", 0)
    unpadded = (
        not isinstance(proj, nn.Conv2d)
        or pad == "valid"
        or (isinstance(pad, tuple) and not any(pad))
    )
    if pe is not None and unpadded:
        try:
            if tuple(token_grid(model, img_hw).grid_hw) == grid_hw:
                grid = vit_position_grid(model, img_hw)
        except (ValueError, AttributeError, TypeError):
            grid = None
    if grid is None:
        grid = cnn_position_grid(grid_hw, img_hw)
    return replace(grid, num_prefix_tokens=int(tap.num_prefix_tokens))


def position_grams(feats: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """(G, B, B) exact-fp32 Grams of (G, B, P) features (or a list of (B, P_g))."""
    with exact_fp32():
        if isinstance(feats, torch.Tensor):
            f = feats.float()
            return torch.bmm(f, f.transpose(1, 2))
        return torch.stack([f.float() @ f.float().T for f in feats])


def patch_grams(images: torch.Tensor, grid: PositionGrid) -> torch.Tensor:
    return position_grams(patches(images, grid))


class CkaMap(NamedTuple):
    cka: np.ndarray  # (T, G)
    n_images: int
    dropped: list[int]
    token_constant: np.ndarray  # (T,) bool
    patch_constant: np.ndarray  # (G,) bool
    cka_se: np.ndarray | None = None  # (T, G) delete-one-minibatch jackknife SE
    summary: dict[str, float] | None = None  # SUMMARY_COLUMNS → value (`summary_uncertainty`)


# The model-level uncertainty of the Figs 9/10 summary (`summary_uncertainty`), one value per table, repeated on
# every row: jackknife SEs of own / other / own − other patch CKA, bootstrap SD and 95% interval of the
# own-is-argmax share, and the number of minibatch groups resampled.
SUMMARY_COLUMNS = (
    "summary_own_se",
    "summary_other_se",
    "summary_own_minus_other_se",
    "summary_own_is_argmax_se",
    "summary_own_is_argmax_ci_low",
    "summary_own_is_argmax_ci_high",
    "summary_n_groups",
)


def localisation_frame(
    tap: str,
    grid: PositionGrid,
    tokens: Sequence[int],
    cka: np.ndarray,
    token_constant: np.ndarray,
    patch_constant: np.ndarray,
) -> pd.DataFrame:
    """Tidy table of a (T, G) map: one row per (token, patch position), with the constant flags."""
    t_idx, g_idx = np.meshgrid(np.arange(len(tokens)), np.arange(grid.size), indexing="ij")
    tok = np.asarray(tokens)[t_idx.ravel()]
    pos = g_idx.ravel()
    gw = grid.grid_hw[1]
    return pd.DataFrame(
        {
            "tap": tap,
            "token": tok,
            "token_row": tok // gw,
            "token_col": tok % gw,
            "patch": pos,
            "patch_row": pos // gw,
            "patch_col": pos % gw,
            "cka": np.asarray(cka).ravel(),
            # constant across images: CKA undefined, reported as 0 (seelike.cka's policy)
            "token_constant": np.asarray(token_constant)[t_idx.ravel()],
            "patch_constant": np.asarray(patch_constant)[pos],
        }
    )


def summary_uncertainty(
    acc: CkaAccumulator,
    grid: PositionGrid,
    tokens: Sequence[int],
    token_constant: np.ndarray,
    patch_constant: np.ndarray,
    draws: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """SUMMARY_COLUMNS of a localisation map from its accumulator's per-minibatch terms (module docstring): the
    summary of each replicate map is `localisation_stats`'s (`localisation_cells` + `localisation_stats_of`), the
    one definition the claims read. NaN with fewer than 2 minibatches. `draws`: bootstrap resamples (default `replicates.BOOTSTRAP_DRAWS`)."""
    from seelike.claims.metrics import localisation_cells, localisation_stats_of

    # the cells the summary reads depend only on the layout and the constant flags: picked once
    cells = localisation_cells(localisation_frame("", grid, tokens, np.zeros((len(tokens), grid.size)),
                                                  token_constant, patch_constant))  # fmt: skip

    def stats(maps: list[np.ndarray]) -> dict[str, float]:
        s = localisation_stats_of(cells, maps[0].ravel())
        return {**s, "own_minus_other": s["own"] - s["other"]}

    groups = CkaGroups.from_repeats([group_terms(*acc.terms())], token_constant, patch_constant)
    se = jackknife(stats, [groups])
    kw = {} if draws is None else {"draws": draws}
    iv = bootstrap(lambda m: stats(m)["own_is_argmax"], [groups], seed=seed, **kw)
    return {
        "summary_own_se": se["own"],
        "summary_other_se": se["other"],
        "summary_own_minus_other_se": se["own_minus_other"],
        "summary_own_is_argmax_se": iv.sd,
        "summary_own_is_argmax_ci_low": iv.low,
        "summary_own_is_argmax_ci_high": iv.high,
        "summary_n_groups": float(groups.n_groups),
    }


def localisation_cka(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    grid: PositionGrid,
    tokens: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    draws: int | None = None,
) -> CkaMap:
    """Minibatch CKA (T, G) between chosen positions' representations and every position's input patch.

    `batches` yields (position features (G, B, C), images (B, 3, H, W)) of the same images. Returns the map
    with the number of images used, the dropped batches (fewer than 4 images), which tokens and patches are
    constant across the images (their CKA is undefined and reported as 0, e.g. blank image borders), each cell's
    jackknife SE and the summary's uncertainty (`summary_uncertainty`, `draws` bootstrap resamples). `device`:
    `seelike.device.analysis_device` (default cpu).
    """
    device = analysis_device(device)
    tokens = list(range(grid.size)) if tokens is None else [int(t) for t in tokens]
    bad = [t for t in tokens if not 0 <= t < grid.size]
    if bad:
        raise ValueError(
            f"token positions {bad} are outside the {grid.grid_hw} grid (0 … {grid.size - 1})"
        )
    acc = CkaAccumulator(len(tokens), grid.size, device=device)
    n_used = 0
    for i, (feats, images) in enumerate(batches):
        if len(images) < MIN_BATCH:
            acc.dropped.append(i)
            continue
        gt = position_grams(feats[tokens].to(device))
        gp = patch_grams(images.to(device), grid)
        acc.add(gt, gp, batch_id=i)
        n_used += len(images)
    const_t, const_p = acc.degenerate()
    if const_t.any() or const_p.any():
        warnings.warn(
            f"constant across the images: tokens {[tokens[i] for i in np.flatnonzero(const_t)]}, input patches "
            f"{np.flatnonzero(const_p).tolist()} (e.g. a blank border); their CKA is undefined, reported as 0 "
            "and flagged in the table",
            ConstantRepresentationWarning,
            stacklevel=2,
        )
    summary = None
    if acc.batches:
        summary = summary_uncertainty(acc, grid, tokens, const_t, const_p, draws=draws)
    return CkaMap(
        acc.result(), n_used, list(acc.dropped), const_t, const_p, acc.jackknife_se(), summary
    )


def _gridded(t) -> bool:
    """A spatial tap whose grid has more than one position (a 1×1 map is a pooled head: nothing to localise)."""
    return bool(t.spatial) and t.grid_hw is not None and t.grid_hw[0] * t.grid_hw[1] > 1


def default_localisation_tap(taps: Sequence, family: str | None = None):
    """The last block output (`BLOCK_OUTPUT_KINDS`: ViT / timm_stages `block`, CNN `out`, ...) with a spatial
    map or token grid larger than 1×1, never a pooled head; for a model without block outputs (family
    `generic`), the last such tap. A ValueError (its message the reason) when there is none. `family` is
    accepted for compatibility; the taps decide."""
    del family
    spatial = [t for t in taps if _gridded(t)]
    chosen = [t for t in spatial if t.kind in BLOCK_OUTPUT_KINDS]
    if not any(t.kind in BLOCK_OUTPUT_KINDS for t in taps):
        chosen = spatial
    if not chosen:
        raise ValueError(
            "none of its block outputs has a spatial map or token grid larger than 1×1 at the model's input size; "
            "name a tap in localisation.taps.<model>"
        )
    return chosen[-1]


def localisation_support(taps: Sequence, tap_name: str | None = None) -> str | None:
    """None when `localisation_maps` can run on a model with `taps` (and the tap named in the config, if any),
    else the reason (the dry run's refusal)."""
    if tap_name is not None:
        by_name = {t.name: t for t in taps}
        if tap_name not in by_name:
            return f"localisation.taps names {tap_name!r}: not a tap of this model (taps.csv lists them)"
        t = by_name[tap_name]
        if not t.spatial:
            return f"tap {tap_name!r} has no spatial map or token grid (layout {t.layout}); layouts in taps.csv"
        return None
    try:
        default_localisation_tap(taps)
    except ValueError as e:
        return str(e)
    return None


def default_plot_tokens(grid_hw: Sequence[int]) -> list[int]:
    """A corner, an edge, two interior positions, the centre and the far corner (deduplicated, in order)."""
    h, w = (int(v) for v in grid_hw)
    rc = [
        (0, 0),
        (0, w // 2),
        (h // 4, w // 4),
        (h // 2, w // 2),
        (3 * h // 4, 3 * w // 4),
        (h - 1, w - 1),
    ]
    out: list[int] = []
    for r, c in rc:
        g = r * w + c
        if g not in out:
            out.append(g)
    return out


@dataclass
class LocalisationResult:
    tap: str
    grid: PositionGrid
    tokens: list[int]
    cka: np.ndarray  # (T, G)
    n_images: int
    dropped: list[int]
    token_constant: np.ndarray  # (T,) bool
    patch_constant: np.ndarray  # (G,) bool
    cka_se: np.ndarray | None = None  # (T, G) delete-one-minibatch jackknife SE
    # SUMMARY_COLUMNS → value (`summary_uncertainty`)
    summary: dict[str, float] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (token, patch position), each cell's `cka_se`, and the summary's
        uncertainty as constant `SUMMARY_COLUMNS` (NaN where unknown)."""
        df = localisation_frame(self.tap, self.grid, self.tokens, self.cka, self.token_constant,
                                self.patch_constant)  # fmt: skip
        se = np.full(self.cka.shape, np.nan) if self.cka_se is None else self.cka_se
        df.insert(df.columns.get_loc("cka") + 1, "cka_se", np.asarray(se, np.float64).ravel())
        for c in SUMMARY_COLUMNS:
            df[c] = float(self.summary.get(c, np.nan))
        return df

    def fields(self) -> dict:
        """What the table's metadata records of the result: tap, grid geometry, dropped minibatches."""
        g = self.grid
        return {
            "tap": self.tap,
            "grid_hw": list(g.grid_hw),
            "img_hw": list(g.img_hw),
            "patch_px": list(g.kernel) if g.kernel else None,
            "stride_px": list(g.stride) if g.stride else None,
            "num_prefix_tokens": g.num_prefix_tokens,
            "dropped_batches": self.dropped,
            "input": "preprocessed model input (timm transform), cut into each position's region",
            "cka_se": "delete-one-minibatch jackknife of each cell",
            "summary_se": "localisation_stats of each map with one group of consecutive minibatches left out "
            "(jackknife: own, other, own - other) or the groups resampled (1000 seeded bootstrap draws: "
            "own-is-argmax SD and 95% percentile interval)",
        }


@exact_fp32()
def localisation_maps(
    model: nn.Module,
    batches: Iterable,
    tap=None,
    tokens: Sequence[int | Sequence[int]] | None = None,
    device: str | torch.device | None = None,
    *,
    n_images: int | None = None,
    progress: Progress | None = None,
) -> LocalisationResult:
    """Run the model over `batches` (images, or (images, labels)) and build the localisation map of one tap
    (`tap`: a Tap, a tap name, or None for `default_localisation_tap`; it must have a spatial map or token
    grid); `tokens` as in `token_indices`.
    At most `n_images` images; `progress` as in `seelike.analyses.stream`; `device`:
    `seelike.device.analysis_device` (default: where the model is)."""
    from seelike.models.taps import discover_taps, record_taps, taps_named

    device = place_model(model, device)
    batch_it = stream(batches, device, n_images=n_images, progress=progress)
    first = next(batch_it, None)
    if first is None:
        raise ValueError("no images to localise over")
    img_hw = (int(first.x.shape[-2]), int(first.x.shape[-1]))
    taps = discover_taps(model, img_hw)  # layouts and grids at the size of the images
    if tap is None:
        tap = default_localisation_tap(taps)
    elif isinstance(tap, str):
        (tap,) = taps_named(taps, [tap], "localisation.taps")
    else:  # a Tap: as discovered at this input size, where discovery names it
        tap = next((t for t in taps if t.name == tap.name), tap)
    if not tap.spatial:
        raise ValueError(
            f"tap {tap.name!r} has no spatial map or token grid (layout {tap.layout}): localisation needs one; "
            "choose another tap in localisation.taps (layouts in taps.csv)"
        )
    grid: list[PositionGrid] = []
    captured: list[torch.Tensor] = []

    def on_tap(_t, act: torch.Tensor) -> None:
        captured.append(act.detach().clone())

    def features():
        with record_taps(model, [tap], on_tap), torch.inference_mode():
            for batch in chain([first], batch_it):
                x = batch.x
                captured.clear()
                model(x)
                act = captured[0]
                if not grid:
                    grid.append(position_grid(model, tap, tap_grid(tap, act), img_hw))
                yield position_features(tap, act, grid[0]), x

    it = features()
    head = next(it)  # the first batch fixes the grid
    toks = token_indices(tokens, grid[0])
    m = localisation_cka(chain([head], it), grid[0], toks, device)
    return LocalisationResult(
        tap.name, grid[0], toks, m.cka, m.n_images, m.dropped, m.token_constant, m.patch_constant,
        m.cka_se, m.summary or {},
    )  # fmt: skip


def token_indices(tokens: Sequence[int | Sequence[int]] | None, grid: PositionGrid) -> list[int]:
    """Row-major position indices from indices or (row, col) pairs (negative = from the end); None = all."""
    if tokens is None:
        return list(range(grid.size))
    h, w = grid.grid_hw
    out = []
    for t in tokens:
        if isinstance(t, (int, np.integer)):
            g = int(t)
        else:
            r, c = (int(v) for v in t)
            r, c = r + h if r < 0 else r, c + w if c < 0 else c
            if not (0 <= r < h and 0 <= c < w):
                raise ValueError(
                    f"token {list(t)} lies outside the {h}×{w} grid; fix localisation.tokens"
                )
            g = r * w + c
        if not 0 <= g < grid.size:
            raise ValueError(
                f"token position {g} lies outside the {h}×{w} grid; fix localisation.tokens"
            )
        if g not in out:
            out.append(g)
    return out
