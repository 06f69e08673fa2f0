"""The numbers behind the claims: pure functions of the tidy tables the rules write (CKA long tables, attention
distances, head-subset CKA, ERF sizes, skip statistics, localisation maps, probe accuracies, per-block CKA).
Definitions the paper leaves open are stated in each docstring and repeated in the claims table's note column."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from seelike.models.kinds import BLOCK_OUTPUT_KINDS
from seelike.tables import cka_array, probe_shots

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
    m, _, _ = cka_array(df)
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
    if cnn_side == "b":
        m = m.T
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
    df: pd.DataFrame, uniform_px: float, local_fraction: float = LOCAL_FRACTION
) -> pd.DataFrame:
    """Per attention block: min, max and spread (max − min) of the heads' mean distances (px), the head count and
    the number of local heads (mean distance < `local_fraction` × `uniform_px`)."""
    thr = local_fraction * uniform_px
    rows = []
    for block, g in df.groupby("block", sort=True):
        d = g["mean_distance_px"].to_numpy(dtype=np.float64)
        d = d[np.isfinite(d)]
        rows.append(
            {
                "block": int(block),
                "min_px": float(d.min()) if d.size else math.nan,
                "max_px": float(d.max()) if d.size else math.nan,
                "spread_px": float(d.max() - d.min()) if d.size else math.nan,
                "n_heads": int(d.size),
                "n_local": int((d < thr).sum()),
            }
        )
    return pd.DataFrame(rows)


def attention_early_late(
    df: pd.DataFrame, uniform_px: float, local_fraction: float = LOCAL_FRACTION
) -> dict[str, float]:
    """Figs 3/4 lower vs higher layers: the first two blocks (early) against the last two (late).

    Spreads are the mean of the two blocks' spreads; head counts are summed over the two blocks.
    """
    s = attention_block_stats(df, uniform_px, local_fraction)
    early, late = s.head(2), s.tail(2)
    return {
        "early_spread_px": float(early["spread_px"].mean()),
        "late_spread_px": float(late["spread_px"].mean()),
        "early_local_heads": float(early["n_local"].sum()),
        "early_global_heads": float((early["n_heads"] - early["n_local"]).sum()),
        "late_local_heads": float(late["n_local"].sum()),
        "late_heads": float(late["n_heads"].sum()),
        "n_blocks": float(len(s)),
    }


# ---------------------------------------------------------------- Fig 5: head-subset CKA
def head_subset_trend(df: pd.DataFrame) -> dict[str, float]:
    """Fig 5: per head subset, its mean distance and its CKA averaged over the CNN taps; the Spearman correlation
    of the two over subsets (the paper: falls monotonically, so negative) and the CKA of the most local and the
    most global subset."""
    g = (
        df.groupby("subset", sort=True)
        .agg(distance=("subset_mean_distance_px", "first"), cka=("cka", "mean"))
        .sort_values("distance", kind="stable")
    )
    return {
        "spearman_distance_vs_cka": spearman(g["distance"], g["cka"]),
        "most_local_subset_cka": float(g["cka"].iloc[0]),
        "most_global_subset_cka": float(g["cka"].iloc[-1]),
        "n_subsets": float(len(g)),
    }


# ---------------------------------------------------------------- Fig 6: effective receptive fields
def erf_growth(df: pd.DataFrame, size: str = "r50_px") -> dict[str, dict[str, float]]:
    """Fig 6: per residual setting (post / pre / explicit) the ERF size of the first and last tap in forward
    order, their ratio, the Spearman correlation of size with depth, and the first non-stem tap's size (the CNN's
    first residual stage). Taps whose map has no mass (NaN size) are left out."""
    out: dict[str, dict[str, float]] = {}
    for residual, g in df.groupby("residual", sort=False):
        g = g.sort_values("order")
        g = g[np.isfinite(g[size].to_numpy(dtype=np.float64))]
        if g.empty:
            continue
        v = g[size].to_numpy(dtype=np.float64)
        non_stem = g[g["kind"].astype(str) != "stem"]
        out[str(residual)] = {
            "first": float(v[0]),
            "last": float(v[-1]),
            "last_over_first": float(v[-1] / v[0]) if v[0] > 0 else math.nan,
            "spearman_depth": spearman(np.arange(len(v)), v),
            "first_non_stem": float(non_stem[size].iloc[0]) if len(non_stem) else math.nan,
        }
    return out


# ---------------------------------------------------------------- Fig 7: skip connections
def skip_ratio_summary(df: pd.DataFrame) -> dict[str, float]:
    """Fig 7: ‖z‖/‖f(z)‖ per block and token type (cls / patch for a ViT, spatial for a CNN).

    A block's ratio is the mean of its finite token ratios over both sublayers (ViT attention and MLP); infinite
    ratios (zero branch) are left out and counted in `n_inf`. Per token type: the mean over blocks, over the first
    ⌊B/2⌋ blocks (early) and over the last ⌊B/2⌋ (late). Keys: `{type}_mean`, `{type}_early`, `{type}_late`.
    """
    r = df["ratio_mean"].to_numpy(dtype=np.float64)
    fin = df[np.isfinite(r)]
    out: dict[str, float] = {"n_inf": float(np.isinf(r).sum())}
    for ttype, g in fin.groupby("token_type", sort=False):
        per_block = g.groupby("block", sort=True)["ratio_mean"].mean().to_numpy()
        h = len(per_block) // 2
        out[f"{ttype}_mean"] = float(per_block.mean())
        out[f"{ttype}_early"] = float(per_block[:h].mean()) if h else math.nan
        out[f"{ttype}_late"] = float(per_block[len(per_block) - h :].mean()) if h else math.nan
    return out


# ---------------------------------------------------------------- Figs 9, 10: localisation
def localisation_stats(df: pd.DataFrame) -> dict[str, float]:
    """Figs 9/10 for interior positions (not on the grid's border): mean CKA of a position's representation with
    its own input patch, mean over positions of its mean CKA with every other patch, and the fraction whose
    best-matching patch (argmax) is its own. Tokens or patches constant over the images are left out."""
    d = df
    for col in ("patch_constant", "token_constant"):
        if col in d:
            d = d[~d[col].to_numpy(bool)]
    h = int(df["patch_row"].max()) + 1
    w = int(df["patch_col"].max()) + 1
    interior = d["token_row"].between(1, h - 2) & d["token_col"].between(1, w - 2)
    d = d[interior]
    own_rows = d[d["token"] == d["patch"]]
    tokens = own_rows["token"].unique()  # a token whose own patch is constant has nothing to match
    d = d[d["token"].isin(tokens)]
    if d.empty:
        return {
            "own": math.nan,
            "other": math.nan,
            "own_is_argmax": math.nan,
            "n_interior": 0.0,
        }
    other = d[d["token"] != d["patch"]].groupby("token")["cka"].mean()
    argmax = d.loc[d.groupby("token")["cka"].idxmax()].set_index("token")["patch"]
    return {
        "own": float(own_rows["cka"].mean()),
        "other": float(other.mean()),
        "own_is_argmax": float((argmax == argmax.index).mean()),
        "n_interior": float(len(tokens)),
    }


def probe_depth(
    df: pd.DataFrame, aggregation: str, shots: str | None = None
) -> dict[str, float] | None:
    """Figs 11/13: probe accuracy of one aggregation at the first, middle (depth nearest 0.5, the lower on a tie)
    and last probed tap; `shots` defaults to 10 when present, else the table's first level. None when the
    aggregation is absent."""
    shots = probe_shots(df, shots)
    d = df[(df["aggregation"] == aggregation) & (df["shots"].astype(str) == str(shots))]
    if d.empty:
        return None
    d = d.sort_values("depth", kind="stable")
    depth = d["depth"].to_numpy(dtype=np.float64)
    acc = d["accuracy"].to_numpy(dtype=np.float64)
    mid = int(np.argmin(np.abs(depth - 0.5)))
    return {"first": float(acc[0]), "middle": float(acc[mid]), "last": float(acc[-1])}


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
    v = d["cka"].to_numpy(dtype=np.float64)
    k = third_size(len(v))
    return {"lowest_third": _nanmean(v[:k]), "highest_third": _nanmean(v[len(v) - k :])}
