"""Jackknife and bootstrap over groups of minibatches, for any statistic of one or several CKA tables.

A cell's minibatch CKA is a ratio of sums of per-minibatch HSIC₁ terms (`seelike.cka`), so the terms of
consecutive minibatches summed into G groups (`sum_groups`; G = min(minibatches, `MAX_GROUPS`)) are enough to
recompute every cell with any group left out, or with the groups resampled. The CKA rule stores them beside its
table (`groups_path`: per repeat r, cross (R, G, Tₐ, T_b), self_a (R, G, Tₐ), self_b (R, G, T_b), float64:
8·R·G·(Tₐ·T_b + Tₐ + T_b) bytes). Every model sees the same minibatch plan (same images, same batch
boundaries), so group g of repeat r holds the same images in every table of a dataset: a statistic of several
tables (ViT minus CNN, a model minus its reference) is resampled jointly, which keeps their correlation.

- `jackknife(metric, groups)`: the delete-one-group jackknife SE of any `metric(matrices)` (a float or a dict of
  floats). The estimate is the mean over repeats of the per-repeat CKA; replicate (r, g) moves repeat r's share
  of it to its group-g-deleted value, θ₍ᵣ,₋g₎ = θ + (CKAᵣ₍₋g₎ − CKAᵣ)/R, and
  SE² = Σᵣ (G−1)/G · Σ_g (f(θ₍ᵣ,₋g₎) − mean_g f(θ₍ᵣ,₋g₎))². For a single cell this is the table's `cka_se`,
  √Σ SE²ᵣ / R, exactly when every group is one minibatch; for a mean of cells it is the jackknife of the mean
  itself (not the mean of the cells' SEs, an upper bound).
- `bootstrap(metric, groups)`: for statistics that are not smooth in the cells (an argmax, a rank
  correlation): per draw the G groups of each repeat resampled with replacement (seeded), the per-repeat CKA
  recomputed, averaged over repeats; the percentile interval and the SD of the draws.

Numpy only (no torch): the claims rule reads these files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seelike.io import atomic_write
from seelike.jackknife import jackknife_se

__all__ = [
    "BOOTSTRAP_DRAWS",
    "LEVEL",
    "MAX_GROUPS",
    "CkaGroups",
    "Interval",
    "aligned",
    "bootstrap",
    "group_slices",
    "group_terms",
    "groups_path",
    "jackknife",
    "sum_groups",
]

# Groups per repeat: enough for a jackknife / bootstrap (20 − 1 degrees of freedom per repeat), few enough that
# the stored terms stay a small multiple of the table (≤ 20·R Tₐ×T_b float64 matrices).
MAX_GROUPS = 20
BOOTSTRAP_DRAWS = 1000
LEVEL = 0.95  # two-sided percentile interval: the bootstrap's counterpart of ± 2 SE

Metric = Callable[[list[np.ndarray]], "float | Mapping[str, float]"]


def group_slices(k: int, groups: int = MAX_GROUPS) -> list[np.ndarray]:
    """Indices of k minibatches cut into min(k, groups) runs of consecutive minibatches (sizes differ by at most
    one, the longer runs first)."""
    if k < 1:
        raise ValueError("no minibatches to group")
    return np.array_split(np.arange(k), min(k, groups))


def sum_groups(terms: np.ndarray, groups: int = MAX_GROUPS) -> np.ndarray:
    """Per-minibatch terms (k, ...) → their sums over `group_slices` (G, ...), float64."""
    terms = np.asarray(terms, dtype=np.float64)
    return np.stack([terms[s].sum(0) for s in group_slices(len(terms), groups)])


def group_terms(
    cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray, groups: int = MAX_GROUPS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One repeat's per-minibatch HSIC₁ terms, cross (k, Tₐ, T_b), self_a (k, Tₐ), self_b (k, T_b), summed
    over `group_slices` (what `CkaGroups.from_repeats` stacks)."""
    return sum_groups(cross, groups), sum_groups(self_a, groups), sum_groups(self_b, groups)


def groups_path(table: str | Path) -> Path:
    """Where a table's jackknife groups are stored: `<dir>/<name without suffix>.groups.npz` beside it."""
    table = Path(table)
    return table.with_name(table.with_suffix("").name + ".groups.npz")


def _ratio(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> np.ndarray:
    """(..., Tₐ, T_b) CKA = cross / √(self_a ⊗ self_b); NaN where a self term is not positive."""
    denom = np.sqrt(np.clip(self_a, 0, None)[..., :, None] * np.clip(self_b, 0, None)[..., None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, cross / np.where(denom > 0, denom, 1.0), np.nan)


@dataclass(frozen=True)
class CkaGroups:
    """A CKA table's HSIC₁ terms summed over groups of minibatches, per repeat.

    `cross` (R, G, Tₐ, T_b), `self_a` (R, G, Tₐ), `self_b` (R, G, T_b); `undefined` (Tₐ, T_b) marks cells
    left out as the table leaves them out (constant taps: NaN, as `seelike.tables.cka_array` reads them)."""

    cross: np.ndarray
    self_a: np.ndarray
    self_b: np.ndarray
    undefined: np.ndarray

    @classmethod
    def from_repeats(
        cls,
        grouped: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        constant_a: np.ndarray,
        constant_b: np.ndarray,
    ) -> CkaGroups:
        """From each repeat's terms summed into groups (`group_terms`); every repeat of one plan has the same
        groups. `constant_a` / `constant_b`: the table's constant taps (their cells are left out)."""
        cross, self_a, self_b = (np.stack([g[i] for g in grouped]) for i in range(3))
        undefined = np.asarray(constant_a, bool)[:, None] | np.asarray(constant_b, bool)[None, :]
        return cls(cross, self_a, self_b, undefined)

    @property
    def repeats(self) -> int:
        return self.cross.shape[0]

    @property
    def n_groups(self) -> int:
        return self.cross.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.cross.shape[2], self.cross.shape[3]

    def take(self, rows: Sequence[int], cols: Sequence[int]) -> CkaGroups:
        """The groups of the cells rows × cols (tap positions), in the given order."""
        rows, cols = np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)
        # C-contiguous (fancy indexing may return other strides): `per_repeat` reshapes without a copy
        return CkaGroups(
            np.ascontiguousarray(self.cross[:, :, rows][:, :, :, cols]),
            self.self_a[:, :, rows],
            self.self_b[:, :, cols],
            self.undefined[np.ix_(rows, cols)],
        )

    def transposed(self) -> CkaGroups:
        """The same pair read the other way round (model b on the rows)."""
        return CkaGroups(
            np.ascontiguousarray(self.cross.swapaxes(2, 3)),
            self.self_b,
            self.self_a,
            self.undefined.T.copy(),
        )

    def masked(self, undefined: np.ndarray) -> CkaGroups:
        """These groups with further cells left out (e.g. where a table holds no value)."""
        return CkaGroups(self.cross, self.self_a, self.self_b, self.undefined | undefined)

    def _mask(self, m: np.ndarray) -> np.ndarray:
        return np.where(self.undefined, np.nan, m)

    def per_repeat(self, weights: np.ndarray | None = None) -> np.ndarray:
        """(R, Tₐ, T_b) CKA of each repeat from its groups, weighted (R, G) if given (1: in, 0: left out,
        counts: a bootstrap draw)."""
        if weights is None:
            c, a, b = self.cross.sum(1), self.self_a.sum(1), self.self_b.sum(1)
        else:
            w = np.asarray(weights, dtype=np.float64)[:, None, :]  # (R, 1, G): batched products
            r = self.repeats
            c = (w @ self.cross.reshape(r, self.n_groups, -1)).reshape(r, *self.shape)
            a, b = (w @ self.self_a)[:, 0], (w @ self.self_b)[:, 0]
        return self._mask(_ratio(c, a, b))

    def estimate(self) -> np.ndarray:
        """(Tₐ, T_b) the table's CKA: the mean over repeats of each repeat's ratio of sums."""
        return self.per_repeat().mean(0)

    def leave_one_out(self, r: int) -> np.ndarray:
        """(G, Tₐ, T_b) the CKA of repeat r with each group g left out in turn."""
        c = self.cross[r].sum(0) - self.cross[r]
        a = self.self_a[r].sum(0) - self.self_a[r]
        b = self.self_b[r].sum(0) - self.self_b[r]
        return self._mask(_ratio(c, a, b))

    def save(self, path: str | Path) -> None:
        """Write as a `.npz` (float64 terms, the undefined cells), atomically."""
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, cross=self.cross, self_a=self.self_a, self_b=self.self_b,
                     undefined=self.undefined)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> CkaGroups:
        with np.load(path) as z:
            return cls(z["cross"], z["self_a"], z["self_b"], z["undefined"].astype(bool))


def aligned(groups: CkaGroups, df: pd.DataFrame) -> CkaGroups:
    """`groups` restricted and ordered as `seelike.tables.cka_array(df)` reads the long table `df` (the taps of
    its `index_a` / `index_b` present, sorted), with the cells `cka_array` leaves out (constant, no value)."""
    from seelike.tables import cka_array

    ia, ib = np.sort(df["index_a"].unique()), np.sort(df["index_b"].unique())
    m, _, _ = cka_array(df)
    return groups.take(ia, ib).masked(~np.isfinite(m))


def _common_plan(groups: Sequence[CkaGroups]) -> tuple[int, int]:
    """(R, G) shared by all `groups`: a joint resampling needs the same repeats and groups (one plan)."""
    plans = {(g.repeats, g.n_groups) for g in groups}
    if len(plans) != 1:
        raise ValueError(
            f"tables resampled jointly need the same repeats and groups (one minibatch plan), got {plans}"
        )
    return plans.pop()


def _as_dict(v: float | Mapping[str, float]) -> dict[str, float]:
    return {k: float(x) for k, x in v.items()} if isinstance(v, Mapping) else {"": float(v)}


def _unwrap(d: dict[str, Any], scalar: bool) -> Any:
    return d[""] if scalar else d


def jackknife(metric: Metric, groups: Sequence[CkaGroups]) -> float | dict[str, float]:
    """Delete-one-group jackknife SE of `metric` (list of (Tₐ, T_b) CKA matrices, one per table → float or
    dict of floats), the tables resampled jointly, combined over repeats (module docstring). NaN with fewer
    than 2 groups or where a replicate is not finite."""
    groups = list(groups)
    repeats, n = _common_plan(groups)
    est = [g.estimate() for g in groups]
    per_r = [g.per_repeat() for g in groups]
    first = metric(est)
    scalar = not isinstance(first, Mapping)
    keys = list(_as_dict(first))
    if n < 2:
        return _unwrap(dict.fromkeys(keys, math.nan), scalar)
    var = dict.fromkeys(keys, 0.0)
    for r in range(repeats):
        loo = [g.leave_one_out(r) for g in groups]
        reps = [
            _as_dict(
                metric(
                    [e + (lo[i] - p[r]) / repeats for e, lo, p in zip(est, loo, per_r, strict=True)]
                )
            )
            for i in range(n)
        ]
        for k in keys:  # repeat r's share of the variance (independent repeats add)
            var[k] += jackknife_se(np.array([rep[k] for rep in reps])) ** 2
    return _unwrap(
        {k: math.sqrt(v) if math.isfinite(v) else math.nan for k, v in var.items()}, scalar
    )


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval (`low`, `high`, at `LEVEL`) and the SD of the draws."""

    low: float
    high: float
    sd: float


def bootstrap(
    metric: Metric,
    groups: Sequence[CkaGroups],
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval | dict[str, Interval]:
    """Percentile bootstrap interval of `metric` (as for `jackknife`): per draw, each repeat's G groups resampled
    with replacement (the same draw for every table: a joint resampling), the per-repeat CKA recomputed and
    averaged over repeats. NaN bounds with fewer than 2 groups or when fewer than 90% of the draws are finite."""
    groups = list(groups)
    repeats, n = _common_plan(groups)
    first = metric([g.estimate() for g in groups])
    scalar = not isinstance(first, Mapping)
    keys = list(_as_dict(first))
    nan = Interval(math.nan, math.nan, math.nan)
    if n < 2:
        return _unwrap(dict.fromkeys(keys, nan), scalar)
    rng = np.random.default_rng(seed)
    vals = {k: np.empty(draws) for k in keys}
    for d in range(draws):
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=repeats)
        v = _as_dict(metric([g.per_repeat(w).mean(0) for g in groups]))
        for k in keys:
            vals[k][d] = v[k]
    out = {}
    for k, v in vals.items():
        v = v[np.isfinite(v)]
        if v.size < 0.9 * draws:
            out[k] = nan
            continue
        lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
        out[k] = Interval(float(lo), float(hi), float(v.std(ddof=1)))
    return _unwrap(out, scalar)
