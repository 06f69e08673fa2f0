"""The atlas's data: every stored model pair's tables turned into the one dict the page and the overview figure
draw (`seelike.atlas.page`, `seelike.figures.atlas`) and the model × model table of pair scores (pairs.csv).

Reads the CKA tables of every pair (self pairs too: they place each model's blocks in the embedding) and, for
measures besides linear CKA, the similarity tables; the scores are `seelike.analyses.pair_scores`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from seelike.analyses.pair_scores import block_indices, block_matrix, pair_scores, relative_depth
from seelike.tables import CKA_COLUMNS, NULL_Z

__all__ = ["DATA_VERSION", "atlas_data", "measure_frame", "pair_score_table"]

DATA_VERSION = 1
# a cell the permutation null cannot tell apart: p above this or fewer than NULL_Z null SDs above the null mean
P_DISTINCT = 0.05

Pair = tuple[str, str]
Table = tuple[pd.DataFrame, dict[str, Any]]


def measure_frame(df: pd.DataFrame, measure: str) -> pd.DataFrame:
    """One measure's rows of a pair table, with the similarity tables' column names (value, se, ...): a CKA
    table's columns are renamed back, a similarity table's rows are those of `measure`."""
    if "measure" not in df:
        return df.rename(columns={v: k for k, v in CKA_COLUMNS.items()})
    return df[df["measure"] == measure].drop(columns="measure")


def _taps(df: pd.DataFrame, side: str) -> list[dict]:
    t = df.drop_duplicates(f"index_{side}").sort_values(f"index_{side}")
    return [
        {"name": n, "kind": k, "index": int(i)}
        for n, k, i in zip(t[f"tap_{side}"], t[f"kind_{side}"], t[f"index_{side}"], strict=True)
    ]


def _blocks(self_table: pd.DataFrame) -> list[dict]:
    """A model's block outputs (tap, kind, relative depth) from its self table."""
    taps = _taps(self_table, "a")
    idx = block_indices(taps)
    depth = relative_depth(len(idx))
    return [
        {"tap": taps[i]["name"], "kind": taps[i]["kind"], "depth": float(d)}
        for i, d in zip(idx, depth, strict=True)
    ]


def _clean(m: np.ndarray) -> list:
    """A matrix for JSON: NaN → None, floats rounded to what a reader can see (6 digits)."""
    return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in m]


def _matrices(frame: pd.DataFrame, blocks_a: list[str], blocks_b: list[str]) -> dict[str, list]:
    def grid(col: str) -> np.ndarray:
        return block_matrix(frame, blocks_a, blocks_b, col)

    value, se, p, z = grid("value"), grid("se"), grid("p_value"), grid("null_z")
    # distinguishable from independent representations: beyond the null on both of its readings
    distinct = np.where(np.isfinite(p), (p <= P_DISTINCT) & (z >= NULL_Z), True)
    return {
        "cka": _clean(value),
        "se": _clean(se),
        "p": _clean(p),
        "distinct": [[bool(v) for v in row] for row in distinct],
    }


# a self pair's scores: itself on the diagonal, nothing to test against a null
SELF_SCORES = {"score": 1.0, "score_se": 0.0, "score_p": None, "score_calibrated": None,
               "diagonal": 1.0, "diagonal_se": 0.0, "score_cell": None}  # fmt: skip
SCORE_KEYS = (
    "score",
    "score_se",
    "score_p",
    "score_tau",
    "score_calibrated",
    "diagonal",
    "diagonal_se",
)


def _cross_scores(frame: pd.DataFrame, unc: dict, names_a: list[str], names_b: list[str]) -> dict:
    s = pair_scores(frame, unc)
    out = {k: _json_number(s.get(k)) for k in SCORE_KEYS}
    out["score_cell"] = (
        [names_a.index(s["score_tap_a"]), names_b.index(s["score_tap_b"])]
        if "score_tap_a" in s
        else None
    )
    return out


def atlas_data(
    dataset: str,
    models: Mapping[str, Mapping[str, Any]],
    tables: Mapping[Pair, Table],
    measure: str = "linear_cka",
) -> dict[str, Any]:
    """The page's data (its contract: `seelike.atlas.page`) for one measure.

    `models`: name → {arch, family, class} in config order; `tables`: (a, b) as stored → (long table, meta) for
    every self pair and every cross pair (a CKA table, or a similarity table holding `measure`)."""
    frames = {pair: measure_frame(df, measure) for pair, (df, _) in tables.items()}
    blocks = {m: _blocks(frames[(m, m)]) for m in models}
    out_pairs = []
    for (a, b), frame in frames.items():
        names_a = [x["tap"] for x in blocks[a]]
        names_b = [x["tap"] for x in blocks[b]]
        entry: dict[str, Any] = {"a": a, "b": b, **_matrices(frame, names_a, names_b)}
        if a == b:
            entry |= SELF_SCORES
        else:
            unc = tables[(a, b)][1]["uncertainty"]["pair"][measure]
            entry |= _cross_scores(frame, unc, names_a, names_b)
        out_pairs.append(entry)
    meta = next(iter(tables.values()))[1]
    return {
        "version": DATA_VERSION,
        "dataset": dataset,
        "measure": measure,
        "permutations": int((meta.get("uncertainty") or {}).get("permutations", 0)),
        "models": [
            {
                "name": m,
                "arch": spec.get("arch"),
                "family": spec.get("family"),
                "class": spec.get("class", "other"),
                "blocks": blocks[m],
            }
            for m, spec in models.items()
        ],
        "pairs": out_pairs,
    }


def _json_number(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else float(v)
    return v


def pair_score_table(tables: Mapping[Pair, Table], measures: list[str]) -> pd.DataFrame:
    """pairs.csv: one row per measure × cross pair (as stored) with `pair_scores`'s columns — the pair score
    (max over block cells) ± SE and where, its family-wise permutation p, τ and the calibrated score, the
    depth-aligned diagonal ± SE and its p."""
    rows = []
    for (a, b), (df, meta) in tables.items():
        if a == b:
            continue
        for m in measures:
            unc = ((meta.get("uncertainty") or {}).get("pair") or {}).get(m)
            if unc is None:
                continue
            rows.append({"measure": m, "a": a, "b": b, **pair_scores(measure_frame(df, m), unc)})
    return pd.DataFrame(rows)


def score_shift(scores: Mapping[str, pd.DataFrame], measure: str = "linear_cka") -> pd.DataFrame:
    """How each pair's scores move between datasets (Ciernik et al. 2025: which models look alike depends on the
    data): one row per pair × dataset from each dataset's pairs.csv (`pair_score_table`), with the pair score and
    the depth-aligned diagonal ± SE, each pair's rank among the pairs on that dataset, and the change from the
    first dataset with its SE (the datasets' images are independent: √(SE₁² + SE₂²))."""
    frames = []
    for dataset, df in scores.items():
        d = df[df["measure"] == measure][
            ["a", "b", "score", "score_se", "score_p", "diagonal", "diagonal_se"]
        ]
        d = d.assign(dataset=dataset, pair=d["a"] + " × " + d["b"])
        frames.append(d.assign(diagonal_rank=d["diagonal"].rank(ascending=False, method="average")))
    long = pd.concat(frames, ignore_index=True)
    first = long[long["dataset"] == next(iter(scores))].set_index("pair")
    for col in ("score", "diagonal"):
        base = long["pair"].map(first[col])
        base_se = long["pair"].map(first[f"{col}_se"])
        long[f"{col}_change"] = long[col] - base
        long[f"{col}_change_se"] = np.sqrt(long[f"{col}_se"] ** 2 + base_se**2)
    return long[["dataset", "pair", "a", "b", "score", "score_se", "score_p", "score_change", "score_change_se",
                 "diagonal", "diagonal_se", "diagonal_change", "diagonal_change_se", "diagonal_rank"]]  # fmt: skip


def rank_agreement(shift: pd.DataFrame, col: str = "diagonal") -> pd.DataFrame:
    """Spearman correlation of the pairs' `col` between every two datasets: 1 = the same pairs look alike."""
    wide = shift.pivot_table(index="pair", columns="dataset", values=col, sort=False)
    corr = wide.rank().corr()
    return corr
