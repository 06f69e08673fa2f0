"""One number per testable finding of Raghu et al. 2021, computed from the pipeline's own output tables.

Every metric is a pure function of the tidy tables the rules write (CKA long tables, attention distances, head-subset
CKA, ERF sizes, skip statistics, localisation maps, probe accuracies, per-block CKA) and returns plain numbers.
`summarise` assembles them into one long table (figure, claim, model, metric, value, seen, note) whose `seen` column
says whether the paper's finding shows in these numbers: True / False where one number (or a comparison of two
models) decides it, None for descriptive numbers and where the decision needs something this run lacks (no ViT,
no CNN, no reference model, too few head subsets, an undefined value).

Definitions that the paper leaves open are stated in each function's docstring and repeated in the table's note
column, so VALIDATION.md can quote the numbers with their meaning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "LOCAL_FRACTION",
    "ClaimInputs",
    "attention_block_stats",
    "attention_early_late",
    "cka_matrix",
    "cross_cka_alignment",
    "erf_growth",
    "head_subset_trend",
    "localisation_stats",
    "no_skip_partition",
    "no_skip_specs",
    "per_block_thirds",
    "probe_depth",
    "self_cka_thirds",
    "skip_ratio_summary",
    "spearman",
    "stage_cka",
    "summarise",
    "tap_stage",
    "to_markdown",
    "uniform_attention_distance",
]

COLUMNS = ["figure", "claim", "model", "metric", "value", "seen", "note"]
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


def cka_matrix(df: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """A long CKA table (`seelike.compare.cka_from_caches`) as an (n_a, n_b) array in forward tap order.

    Cells flagged `constant` (a tap constant over the images: CKA undefined, stored as 0) become NaN so that no
    metric averages a made-up 0.
    """
    d = df.sort_values(["index_a", "index_b"])
    ia = np.sort(d["index_a"].unique())
    ib = np.sort(d["index_b"].unique())
    m = np.full((len(ia), len(ib)), np.nan)
    ra = np.searchsorted(ia, d["index_a"].to_numpy())
    rb = np.searchsorted(ib, d["index_b"].to_numpy())
    vals = d["cka"].to_numpy(dtype=np.float64).copy()
    if "constant" in d:
        vals[d["constant"].to_numpy(bool)] = np.nan
    m[ra, rb] = vals
    names_a = d.drop_duplicates("index_a").sort_values("index_a")["tap_a"].astype(str).tolist()
    names_b = d.drop_duplicates("index_b").sort_values("index_b")["tap_b"].astype(str).tolist()
    return m, names_a, names_b


def _third(n: int) -> int:
    return max(1, n // 3)


# ---------------------------------------------------------------- Fig 1: self-similarity
def self_cka_thirds(df: pd.DataFrame) -> dict[str, float]:
    """Fig 1 uniformity of one model's self-CKA table.

    `lowest_vs_highest_third`: mean CKA between the first ⌊n/3⌋ and the last ⌊n/3⌋ taps in forward order (n taps);
    `adjacent`: mean CKA of consecutive taps (i, i+1). Constant taps are left out.
    """
    m, _, _ = cka_matrix(df)
    n = m.shape[0]
    k = _third(n)
    return {
        "lowest_vs_highest_third": _nanmean(m[:k, n - k :]),
        "adjacent": _nanmean(np.diagonal(m, offset=1)) if n > 1 else math.nan,
        "n_taps": float(n),
    }


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
    m, names, _ = cka_matrix(df)
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
    m, _, _ = cka_matrix(df)
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
    k = _third(n_v)
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
    16-px patches; the reference point for "global". Same geometry as `seelike.attention.patch_centres`, in numpy
    so that this module does not import torch."""

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


# ---------------------------------------------------------------- Figs 11, 13: linear probes
def _probe_shots(df: pd.DataFrame) -> str:
    levels = list(dict.fromkeys(df["shots"].astype(str)))
    return "10" if "10" in levels else levels[0]


def probe_depth(
    df: pd.DataFrame, aggregation: str, shots: str | None = None
) -> dict[str, float] | None:
    """Figs 11/13: probe accuracy of one aggregation at the first, middle (depth nearest 0.5, the lower on a tie)
    and last probed tap; `shots` defaults to 10 when present, else the table's first level. None when the
    aggregation is absent."""
    shots = shots if shots is not None else _probe_shots(df)
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
    m, names, _ = cka_matrix(df)
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
    k = _third(len(v))
    return {"lowest_third": _nanmean(v[:k]), "highest_third": _nanmean(v[len(v) - k :])}


# ---------------------------------------------------------------- the summary
@dataclass
class ClaimInputs:
    """The tables of one analysis dataset, keyed by model (or (a, b) pair), plus what is known of each model.

    `families`: model → "vit" or "cnn"; `attention`: model → (distance table, uniform-attention distance px);
    `no_skip`: model → (removed block, reference model or None) as from `no_skip_specs`.
    """

    families: Mapping[str, str]
    self_cka: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    cross_cka: Mapping[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    attention: Mapping[str, tuple[pd.DataFrame, float]] = field(default_factory=dict)
    head_subsets: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    erf: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    skip: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    localisation: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    probes: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    per_block: Mapping[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    no_skip: Mapping[str, tuple[int, str | None]] = field(default_factory=dict)


class _Rows:
    """Collects summary rows; NaN values give seen = None (nothing to decide on)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        figure: str,
        claim: str,
        model: str,
        metric: str,
        value: float,
        seen: bool | None = None,
        note: str = "",
    ) -> None:
        value = float(value)
        if seen is not None and not math.isfinite(value):
            seen = None
        self.rows.append(
            {
                "figure": figure,
                "claim": claim,
                "model": model,
                "metric": metric,
                "value": value,
                "seen": None if seen is None else bool(seen),
                "note": note,
            }
        )


def _vit_cnn_pairs(inp: ClaimInputs, models: Sequence[str]) -> list[tuple[str, str]]:
    """(ViT, CNN) pairs among `models` for the ViT-vs-CNN comparisons: the configured cross pairs (`cross_cka`
    keys) with one ViT and one CNN, else every standard ViT × CNN (models with `remove_skip` left out)."""
    fam = inp.families
    pairs = [
        (a, b) if fam.get(a) == "vit" else (b, a)
        for a, b in inp.cross_cka
        if {fam.get(a), fam.get(b)} == {"vit", "cnn"}
    ]
    if not pairs:
        std = [m for m in models if m not in inp.no_skip]
        pairs = [(v, c) for v in std if fam.get(v) == "vit" for c in std if fam.get(c) == "cnn"]
    return [(v, c) for v, c in pairs if v in models and c in models]


def _fig1(inp: ClaimInputs, out: _Rows) -> None:
    claim = "ViT layers are more uniform (lowest and highest third alike) than ResNet layers"
    thirds = {m: self_cka_thirds(df) for m, df in inp.self_cka.items()}
    for m, t in thirds.items():
        note = f"{int(t['n_taps'])} taps; thirds = first/last {_third(int(t['n_taps']))} taps"
        out.add(
            "1", claim, m, "cka_lowest_vs_highest_third", t["lowest_vs_highest_third"], note=note
        )
        out.add("1", claim, m, "cka_adjacent_taps", t["adjacent"], note="mean CKA of taps i, i+1")
    for m, df in inp.self_cka.items():
        if inp.families.get(m) != "cnn" or (s := stage_cka(df)) is None:
            continue
        c = "ResNets have distinct stages: taps alike within a stage, less across stages"
        out.add("1", c, m, "cka_within_stage", s["within"], note="tap pairs i<j in one stage")
        out.add("1", c, m, "cka_across_stage", s["across"], note="tap pairs in different stages")
        out.add(
            "1", c, m, "cka_within_minus_across_stage", s["within"] - s["across"],
            seen=s["within"] > s["across"], note="seen: > 0",
        )  # fmt: skip
    pairs = _vit_cnn_pairs(inp, list(thirds))
    for v, c in pairs:
        diff = thirds[v]["lowest_vs_highest_third"] - thirds[c]["lowest_vs_highest_third"]
        out.add(
            "1", claim, f"{v} vs {c}", "cka_lowest_vs_highest_third_vit_minus_cnn", diff,
            seen=diff > 0, note="seen: > 0",
        )  # fmt: skip
    if not pairs and thirds:
        out.add(
            "1", claim, "-", "cka_lowest_vs_highest_third_vit_minus_cnn", math.nan,
            note="needs a ViT and a CNN in the config",
        )  # fmt: skip


def _fig2(inp: ClaimInputs, out: _Rows) -> None:
    for (a, b), df in inp.cross_cka.items():
        fa, fb = inp.families.get(a), inp.families.get(b)
        if {fa, fb} != {"vit", "cnn"}:
            continue
        r = cross_cka_alignment(df, cnn_side="a" if fa == "cnn" else "b")
        v, c = (b, a) if fa == "cnn" else (a, b)
        pair = f"{v} vs {c}"
        lo, up = r["cnn_lower_half_best_vit_depth"], r["cnn_upper_half_best_vit_depth"]
        out.add(
            "2", "lower half of the ResNet matches the lowest quarter of the ViT", pair,
            "cnn_lower_half_best_vit_depth", lo, seen=lo <= LOWEST_QUARTER,
            note="mean relative depth (0..1) of the best-matching ViT tap; seen: <= 0.25",
        )  # fmt: skip
        out.add(
            "2", "top half of the ResNet matches the next third of the ViT", pair,
            "cnn_upper_half_best_vit_depth", up, seen=LOWEST_QUARTER < up <= NEXT_THIRD_END,
            note=f"seen: in (0.25, {NEXT_THIRD_END:.2f}]",
        )  # fmt: skip
        last, first = r["vit_last_third_best_cnn_cka"], r["vit_first_two_thirds_best_cnn_cka"]
        claim = "last third of the ViT is unlike any ResNet layer"
        out.add(
            "2", claim, pair, "vit_first_two_thirds_best_cnn_cka", first,
            note="per ViT tap: max CKA over ResNet taps, averaged",
        )  # fmt: skip
        out.add(
            "2", claim, pair, "vit_last_third_best_cnn_cka", last, seen=last < first,
            note="seen: below the first two thirds' value",
        )  # fmt: skip


def _fig3_5(inp: ClaimInputs, out: _Rows) -> None:
    for m, (df, uniform) in inp.attention.items():
        r = attention_early_late(df, uniform)
        thr = f"local = mean distance < {LOCAL_FRACTION:g} × uniform ({LOCAL_FRACTION * uniform:.1f} px)"
        c1 = "lower layers mix local and global heads"
        out.add(
            "3-4", c1, m, "uniform_attention_px", uniform, note="uniform attention over the grid"
        )
        out.add(
            "3-4",
            c1,
            m,
            "early_global_heads",
            r["early_global_heads"],
            note="blocks 0, 1; not local",
        )
        out.add(
            "3-4", c1, m, "early_local_heads", r["early_local_heads"],
            seen=r["early_local_heads"] > 0 and r["early_global_heads"] > 0,
            note=f"blocks 0, 1; {thr}; seen: local and global heads both present",
        )  # fmt: skip
        out.add(
            "3-4", "higher layers: all heads global", m, "late_local_heads", r["late_local_heads"],
            seen=r["late_local_heads"] == 0,
            note=f"last two blocks, {int(r['late_heads'])} heads; seen: 0",
        )  # fmt: skip
        c3 = "head distances spread more in lower than in higher layers"
        out.add(
            "3-4", c3, m, "early_spread_px", r["early_spread_px"], note="max - min, blocks 0, 1"
        )
        out.add(
            "3-4", c3, m, "late_spread_px", r["late_spread_px"],
            seen=r["late_spread_px"] < r["early_spread_px"], note="last two blocks; seen: < early",
        )  # fmt: skip
    for m, df in inp.head_subsets.items():
        r = head_subset_trend(df)
        claim = "CKA with lower ResNet units falls as head subsets get more global"
        n = int(r["n_subsets"])
        out.add("5", claim, m, "most_local_subset_cka", r["most_local_subset_cka"])
        out.add("5", claim, m, "most_global_subset_cka", r["most_global_subset_cka"])
        out.add(
            "5", claim, m, "spearman_distance_vs_cka", r["spearman_distance_vs_cka"],
            seen=(r["spearman_distance_vs_cka"] < 0) if n >= 3 else None,
            note=f"{n} subsets; CKA averaged over CNN taps; seen: < 0 (needs >= 3 subsets)",
        )  # fmt: skip


def _erf_sizes(df: pd.DataFrame) -> list[str]:
    """The ERF size columns of a table (`r50_px`, `r90_px`, … from `erf.quantiles`), by quantile."""
    return sorted(
        (c for c in df.columns if re.fullmatch(r"r\d+_px", c)), key=lambda c: int(c[1:-3])
    )


def _fig6(inp: ClaimInputs, out: _Rows) -> None:
    sizes = {m: _erf_sizes(df) for m, df in inp.erf.items()}
    # per model: the first quantile (r50 by default, the one Fig 6 prints); across models: every quantile, as a
    # ViT's post-residual map puts much of its mass on the centre patch (the skip) and the rest far away
    growth = {m: erf_growth(df, sizes[m][0]) for m, df in inp.erf.items() if sizes[m]}
    for m, by_res in growth.items():
        q = sizes[m][0][:-3]
        for res, g in by_res.items():
            grows = inp.families.get(m) == "cnn"
            claim = "CNN ERFs grow with depth" if grows else f"ERF size ({q}) by depth"
            out.add("6", claim, m, f"{q}_px_first_{res}", g["first"], note="first tap")
            out.add("6", claim, m, f"{q}_px_last_{res}", g["last"], note="last tap")
            out.add(
                "6", claim, m, f"{q}_last_over_first_{res}", g["last_over_first"],
                seen=(g["last_over_first"] > 1) if grows else None,
                note=f"Spearman(depth, {q}) = {g['spearman_depth']:.2f}" + ("; seen: > 1" if grows else ""),
            )  # fmt: skip
    for v, c in _vit_cnn_pairs(inp, list(growth)):
        for size in (s for s in sizes[v] if s in sizes[c]):
            gv = erf_growth(inp.erf[v], size).get("post")
            gc = erf_growth(inp.erf[c], size).get("post")
            if gv is None or gc is None:
                continue
            ratio = gv["first"] / gc["first_non_stem"] if gc["first_non_stem"] > 0 else math.nan
            out.add(
                "6", "ViT ERFs are larger than CNN ERFs in early layers", f"{v} vs {c}",
                f"{size[:-3]}_vit_first_over_cnn_first_stage_post", ratio, seen=ratio > 1,
                note="ViT block 0 post-attention residual over the CNN's first stage output; seen: > 1",
            )  # fmt: skip


def _fig7(inp: ClaimInputs, out: _Rows) -> None:
    summ = {m: skip_ratio_summary(df) for m, df in inp.skip.items()}
    for m, s in summ.items():
        inf = f"{int(s['n_inf'])} infinite ratios left out" if s["n_inf"] else ""
        if "patch_mean" in s:
            out.add(
                "7", "‖z‖/‖f(z)‖ by token type", m, "ratio_patch_mean", s["patch_mean"], note=inf
            )
            out.add(
                "7", "ViT skip ratio rises in later blocks (patch tokens)", m, "ratio_patch_late_over_early",
                s["patch_late"] / s["patch_early"], seen=s["patch_late"] > s["patch_early"],
                note=f"early {s['patch_early']:.3g}, late {s['patch_late']:.3g} (first/last half of blocks)"
                + "; seen: > 1",
            )  # fmt: skip
        if "cls_mean" in s and "patch_mean" in s:
            seen = s["cls_early"] > s["patch_early"] and s["cls_late"] < s["cls_early"]
            out.add(
                "7", "CLS token differs: high ratio in lower blocks, falling later", m,
                "ratio_cls_over_patch_early", s["cls_early"] / s["patch_early"], seen=seen,
                note=f"CLS early {s['cls_early']:.3g}, late {s['cls_late']:.3g}; seen: > 1 and CLS late < early",
            )  # fmt: skip
        if "spatial_mean" in s:
            out.add(
                "7",
                "‖z‖/‖f(z)‖ by token type",
                m,
                "ratio_spatial_mean",
                s["spatial_mean"],
                note=inf,
            )
    for v, c in _vit_cnn_pairs(inp, list(summ)):
        if "patch_mean" not in summ[v] or "spatial_mean" not in summ[c]:
            continue
        ratio = summ[v]["patch_mean"] / summ[c]["spatial_mean"]
        out.add(
            "7", "skip ratio is higher in ViT than in ResNet", f"{v} vs {c}",
            "ratio_vit_patch_over_cnn", ratio, seen=ratio > 1,
            note="mean over blocks; seen: > 1",
        )  # fmt: skip


def _fig8(inp: ClaimInputs, out: _Rows) -> None:
    claim = "no skip in block i: representations split at block i"
    for m, (block, ref) in inp.no_skip.items():
        if m not in inp.self_cka:
            continue
        p = no_skip_partition(inp.self_cka[m], block)
        note = "within-side minus across-boundary mean CKA"
        out.add("8", claim, m, f"partition_at_block_{block}", p["partition"], note=note)
        if ref is None or ref not in inp.self_cka:
            out.add(
                "8", claim, m, "partition_minus_reference", math.nan,
                note="no reference model of the same arch without remove_skip",
            )  # fmt: skip
            continue
        pr = no_skip_partition(inp.self_cka[ref], block)
        diff = p["partition"] - pr["partition"]
        out.add(
            "8", claim, f"{m} vs {ref}", "partition_minus_reference", diff, seen=diff > 0,
            note=f"reference {ref} partition {pr['partition']:.3g} at the same block; seen: > 0",
        )  # fmt: skip


_LESS_LOCAL = "ResNet positions localise much less than ViT tokens"


def _fig9_10(inp: ClaimInputs, out: _Rows) -> None:
    stats = {m: localisation_stats(df) for m, df in inp.localisation.items()}
    for m, s in stats.items():
        vit = inp.families.get(m) == "vit"
        claim = "ViT interior tokens match their own input patch" if vit else _LESS_LOCAL
        n = f"{int(s['n_interior'])} interior positions"
        out.add("9-10", claim, m, "own_patch_cka", s["own"], note=n)
        out.add("9-10", claim, m, "other_patch_cka", s["other"], note="mean over the other patches")
        out.add(
            "9-10", claim, m, "own_is_argmax_rate", s["own_is_argmax"],
            seen=(s["own_is_argmax"] > 0.5) if vit else None,
            note="fraction whose best patch is their own" + ("; seen: > 0.5" if vit else ""),
        )  # fmt: skip
    for v, c in _vit_cnn_pairs(inp, list(stats)):
        claim = _LESS_LOCAL
        d = stats[v]["own_is_argmax"] - stats[c]["own_is_argmax"]
        out.add(
            "9-10", claim, f"{v} vs {c}", "own_is_argmax_vit_minus_cnn", d, seen=d > 0,
            note="seen: > 0",
        )  # fmt: skip
        mv = stats[v]["own"] - stats[v]["other"]
        mc = stats[c]["own"] - stats[c]["other"]
        out.add(
            "9-10", claim, f"{v} vs {c}", "own_minus_other_vit_minus_cnn", mv - mc, seen=mv > mc,
            note="(own - other patch CKA) of the ViT minus the CNN's; seen: > 0",
        )  # fmt: skip


_PRIMARY = {
    "vit": ("cls", "mean_spatial", "mean_all"),
    "cnn": ("pool_final", "mean_spatial", "flat"),
}


def _fig11_13(inp: ClaimInputs, out: _Rows) -> None:
    for m, df in inp.probes.items():
        fam = inp.families.get(m, "cnn")
        present = set(df["aggregation"])
        agg = next((a for a in _PRIMARY[fam] if a in present), None)
        if agg is None:
            continue
        shots = _probe_shots(df)
        r = probe_depth(df, agg, shots)
        if r is None:
            continue
        claim = "probe accuracy rises with depth"
        note = f"{shots}-shot, {agg}"
        out.add("11-13", claim, m, "accuracy_first_tap", r["first"], note=note)
        out.add("11-13", claim, m, "accuracy_middle_tap", r["middle"], note=note)
        out.add(
            "11-13", claim, m, "accuracy_last_tap", r["last"], seen=r["last"] > r["first"],
            note=note + "; seen: last > first",
        )  # fmt: skip
        if fam != "vit" or "cls" not in present:
            continue
        mean_agg = "mean_spatial" if "mean_spatial" in present else "mean_all"
        rm = probe_depth(df, mean_agg, shots)
        rc = probe_depth(df, "cls", shots)
        if rm is None or rc is None:
            continue
        claim = "ViT CLS token lags the token mean until the last layers"
        mid, last = rc["middle"] - rm["middle"], rc["last"] - rm["last"]
        out.add(
            "11-13", claim, m, "cls_minus_mean_middle_tap", mid, seen=mid < 0,
            note=f"{shots}-shot, CLS - {mean_agg}; seen: < 0",
        )  # fmt: skip
        out.add(
            "11-13", claim, m, "cls_minus_mean_last_tap", last, seen=last > mid,
            note="seen: gap closes (last > middle)",
        )  # fmt: skip


def _fig12(inp: ClaimInputs, out: _Rows) -> None:
    claim = "lower layers alike across checkpoints, higher layers diverge"
    for (a, b), df in inp.per_block.items():
        r = per_block_thirds(df)
        pair = f"{a} vs {b}"
        out.add("12", claim, pair, "cka_lowest_third_blocks", r["lowest_third"], note="by depth")
        out.add(
            "12", claim, pair, "cka_highest_third_blocks", r["highest_third"],
            seen=r["highest_third"] < r["lowest_third"], note="seen: below the lowest third",
        )  # fmt: skip


def summarise(inp: ClaimInputs) -> pd.DataFrame:
    """The claims table: one row per (figure, model or pair, metric), columns `COLUMNS`. Analyses with no table in
    `inp` contribute no rows."""
    out = _Rows()
    for part in (_fig1, _fig2, _fig3_5, _fig6, _fig7, _fig8, _fig9_10, _fig11_13, _fig12):
        part(inp, out)
    df = pd.DataFrame(out.rows, columns=COLUMNS)
    df["seen"] = df["seen"].astype(object)
    return df


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def to_markdown(df: pd.DataFrame, title: str | None = None) -> str:
    """The claims table as a GitHub markdown table (no tabulate dependency); seen as yes / no / n/a."""
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in df[COLUMNS].itertuples(index=False):
        cells = []
        for col, v in zip(COLUMNS, row):
            if col == "seen":
                v = (
                    "n/a"
                    if v is None or (isinstance(v, float) and math.isnan(v))
                    else ("yes" if v else "no")
                )
            cells.append(_fmt(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
