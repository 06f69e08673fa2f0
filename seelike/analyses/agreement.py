"""How far the similarity measures agree: per model pair, the Spearman rank correlation between every two
measures' values over the tap pairs both define (`results/similarity/{dataset}/{a}__{b}.parquet` tables).

Ranks, not values: the measures live on different scales (biased CKA sits far above unbiased CKA for
p ≫ n, RSA correlates distances), and what a figure or a claim reads is which tap pairs are more alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from seelike.claims.metrics import spearman
from seelike.similarity import MEASURES

__all__ = ["AGREEMENT_COLUMNS", "agreement_table", "measure_agreement", "measures_present"]

AGREEMENT_COLUMNS = ["measure_1", "measure_2", "spearman", "n_cells"]


def measures_present(table: pd.DataFrame) -> list[str]:
    """The measures of a long similarity table in `MEASURES` order (names outside it last, sorted)."""
    present = set(table["measure"].astype(str))
    return [m for m in MEASURES if m in present] + sorted(present - set(MEASURES))


def _cell_values(table: pd.DataFrame, measure: str, same: bool) -> pd.Series:
    """One measure's values indexed by cell (index_a, index_b), only the cells it defines: finite and not
    constant (a constant tap's value is undefined and stored as 0), and for a self table i < j only (the
    diagonal is 1 by construction and the matrix symmetric: each pair once)."""
    d = table[table["measure"].astype(str) == measure]
    v = d["value"].to_numpy(dtype=np.float64)
    keep = np.isfinite(v)
    if "constant" in d:
        keep &= ~d["constant"].to_numpy(bool)
    if same:
        keep &= d["index_a"].to_numpy() < d["index_b"].to_numpy()
    d = d[keep]
    return pd.Series(
        v[keep], index=pd.MultiIndex.from_arrays([d["index_a"], d["index_b"]]), dtype=np.float64
    )


def measure_agreement(table: pd.DataFrame, same: bool) -> pd.DataFrame:
    """Spearman rank correlation between every two measures of one model pair's long similarity table.

    One row per pair of measures present (`measure_1` before `measure_2` in `MEASURES` order, no diagonal):
    `spearman` over the cells both measures define (finite, not constant; `same` = a self table: cells i < j
    only) and `n_cells`, their number; `spearman` is NaN for fewer than 2 cells or a constant input
    (`seelike.claims.metrics.spearman`: average ranks for ties, as scipy.stats.spearmanr).
    """
    names = measures_present(table)
    values = {m: _cell_values(table, m, same) for m in names}
    rows = []
    for i, m1 in enumerate(names):
        for m2 in names[i + 1 :]:
            x, y = values[m1].align(values[m2], join="inner")
            rows.append(
                {"measure_1": m1, "measure_2": m2, "spearman": spearman(x, y), "n_cells": len(x)}
            )
    out = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    return out.astype({"spearman": np.float64, "n_cells": np.int64})


def agreement_table(tables: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """`measure_agreement` of every model pair (a, b) → its table, concatenated with `model_a`, `model_b`
    first; a pair (a, a) is a self table."""
    frames = [
        measure_agreement(df, same=a == b).assign(model_a=a, model_b=b)
        for (a, b), df in tables.items()
    ]
    cols = ["model_a", "model_b", *AGREEMENT_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=cols).astype({"spearman": np.float64, "n_cells": np.int64})
    return pd.concat(frames, ignore_index=True)[cols]
