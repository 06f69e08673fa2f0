"""What one number per model pair may say, from the pair's tap × tap table (the atlas, `cka.pairs: all`).

A pair's block outputs (BLOCK_OUTPUT_KINDS: ViT embedding and block outputs, CNN stem and unit outputs, in forward
order, at relative depth 0..1) give a Bₐ × B_b block of cells. From it:

- each block's **best match** in the other model: the block of highest similarity, its relative depth, value ± SE;
- the **pair score**: the max over all block cells. A max over many cells is biased upward, most of all where
  nothing matches, so it is tested against the max of the permutation null over the same cells: each null draw
  permutes the second model's images within each minibatch ONCE for all its taps (`seelike.cka`), so the max
  over cells of one draw is a draw of the max under independence (family-wise, Gröger et al. 2026's Algorithm 2),
  and p = (1 + #{draws ≥ score}) / (P + 1) is corrected for the search over cells. `calibrated` is their
  calibrated score, (score − τ) / (1 − τ) clipped to [0, 1], τ the ⌈(1 − α)(P + 1)⌉-th smallest of the score and
  its P null maxima: 0 for a pair the null explains, whatever the number of cells;
- the **diagonal**: the mean over the depth-aligned cells (each block of the model with fewer blocks against the
  other model's block nearest in relative depth), with its delete-one-minibatch jackknife SE computed from the
  per-minibatch terms (the jackknife of the mean itself, not a mean of the cells' SEs) and its own null.

The cached Grams make the null free of forward passes; `pair_uncertainty` runs inside the CKA / similarity rules
(which hold the null draws and the jackknife replicates), and `pair_scores` reads what they stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from seelike.jackknife import jackknife_se
from seelike.models.kinds import BLOCK_OUTPUT_KINDS

__all__ = [
    "ALPHA",
    "aligned_diagonal",
    "best_matches",
    "block_indices",
    "block_matrix",
    "pair_scores",
    "pair_uncertainty",
]

# τ of the calibrated score: the (1 − ALPHA) quantile of the null maxima (Gröger et al.'s default)
ALPHA = 0.05


def block_indices(taps: Sequence[dict]) -> np.ndarray:
    """Positions (in the model's tap list) of its block-output taps, in forward order."""
    return np.array(
        [i for i, t in sorted(enumerate(taps), key=lambda it: it[1].get("index", it[0]))
         if t["kind"] in BLOCK_OUTPUT_KINDS],
        dtype=int,
    )  # fmt: skip


def relative_depth(n: int) -> np.ndarray:
    """Relative depth 0..1 of n blocks in forward order (one block: 0)."""
    return np.arange(n) / max(n - 1, 1)


def aligned_diagonal(n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth-aligned cells (i in a, j in b): each block of the model with fewer blocks (a on a tie) against the
    other's block nearest in relative depth (the shallower one on a tie). Symmetric: (n_b, n_a) gives the same
    cells transposed."""
    if n_a == 0 or n_b == 0:
        return np.zeros(0, int), np.zeros(0, int)
    short, long_ = (n_a, n_b) if n_a <= n_b else (n_b, n_a)
    nearest = np.abs(relative_depth(short)[:, None] - relative_depth(long_)[None, :]).argmin(1)
    base = np.arange(short)
    return (base, nearest) if n_a <= n_b else (nearest, base)


def _block_stack(stack: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """(..., Tₐ, T_b) → (..., Bₐ, B_b): the block cells."""
    return stack[..., ia, :][..., :, ib]


def _max_cells(block: np.ndarray) -> np.ndarray:
    """Max over the last two axes, NaN cells ignored (NaN where all are)."""
    flat = block.reshape(*block.shape[:-2], block.shape[-2] * block.shape[-1])
    finite = np.isfinite(flat)
    out = np.where(finite, flat, -np.inf).max(-1)
    return np.where(finite.any(-1), out, np.nan)


def _diagonal_mean(block: np.ndarray) -> np.ndarray:
    da, db = aligned_diagonal(block.shape[-2], block.shape[-1])
    with np.errstate(invalid="ignore"):
        return np.nanmean(block[..., da, db], -1) if len(da) else np.full(block.shape[:-2], np.nan)


def pair_uncertainty(
    taps_a: Sequence[dict],
    taps_b: Sequence[dict],
    null: np.ndarray,
    leave_one_out: Sequence[np.ndarray],
    constant: np.ndarray,
) -> dict[str, Any]:
    """What the pair scores need beyond the table, from one measure's run of a model pair.

    `null` (P, Tₐ, T_b): the null draws of the table's value (mean over repeats); `leave_one_out`: per repeat the
    (k, Tₐ, T_b) jackknife replicates; `constant` (Tₐ, T_b): cells of a constant tap (excluded). Returns the
    block taps of each model, the P null maxima over block cells and the P null diagonal means, and the
    jackknife SE of the diagonal mean (per repeat, combined as √Σ SE²ᵣ / R like the cells' SEs)."""
    ia, ib = block_indices(taps_a), block_indices(taps_b)
    keep = ~_block_stack(constant, ia, ib)
    null_block = np.where(keep, _block_stack(np.asarray(null, np.float64), ia, ib), np.nan)
    ses = [
        jackknife_se(_diagonal_mean(np.where(keep, _block_stack(loo, ia, ib), np.nan)))
        for loo in leave_one_out
    ]
    return {
        "blocks_a": [taps_a[i]["name"] for i in ia],
        "blocks_b": [taps_b[j]["name"] for j in ib],
        "null_max": [float(v) for v in _max_cells(null_block)],
        "null_diagonal": [float(v) for v in _diagonal_mean(null_block)],
        "diagonal_se": float(np.sqrt(np.sum(np.square(ses))) / len(ses)) if ses else math.nan,
    }


def block_matrix(
    table: pd.DataFrame, blocks_a: list[str], blocks_b: list[str], col: str
) -> np.ndarray:
    """Bₐ × B_b matrix of `col` from a pair's long table, rows and columns the given taps (constant cells NaN;
    all NaN when the table has no such column)."""
    t = table.set_index(["tap_a", "tap_b"])
    if col not in t:
        return np.full((len(blocks_a), len(blocks_b)), np.nan)
    values = t[col].astype(float)
    if "constant" in t:
        values = values.where(~t["constant"].astype(bool))
    return values.unstack().reindex(index=blocks_a, columns=blocks_b).to_numpy(np.float64)


def _calibrated(score: float, null_max: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """Gröger et al.'s calibrated score and its threshold τ: the ⌈(1 − α)(P + 1)⌉-th smallest of the score and
    the P null maxima (their `calibrate_layers`, smax = 1)."""
    combined = np.sort(np.append(null_max, score))
    tau = float(
        combined[min(max(math.ceil((1 - alpha) * len(combined)) - 1, 0), len(combined) - 1)]
    )
    return float(np.clip((score - tau) / max(1.0 - tau, 1e-12), 0.0, 1.0)), tau


def _p_value(observed: float, null: np.ndarray) -> float:
    null = null[np.isfinite(null)]
    if not null.size or not math.isfinite(observed):
        return math.nan
    return float((1 + (null >= observed).sum()) / (null.size + 1))


def pair_scores(table: pd.DataFrame, uncertainty: dict[str, Any], value: str = "value") -> dict:
    """One model pair's scores (module docstring) from its long table (one measure; columns tap_a, tap_b,
    `value`, se, constant) and the `pair_uncertainty` its rule stored."""
    blocks_a, blocks_b = uncertainty["blocks_a"], uncertainty["blocks_b"]
    v = block_matrix(table, blocks_a, blocks_b, value)
    se = block_matrix(table, blocks_a, blocks_b, "se" if "se" in table else "cka_se")
    null_max = np.asarray(uncertainty["null_max"], np.float64)
    null_max = null_max[np.isfinite(null_max)]  # a measure without a null (bures) has none
    out: dict[str, Any] = {"n_blocks_a": len(blocks_a), "n_blocks_b": len(blocks_b)}
    if np.isfinite(v).any():
        i, j = np.unravel_index(np.nanargmax(v), v.shape)
        score = float(v[i, j])
        calibrated, tau = _calibrated(score, null_max) if null_max.size else (math.nan, math.nan)
        out |= {
            "score": score, "score_se": float(se[i, j]),
            "score_tap_a": blocks_a[i], "score_tap_b": blocks_b[j],
            "score_depth_a": float(relative_depth(len(blocks_a))[i]),
            "score_depth_b": float(relative_depth(len(blocks_b))[j]),
            "score_p": _p_value(score, null_max), "score_tau": tau, "score_calibrated": calibrated,
        }  # fmt: skip
    diagonal = float(_diagonal_mean(v)) if v.size else math.nan
    out |= {
        "diagonal": diagonal,
        "diagonal_se": float(uncertainty.get("diagonal_se", math.nan)),
        "diagonal_p": _p_value(diagonal, np.asarray(uncertainty["null_diagonal"], np.float64)),
        "permutations": int(null_max.size),
    }
    return out


def best_matches(
    table: pd.DataFrame, blocks_a: list[str], blocks_b: list[str], value: str = "value"
) -> pd.DataFrame:
    """For each block of a, the block of b it matches best: relative depths, value and its SE (rows in a's forward
    order; a block with no defined cell has NaN)."""
    v = block_matrix(table, blocks_a, blocks_b, value)
    se = block_matrix(table, blocks_a, blocks_b, "se" if "se" in table else "cka_se")
    rows = []
    depth_a, depth_b = relative_depth(len(blocks_a)), relative_depth(len(blocks_b))
    for i, tap in enumerate(blocks_a):
        row = {"tap_a": tap, "depth_a": float(depth_a[i]), "tap_b": None, "depth_b": math.nan,
               "value": math.nan, "se": math.nan}  # fmt: skip
        if np.isfinite(v[i]).any():
            j = int(np.nanargmax(v[i]))
            row |= {"tap_b": blocks_b[j], "depth_b": float(depth_b[j]), "value": float(v[i, j]),
                    "se": float(se[i, j])}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)
