"""Reading the pipeline's tidy tables: one home for the helpers figures and claims share.

- CKA long tables (`seelike.analyses.cka_tables.cka_from_caches`: one row per tap pair) as arrays or labelled matrices;
- probe tables (`linear_probes`): which shot count and which aggregation a figure or a claim reads, and the
  per-image correctness they keep for standard errors of accuracies and their differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

# The aggregation a model is read by (the paper's Fig 13): CLS for ViTs with a CLS token, final-grid pooling for
# CNNs, then the means. ViT and CNN tables never share cls / pool_final, so one order serves both families.
PRIMARY_AGGREGATIONS: tuple[str, ...] = ("cls", "pool_final", "mean_spatial", "mean_all", "flat")
# The shot count read when a table has several and none is asked for: the paper's 10-shot probes.
DEFAULT_SHOTS = "10"
# A cell is distinguishable from its permutation null when it lies this many null SDs above the null mean.
NULL_Z = 3.0
# the columns of a measures table (`measures_from_caches`) as the CKA table names them
CKA_COLUMNS = {
    "value": "cka",
    "value_std": "cka_std",
    "value_min": "cka_min",
    "value_max": "cka_max",
    "se": "cka_se",
}


def cka_array(df: pd.DataFrame, value: str = "cka") -> tuple[np.ndarray, list[str], list[str]]:
    """A long CKA table as an (n_a, n_b) float64 array in forward tap order, with the tap names of each axis.

    Cells flagged `constant` (a tap constant over the images: CKA undefined, stored as 0) become NaN, so that no
    metric averages a made-up 0 and no heatmap shows one.
    """
    d = df.sort_values(["index_a", "index_b"])
    ia = np.sort(d["index_a"].unique())
    ib = np.sort(d["index_b"].unique())
    m = np.full((len(ia), len(ib)), np.nan)
    ra = np.searchsorted(ia, d["index_a"].to_numpy())
    rb = np.searchsorted(ib, d["index_b"].to_numpy())
    vals = d[value].to_numpy(dtype=np.float64).copy()
    if "constant" in d:
        vals[d["constant"].to_numpy(bool)] = np.nan
    m[ra, rb] = vals
    names_a = d.drop_duplicates("index_a").sort_values("index_a")["tap_a"].astype(str).tolist()
    names_b = d.drop_duplicates("index_b").sort_values("index_b")["tap_b"].astype(str).tolist()
    return m, names_a, names_b


def cka_frame(df: pd.DataFrame, value: str = "cka") -> pd.DataFrame:
    """A long CKA table as a tap × tap DataFrame in forward order (rows: model a, columns: model b); the
    stored values as they are (constant taps keep their 0)."""
    m = df.pivot_table(
        index=["index_a", "tap_a"], columns=["index_b", "tap_b"], values=value, sort=True
    )
    m.index = m.index.get_level_values(1)
    m.columns = m.columns.get_level_values(1)
    return m


def probe_shots(df: pd.DataFrame, shots: str | int | None = None) -> str:
    """The shot count to read from a probe table: `shots` when given (an error if the table lacks it), else
    10 when present, else the table's first."""
    levels = list(dict.fromkeys(df["shots"].astype(str)))
    if shots is not None:
        if str(shots) not in levels:
            raise ValueError(f"no probes with shots={shots!r} in the table (it has {levels})")
        return str(shots)
    return DEFAULT_SHOTS if DEFAULT_SHOTS in levels else levels[0]


def primary_aggregation(
    df: pd.DataFrame, order: Sequence[str] = PRIMARY_AGGREGATIONS
) -> str | None:
    """The first aggregation of `order` present in a probe table (None when none is)."""
    present = set(df["aggregation"])
    return next((a for a in order if a in present), None)


# A probe table's record of each test image: whether the probe classified it correctly, in the table's test order
# (the same images in the same order for every tap, aggregation and shot count), packed 8 to a byte (numpy's
# big-endian bit order). Kept on the pooled rows, not the per-token ones; n_test bits each.
PROBE_CORRECT = "correct_bits"


def pack_correct(correct: np.ndarray) -> bytes:
    """Per-image correctness (n,) bool → `PROBE_CORRECT` bytes (⌈n/8⌉)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes()


def unpack_correct(packed: bytes, n: int) -> np.ndarray:
    """`pack_correct`'s inverse: (n,) bool for n test images."""
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=int(n)).astype(bool)


def accuracy_contrast(correct: np.ndarray, weights: Sequence[float]) -> tuple[float, float]:
    """Σₖ wₖ·accuracyₖ of k probes scored on the same n test images, with its standard error over the images.

    `correct`: (k, n) per-image correctness. Per image dᵢ = Σₖ wₖ cₖᵢ (c = 1 right, 0 wrong); the value is the
    mean of d and its SE √(Σᵢ (dᵢ − d̄)² / n) / √n: test images independent, the fitted probes fixed (the SE
    says nothing of the draw of the probe-training images). One probe (w = [1]): the binomial √(p(1 − p)/n);
    two (w = [1, −1]): the paired (McNemar) SE of a difference, √((n₁₀ + n₀₁)/n − d̄²)/√n, which is small when
    the two probes err on the same images."""
    w = np.asarray(weights, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64).reshape(len(w), -1)
    d = w @ c
    n = d.size
    if n == 0:
        return math.nan, math.nan
    return float(d.mean()), float(d.std() / math.sqrt(n))


def _swapped(name: str) -> str:
    """`x_a` ↔ `x_b` (a pair table's per-side columns and metadata keys)."""
    if name.endswith("_a"):
        return name[:-2] + "_b"
    if name.endswith("_b"):
        return name[:-2] + "_a"
    return name


def oriented(df: pd.DataFrame, meta: dict, a: str) -> tuple[pd.DataFrame, dict]:
    """A model pair's long table (CKA or similarity) with model `a` on the rows (side a).

    Each unordered pair is computed once, its table named in config order (`cka.pairs`); asked the other way
    round it is read as the transpose: every per-side column and metadata key swapped (tap_a ↔ tap_b, ...). The
    measures are symmetric in the two models, and so is their null (permuting one model's images against the
    other's), so the values are unchanged. A table already oriented, or a self pair, is returned as it is."""
    if meta.get("model_a") == a or meta.get("model_a") == meta.get("model_b"):
        return df, meta
    if meta.get("model_b") != a:
        raise ValueError(
            f"the table compares {meta.get('model_a')!r} with {meta.get('model_b')!r}, not {a!r}"
        )
    out = df.rename(columns=_swapped)[list(df.columns)]
    if {"index_a", "index_b"} <= set(out.columns):
        out = out.sort_values(["index_a", "index_b"], kind="stable", ignore_index=True)
    swapped_meta = {_swapped(k): v for k, v in meta.items()}
    unc = dict(swapped_meta.get("uncertainty") or {})
    if unc.get("pair"):
        unc["pair"] = {m: {_swapped(k): v for k, v in p.items()} for m, p in unc["pair"].items()}
        swapped_meta["uncertainty"] = unc
    return out, swapped_meta
