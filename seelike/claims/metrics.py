"""The numbers behind the claims: pure functions of the tidy tables the rules write (CKA long tables, attention
distances, head-subset CKA, ERF sizes, skip statistics, localisation maps, probe accuracies, per-block CKA).
Definitions the paper leaves open are stated in each docstring and repeated in the claims table's note column."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from seelike.claims.table import SEEN_SE
from seelike.models.kinds import BLOCK_OUTPUT_KINDS
from seelike.tables import PROBE_CORRECT, accuracy_contrast, cka_array, probe_shots, unpack_correct

# A head is "local" when its mean distance is below this fraction of the distance uniform attention over the same
# grid would give (the paper's "global" reference); half keeps heads that look a little past their neighbours
# out of the local count on the small grids the embedded default uses.
LOCAL_FRACTION = 0.5


# Fig 2: the ViT depth bands the paper names ("lowest quarter", "next third").
LOWEST_QUARTER = 0.25


NEXT_THIRD_END = 0.25 + 1 / 3


# ---------------------------------------------------------------- shared helpers
def _nanmean(a: np.ndarray) -> float:
    """Mean of the finite entries (NaN when there are none, without numpy's empty-slice warning)."""
    v = np.asarray(a, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 2 points or a constant input."""
    xs, ys = pd.Series(x, dtype=float), pd.Series(y, dtype=float)
    keep = xs.notna() & ys.notna()
    if keep.sum() < 2:
        return math.nan
    rx, ry = xs[keep].rank().to_numpy(), ys[keep].rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def third_size(n: int) -> int:
    return max(1, n // 3)


# ---------------------------------------------------------------- Fig 1: self-similarity
def self_cka_thirds(df: pd.DataFrame) -> dict[str, float]:
    """Fig 1 uniformity of one model's self-CKA table.

    `lowest_vs_highest_third`: mean CKA between the first ⌊n/3⌋ and the last ⌊n/3⌋ taps in forward order (n taps);
    `adjacent`: mean CKA of consecutive taps (i, i+1). Constant taps are left out.
    """
    return self_cka_thirds_of(cka_array(df)[0])


def self_cka_thirds_of(m: np.ndarray) -> dict[str, float]:
    """`self_cka_thirds` of a self-CKA matrix in forward tap order (constant cells NaN)."""
    n = m.shape[0]
    k = third_size(n)
    return {
        "lowest_vs_highest_third": _nanmean(m[:k, n - k :]),
        "adjacent": _nanmean(np.diagonal(m, offset=1)) if n > 1 else math.nan,
        "n_taps": float(n),
    }


def block_output_cka(
    df: pd.DataFrame, kinds: Sequence[str] = BLOCK_OUTPUT_KINDS
) -> pd.DataFrame | None:
    """The rows of a long CKA table whose two taps are both block outputs (`kind_a`, `kind_b` in `kinds`: ViT
    `embed` and block outputs, CNN `stem` and unit outputs), so that a Fig 1 metric can be read on block outputs
    as well as on every tap. None when the table has no kind columns or fewer than 3 such taps on a side (no
    thirds to compare)."""
    if "kind_a" not in df or "kind_b" not in df:
        return None
    keep = df["kind_a"].astype(str).isin(kinds) & df["kind_b"].astype(str).isin(kinds)
    d = df[keep]
    if d["index_a"].nunique() < 3 or d["index_b"].nunique() < 3:
        return None
    return d


# timm ResNet `layer{s}.`, ResNetV2 / BiT `stages.{s}.`, EfficientNet `blocks.{s}.{b}.` (ViT `blocks.{i}.attn` has
# no second index, so it never matches)
_STAGE_PATTERNS = (
    re.compile(r"^layer(\d+)\."),
    re.compile(r"^stages\.(\d+)\."),
    re.compile(r"^blocks\.(\d+)\.\d+\."),
)


def tap_stage(name: str) -> int | None:
    """CNN stage of a tap from its name: timm ResNet `layer{s}.…`, ResNetV2 / BiT `stages.{s}.…`, EfficientNet
    `blocks.{s}.{b}.…`; else None (stem, head, final norm, ViT taps)."""
    for pat in _STAGE_PATTERNS:
        if m := pat.match(name):
            return int(m.group(1))
    return None


def stage_cka(df: pd.DataFrame) -> dict[str, float] | None:
    """Fig 1 stage structure: mean self-CKA of tap pairs (i < j) inside one stage vs in different stages.

    Only taps with a stage (`tap_stage`) count; None when fewer than two stages are found (a ViT).
    """
    m, names, _ = cka_array(df)
    return stage_cka_of(m, names)


def stage_cka_of(m: np.ndarray, names: Sequence[str]) -> dict[str, float] | None:
    """`stage_cka` of a self-CKA matrix whose taps are `names`, in forward order."""
    stage = np.array([-1 if (s := tap_stage(t)) is None else s for t in names])
    if len(set(stage[stage >= 0].tolist())) < 2:
        return None
    i, j = np.triu_indices(len(names), k=1)
    staged = (stage[i] >= 0) & (stage[j] >= 0)
    same = staged & (stage[i] == stage[j])
    across = staged & (stage[i] != stage[j])
    return {"within": _nanmean(m[i[same], j[same]]), "across": _nanmean(m[i[across], j[across]])}


# ---------------------------------------------------------------- Fig 2: cross-model CKA
def cross_cka_alignment(df: pd.DataFrame, cnn_side: str = "a") -> dict[str, float]:
    """Fig 2 alignment of a ViT × CNN CKA table; `cnn_side` says which of the table's models is the CNN.

    For each CNN tap: the relative depth j/(n_vit − 1) of its best-matching ViT tap (argmax of CKA), averaged over
    the CNN's lower half (first ⌊n/2⌋ taps) and upper half (last ⌊n/2⌋). For each ViT tap: its best CKA with any
    CNN tap, averaged over the ViT's last third (last ⌊n/3⌋ taps) and over its first two thirds.
    """
    if cnn_side not in ("a", "b"):
        raise ValueError(f"cnn_side must be 'a' or 'b', got {cnn_side!r}")
    m, _, _ = cka_array(df)
    return cross_cka_alignment_of(m.T if cnn_side == "b" else m)


def cross_cka_alignment_of(m: np.ndarray) -> dict[str, float]:
    """`cross_cka_alignment` of a CNN × ViT CKA matrix (rows: CNN taps, columns: ViT taps, forward order)."""
    n_c, n_v = m.shape
    rows_ok = np.isfinite(m).any(axis=1)
    best = np.full(n_c, np.nan)
    best[rows_ok] = np.nanargmax(m[rows_ok], axis=1) / max(n_v - 1, 1)
    h = n_c // 2
    vit_best = np.full(n_v, np.nan)
    cols_ok = np.isfinite(m).any(axis=0)
    vit_best[cols_ok] = np.nanmax(m[:, cols_ok], axis=0)
    k = third_size(n_v)
    return {
        "cnn_lower_half_best_vit_depth": _nanmean(best[:h]),
        "cnn_upper_half_best_vit_depth": _nanmean(best[n_c - h :]),
        "vit_last_third_best_cnn_cka": _nanmean(vit_best[n_v - k :]),
        "vit_first_two_thirds_best_cnn_cka": _nanmean(vit_best[: n_v - k]),
    }


# ---------------------------------------------------------------- Figs 3, 4: attention distance
def uniform_attention_distance(
    grid_hw: Sequence[int],
    patch_px: float | Sequence[float],
    stride_px: float | Sequence[float] | None = None,
) -> float:
    """Mean attention distance (px) of uniform attention over the patch grid: the mean distance between patch
    centres over all ordered pairs, self-pairs included (a query attends to itself too). ≈ 116 px at 224 px with
    16-px patches; the reference point for "global". Same geometry as
    `seelike.models.geometry.patch_centres`, in numpy so that this module does not import torch."""

    def pair(v: float | Sequence[float]) -> tuple[float, float]:
        return (float(v), float(v)) if isinstance(v, (int, float)) else (float(v[0]), float(v[1]))

    (ph, pw), (sh, sw) = pair(patch_px), pair(stride_px if stride_px is not None else patch_px)
    r, c = np.meshgrid(np.arange(int(grid_hw[0])), np.arange(int(grid_hw[1])), indexing="ij")
    centres = np.stack([r.ravel() * sh + ph / 2, c.ravel() * sw + pw / 2], axis=1)
    return float(np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1)).mean())


def attention_block_stats(
    df: pd.DataFrame,
    uniform_px: float,
    local_fraction: float = LOCAL_FRACTION,
    k_se: float = SEEN_SE,
) -> pd.DataFrame:
    """Per attention block: min, max and spread (max − min) of the heads' mean distances (px), the head count and
    the number of local heads (mean distance < `local_fraction` × `uniform_px`).

    With the heads' standard errors over images (`se_distance_px`; a head without one is judged by its mean
    alone): `n_local_sure` heads lie below the threshold by more than `k_se` SE, `n_global_sure` at or above it
    by more, `n_undecided` = the rest. `spread_se` = √(SE²(max head) + SE²(min head)), the delta method with the
    two extreme heads taken as fixed and independent (NaN without SEs)."""
    thr = local_fraction * uniform_px
    rows = []
    for block, g in df.groupby("block", sort=True):
        d = g["mean_distance_px"].to_numpy(dtype=np.float64)
        se = (
            g["se_distance_px"].to_numpy(dtype=np.float64)
            if "se_distance_px" in g
            else np.full(d.shape, math.nan)
        )
        keep = np.isfinite(d)
        d, se = d[keep], se[keep]
        margin = k_se * np.where(np.isfinite(se), se, 0.0)
        # the two extreme heads, two different ones when they tie; one head alone spreads by exactly 0
        order = np.argsort(d, kind="stable")
        lo, hi = (int(order[0]), int(order[-1])) if d.size else (0, 0)
        rows.append(
            {
                "block": int(block),
                "min_px": float(d[lo]) if d.size else math.nan,
                "max_px": float(d[hi]) if d.size else math.nan,
                "spread_px": float(d[hi] - d[lo]) if d.size else math.nan,
                "spread_se": (math.hypot(se[hi], se[lo]) if lo != hi else 0.0)
                if d.size
                else math.nan,
                "n_heads": int(d.size),
                "n_local": int((d < thr).sum()),
                "n_local_sure": int((d + margin < thr).sum()),
                "n_global_sure": int((d - margin >= thr).sum()),
            }
        )
    s = pd.DataFrame(rows)
    if len(s):
        s["n_undecided"] = s["n_heads"] - s["n_local_sure"] - s["n_global_sure"]
    return s


def attention_early_late(
    df: pd.DataFrame, uniform_px: float, local_fraction: float = LOCAL_FRACTION
) -> dict[str, float]:
    """Figs 3/4 lower vs higher layers: the first two blocks (early) against the last two (late).

    Spreads are the mean of the two blocks' spreads, their SE the mean of the two blocks' `spread_se` (an upper
    bound, whatever the blocks' correlation); head counts are summed over the two blocks: the point counts
    (`*_local_heads`, `early_global_heads`) and those decided by `SEEN_SE` SE (`*_sure`, `*_undecided`:
    `attention_block_stats`).
    """
    s = attention_block_stats(df, uniform_px, local_fraction)
    early, late = s.head(2), s.tail(2)
    return {
        "early_spread_px": float(early["spread_px"].mean()),
        "late_spread_px": float(late["spread_px"].mean()),
        "early_spread_se": float(early["spread_se"].mean()),
        "late_spread_se": float(late["spread_se"].mean()),
        "early_local_heads": float(early["n_local"].sum()),
        "early_global_heads": float((early["n_heads"] - early["n_local"]).sum()),
        "early_local_sure": float(early["n_local_sure"].sum()),
        "early_global_sure": float(early["n_global_sure"].sum()),
        "early_undecided": float(early["n_undecided"].sum()),
        "late_local_heads": float(late["n_local"].sum()),
        "late_local_sure": float(late["n_local_sure"].sum()),
        "late_global_sure": float(late["n_global_sure"].sum()),
        "late_undecided": float(late["n_undecided"].sum()),
        "late_heads": float(late["n_heads"].sum()),
        "n_blocks": float(len(s)),
    }


# ---------------------------------------------------------------- Fig 5: head-subset CKA
def head_subset_trend(df: pd.DataFrame) -> dict[str, float]:
    """Fig 5: per head subset, its mean distance and its CKA averaged over the CNN taps; the Spearman correlation
    of the two over subsets (the paper: falls monotonically, so negative) and the CKA of the most local and the
    most global subset."""
    g = df.groupby("subset", sort=True).agg(
        distance=("subset_mean_distance_px", "first"), cka=("cka", "mean")
    )
    return head_subset_trend_of(g["distance"].to_numpy(), g["cka"].to_numpy()[:, None])


def head_subset_trend_of(distance: np.ndarray, m: np.ndarray) -> dict[str, float]:
    """`head_subset_trend` of an (S, T) head-subset × CNN-tap CKA matrix and the subsets' mean distances (S,)."""
    order = np.argsort(np.asarray(distance, dtype=np.float64), kind="stable")
    cka = np.array([_nanmean(row) for row in np.asarray(m)[order]])
    return {
        "spearman_distance_vs_cka": spearman(np.asarray(distance)[order], cka),
        "most_local_subset_cka": float(cka[0]),
        "most_global_subset_cka": float(cka[-1]),
        "n_subsets": float(len(cka)),
    }


# ---------------------------------------------------------------- Fig 6: effective receptive fields
def _erf_taps(df: pd.DataFrame, size: str) -> dict[str, pd.DataFrame]:
    """Per residual setting, the ERF rows in forward order; taps whose map has no mass (NaN size) left out."""
    out = {}
    for residual, g in df.groupby("residual", sort=False):
        g = g.sort_values("order")
        g = g[np.isfinite(g[size].to_numpy(dtype=np.float64))]
        if not g.empty:
            out[str(residual)] = g
    return out


def _erf_replicates(row: pd.Series, size: str) -> np.ndarray | None:
    """A row's leave-one-group-out sizes (`{size}_jk`, `seelike.analyses.receptive_field.erf_size_uncertainty`);
    None without (an older table, fewer than 2 image groups)."""
    reps = row.get(f"{size}_jk")
    if reps is None or np.ndim(reps) != 1 or len(reps) < 2:
        return None
    return np.asarray(reps, dtype=np.float64)


def erf_ratio(num: pd.Series, den: pd.Series, size: str = "r50_px") -> dict[str, float]:
    """The ratio of two ERF table rows' sizes and its SE: `ratio`, `se`, `joint` (1: the delete-one-group
    jackknife of the ratio itself, both rows' replicates from the same image groups — one table, or two models run
    on the same sample list, as many images and groups; 0: the delta method on the log ratio with the two SEs taken
    as independent, `log_ratio`), `n_groups`. SE NaN where neither is possible."""
    from seelike.jackknife import jackknife_se

    a, b = float(num[size]), float(den[size])
    ra, rb = _erf_replicates(num, size), _erf_replicates(den, size)
    same = num.get("n_images") == den.get("n_images")
    if ra is not None and rb is not None and len(ra) == len(rb) and same:
        with np.errstate(divide="ignore", invalid="ignore"):
            se = jackknife_se(ra / rb) if b > 0 else math.nan
        return {"ratio": a / b if b > 0 else math.nan, "se": se, "joint": 1.0, "n_groups": len(ra)}
    ratio, se_log = log_ratio(
        a, float(num.get(f"{size}_se", math.nan)), b, float(den.get(f"{size}_se", math.nan))
    )
    return {"ratio": ratio, "se": ratio * se_log, "joint": 0.0, "n_groups": math.nan}


def erf_growth(df: pd.DataFrame, size: str = "r50_px") -> dict[str, dict[str, float]]:
    """Fig 6: per residual setting (post / pre / explicit) the ERF size of the first and last tap in forward
    order, their ratio, the Spearman correlation of size with depth, and the first non-stem tap's size (the CNN's
    first residual stage). Taps whose map has no mass (NaN size) are left out. With their SEs (NaN where the
    table has none): `first_se`, `last_se`, `first_non_stem_se` the table's jackknife SEs (`{size}_se`),
    `last_over_first_se` the jackknife of the ratio itself over the same image groups (`erf_ratio`)."""
    out: dict[str, dict[str, float]] = {}
    for residual, g in _erf_taps(df, size).items():
        v = g[size].to_numpy(dtype=np.float64)
        se = g[f"{size}_se"].to_numpy(np.float64) if f"{size}_se" in g else np.full(len(g), np.nan)
        non_stem = np.flatnonzero(g["kind"].astype(str).to_numpy() != "stem")
        first, last = g.iloc[0], g.iloc[-1]
        r = erf_ratio(last, first, size)
        out[residual] = {
            "first": float(v[0]),
            "last": float(v[-1]),
            "last_over_first": float(v[-1] / v[0]) if v[0] > 0 else math.nan,
            "spearman_depth": spearman(np.arange(len(v)), v),
            "first_non_stem": float(v[non_stem[0]]) if len(non_stem) else math.nan,
            "first_se": float(se[0]),
            "last_se": float(se[-1]),
            "last_over_first_se": r["se"] if r["joint"] else math.nan,
            "first_non_stem_se": float(se[non_stem[0]]) if len(non_stem) else math.nan,
        }
    return out


def erf_first_stage_ratio(
    vit: pd.DataFrame, cnn: pd.DataFrame, size: str = "r50_px"
) -> dict[str, float] | None:
    """Fig 6 across models: the ViT's first post-residual tap's size over the CNN's first non-stem post-residual
    tap's (its first stage output), with its SE (`erf_ratio`: a joint jackknife when both ran on the same image
    groups, else the delta method). None when either has no such tap."""
    tv, tc = _erf_taps(vit, size).get("post"), _erf_taps(cnn, size).get("post")
    if tv is None or tc is None:
        return None
    tc = tc[tc["kind"].astype(str) != "stem"]
    if tc.empty:
        return {"ratio": math.nan, "se": math.nan, "joint": 0.0, "n_groups": math.nan}
    return erf_ratio(tv.iloc[0], tc.iloc[0], size)


# ---------------------------------------------------------------- Fig 7: skip connections
def skip_ratio_summary(df: pd.DataFrame) -> dict[str, float]:
    """Fig 7: ‖z‖/‖f(z)‖ per block and token type (cls / patch for a ViT, spatial for a CNN).

    A block's ratio is the mean of its finite token ratios over both sublayers (ViT attention and MLP); infinite
    ratios (zero branch) are left out and counted in `n_inf`. Per token type: the mean over blocks, over the first
    ⌊B/2⌋ blocks (early) and over the last ⌊B/2⌋ (late). Keys: `{type}_mean`, `{type}_early`, `{type}_late`, and
    `{…}_se`: each mean's SE over images, the same mean taken of the rows' `ratio_se` (the tokens, sublayers and
    blocks come from the same images: the mean of their SEs bounds the SE of their mean from above, whatever
    their correlation; NaN without `ratio_se`).
    """
    r = df["ratio_mean"].to_numpy(dtype=np.float64)
    fin = df[np.isfinite(r)]
    if "ratio_se" not in fin:
        fin = fin.assign(ratio_se=math.nan)
    out: dict[str, float] = {"n_inf": float(np.isinf(r).sum())}
    for ttype, g in fin.groupby("token_type", sort=False):
        per_block = g.groupby("block", sort=True)[["ratio_mean", "ratio_se"]].mean().to_numpy()
        h = len(per_block) // 2
        for i, suffix in ((0, ""), (1, "_se")):
            v = per_block[:, i]
            out[f"{ttype}_mean{suffix}"] = float(v.mean())
            out[f"{ttype}_early{suffix}"] = float(v[:h].mean()) if h else math.nan
            out[f"{ttype}_late{suffix}"] = float(v[len(v) - h :].mean()) if h else math.nan
    return out


def log_ratio(a: float, se_a: float, b: float, se_b: float) -> tuple[float, float]:
    """a / b of two positive estimates and the SE of log(a / b) by the delta method, √((se_a/a)² + (se_b/b)²)
    (the two taken as independent; NaN when either SE is unknown or a ratio is not positive). The SE of the
    ratio itself is ratio × that SE."""
    ratio = a / b if b != 0 else math.nan
    if not (a > 0 and b > 0 and math.isfinite(se_a) and math.isfinite(se_b)):
        return ratio, math.nan
    return ratio, math.hypot(se_a / a, se_b / b)


# ---------------------------------------------------------------- Figs 9, 10: localisation
def localisation_stats(df: pd.DataFrame) -> dict[str, float]:
    """Figs 9/10 for interior positions (not on the grid's border): mean CKA of a position's representation with
    its own input patch, mean over positions of its mean CKA with every other patch, and the fraction whose
    best-matching patch (argmax) is its own. Tokens or patches constant over the images are left out.
    (`localisation_cells` picks the cells, `localisation_stats_of` reads them: the analysis recomputes the
    summary on its resampled maps with the same two functions.)"""
    return localisation_stats_of(localisation_cells(df), df["cka"].to_numpy(np.float64))


class LocalisationCells(NamedTuple):
    """The cells of a localisation table the Figs 9/10 summary reads, as row positions: `own` (each kept token's
    own cell), `rows` (n_tokens, m) each kept token's cells in table order (padding -1), `is_own` (n_tokens, m)
    which of them is its own patch. Kept tokens: interior, not constant, own patch not constant."""

    own: np.ndarray
    rows: np.ndarray
    is_own: np.ndarray


def localisation_cells(df: pd.DataFrame) -> LocalisationCells:
    """`LocalisationCells` of a localisation table (`localisation_stats`'s definitions)."""
    keep = np.ones(len(df), dtype=bool)
    for col in ("patch_constant", "token_constant"):
        if col in df:
            keep &= ~df[col].to_numpy(bool)
    h = int(df["patch_row"].max()) + 1
    w = int(df["patch_col"].max()) + 1
    tr, tc = df["token_row"].to_numpy(), df["token_col"].to_numpy()
    keep &= (tr >= 1) & (tr <= h - 2) & (tc >= 1) & (tc <= w - 2)  # interior: not on the border
    tok, pat = df["token"].to_numpy(), df["patch"].to_numpy()
    own = np.flatnonzero(keep & (tok == pat))
    tokens = np.unique(tok[own])  # a token whose own patch is constant has nothing to match
    sel = np.flatnonzero(keep & np.isin(tok, tokens))
    t_of = np.searchsorted(tokens, tok[sel])
    # table order within each token: an argmax tie goes to the first, as pandas' idxmax
    order = np.argsort(t_of, kind="stable")
    sel, t_of = sel[order], t_of[order]
    counts = np.bincount(t_of, minlength=len(tokens))
    col = np.arange(len(sel)) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.full((len(tokens), int(counts.max(initial=0))), -1, dtype=np.int64)
    rows[t_of, col] = sel
    is_own = (rows >= 0) & (pat[rows] == tokens[:, None])
    return LocalisationCells(own, rows, is_own)


def localisation_stats_of(cells: LocalisationCells, cka: np.ndarray) -> dict[str, float]:
    """`localisation_stats` from the table's `cka` column (any values on the same rows: a resampled map)."""
    n = len(cells.rows)
    if n == 0:
        return {"own": math.nan, "other": math.nan, "own_is_argmax": math.nan, "n_interior": 0.0}
    cka = np.asarray(cka, dtype=np.float64)
    v = np.where(cells.rows >= 0, cka[cells.rows], np.nan)
    # each token's mean over its other patches (NaN cells skipped, as pandas does); a token without any: NaN,
    # skipped in the mean over tokens
    ok = np.isfinite(v) & ~cells.is_own
    n_ok = ok.sum(1)
    other = np.where(n_ok > 0, np.where(ok, v, 0.0).sum(1) / np.maximum(n_ok, 1), np.nan)
    own, other = _nanmean(cka[cells.own]), _nanmean(other)
    best = np.argmax(np.where(np.isnan(v), -np.inf, v), axis=1)
    return {
        "own": own,
        "other": other,
        "own_is_argmax": float(cells.is_own[np.arange(n), best].mean()),
        "n_interior": float(n),
    }


PROBE_POSITIONS = ("first", "middle", "last")


def probe_rows(
    df: pd.DataFrame, aggregation: str, shots: str | None = None
) -> dict[str, pd.Series] | None:
    """The probe-table rows of one aggregation at the first, middle (depth nearest 0.5, the lower on a tie) and
    last probed tap; `shots` defaults to 10 when present, else the table's first level. None when the
    aggregation is absent."""
    shots = probe_shots(df, shots)
    d = df[(df["aggregation"] == aggregation) & (df["shots"].astype(str) == str(shots))]
    if d.empty:
        return None
    d = d.sort_values("depth", kind="stable")
    mid = int(np.argmin(np.abs(d["depth"].to_numpy(dtype=np.float64) - 0.5)))
    return dict(zip(PROBE_POSITIONS, (d.iloc[0], d.iloc[mid], d.iloc[-1]), strict=True))


def probe_contrast(rows: Sequence[pd.Series], weights: Sequence[float]) -> tuple[float, float]:
    """Σ wₖ·accuracyₖ of probe-table rows scored on the same test images, and its SE over the images: paired
    (`seelike.tables.accuracy_contrast` on the rows' per-image correctness) when every row keeps it, else
    √Σ wₖ² SEₖ² from the rows' `accuracy_se` (independent binomials), else NaN."""
    value = float(sum(w * float(r["accuracy"]) for w, r in zip(weights, rows, strict=True)))
    bits = [r.get(PROBE_CORRECT) for r in rows]
    if all(isinstance(b, bytes) for b in bits):
        correct = np.stack(
            [unpack_correct(b, int(r["n_test"])) for b, r in zip(bits, rows, strict=True)]
        )
        return value, accuracy_contrast(correct, weights)[1]
    ses = [float(r.get("accuracy_se", math.nan)) for r in rows]
    return value, math.sqrt(sum((w * s) ** 2 for w, s in zip(weights, ses, strict=True)))


def probe_depth(
    df: pd.DataFrame, aggregation: str, shots: str | None = None
) -> dict[str, float] | None:
    """Figs 11/13: probe accuracy of one aggregation at the first, middle and last probed tap (`probe_rows`).
    None when the aggregation is absent."""
    rows = probe_rows(df, aggregation, shots)
    if rows is None:
        return None
    return {pos: float(r["accuracy"]) for pos, r in rows.items()}


def probe_depth_se(
    df: pd.DataFrame, aggregation: str, shots: str | None = None
) -> dict[str, float] | None:
    """The standard errors over the test images of `probe_depth`'s accuracies (`first_se`, `middle_se`,
    `last_se`) and `last_minus_first` with its paired SE (`probe_contrast`). None when the aggregation is
    absent."""
    rows = probe_rows(df, aggregation, shots)
    if rows is None:
        return None
    out = {f"{pos}_se": probe_contrast([r], [1.0])[1] for pos, r in rows.items()}
    out["last_minus_first"], out["last_minus_first_se"] = probe_contrast(
        [rows["last"], rows["first"]], [1.0, -1.0]
    )
    return out


def probe_gap(
    df: pd.DataFrame, aggregation: str, reference: str, shots: str | None = None
) -> dict[str, float] | None:
    """Figs 11/13: accuracy of `aggregation` minus `reference` at the middle and last tap (each's own
    `probe_rows`), and how much the gap closes from middle to last (last gap − middle gap), each with its paired
    SE over the test images (`probe_contrast`). None when either aggregation is absent."""
    a, b = probe_rows(df, aggregation, shots), probe_rows(df, reference, shots)
    if a is None or b is None:
        return None
    out: dict[str, float] = {}
    for pos in ("middle", "last"):
        out[pos], out[f"{pos}_se"] = probe_contrast([a[pos], b[pos]], [1.0, -1.0])
    out["closes"], out["closes_se"] = probe_contrast(
        [a["last"], b["last"], a["middle"], b["middle"]], [1.0, -1.0, -1.0, 1.0]
    )
    return out


# ---------------------------------------------------------------- Fig 8: no skip connection in block i
def no_skip_specs(models: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, str | None]]:
    """Models with `remove_skip` → (their first removed block, a reference model or None).

    The reference is the first configured model of the same arch and kwargs without `remove_skip`.
    """
    out: dict[str, tuple[int, str | None]] = {}
    for name, spec in models.items():
        rs = spec.get("remove_skip")
        if not rs:
            continue
        key = (spec.get("arch"), spec.get("kwargs") or {})
        ref = next(
            (
                m
                for m, s in models.items()
                if not s.get("remove_skip") and (s.get("arch"), s.get("kwargs") or {}) == key
            ),
            None,
        )
        out[name] = (int(rs["blocks"][0]), ref)
    return out


_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def no_skip_partition(df: pd.DataFrame, block: int) -> dict[str, float]:
    """Fig 8: does the self-CKA matrix split at `block` (negative = from the end)?

    Taps before block `block` (forward position before its first tap, the embedding included) form one side, taps
    after its last tap (the final norm included) the other; the block's own taps are left out. `within`: mean CKA
    of distinct tap pairs on the same side; `across`: mean CKA of pairs on opposite sides; `partition` = within −
    across.
    """
    m, names, _ = cka_array(df)
    return no_skip_partition_of(m, names, block)


def no_skip_partition_of(m: np.ndarray, names: Sequence[str], block: int) -> dict[str, float]:
    """`no_skip_partition` of a self-CKA matrix whose taps are `names`, in forward order."""
    blocks = np.array([int(mt.group(1)) if (mt := _BLOCK.match(t)) else -1 for t in names])
    n_blocks = int(blocks.max()) + 1
    b = block + n_blocks if block < 0 else block
    own = np.flatnonzero(blocks == b)
    if not 0 <= b < n_blocks or own.size == 0:
        raise ValueError(f"block {block} is not a block of this model ({n_blocks} blocks)")
    before = np.arange(0, own[0])
    after = np.arange(own[-1] + 1, len(names))
    if before.size == 0 or after.size == 0:
        return {"within": math.nan, "across": math.nan, "partition": math.nan}

    def pairs_mean(idx: np.ndarray) -> list[float]:
        i, j = np.triu_indices(len(idx), k=1)
        return m[idx[i], idx[j]].tolist()

    within = _nanmean(np.array(pairs_mean(before) + pairs_mean(after)))
    across = _nanmean(m[np.ix_(before, after)])
    return {"within": within, "across": across, "partition": within - across}


# ---------------------------------------------------------------- Fig 12: per-block CKA between checkpoints
def per_block_thirds(df: pd.DataFrame) -> dict[str, float]:
    """Fig 12: per-block CKA table (tap, kind, block, depth, cka, std) → mean CKA of the lowest third of the
    compared taps (by depth) and of the highest third (⌊n/3⌋ each)."""
    d = df.sort_values("depth", kind="stable")
    return per_block_thirds_of(d["cka"].to_numpy(dtype=np.float64))


def per_block_thirds_of(v: np.ndarray) -> dict[str, float]:
    """`per_block_thirds` of the per-block CKA values in depth order."""
    k = third_size(len(v))
    return {"lowest_third": _nanmean(v[:k]), "highest_third": _nanmean(v[len(v) - k :])}
