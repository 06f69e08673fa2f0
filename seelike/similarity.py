"""Similarity measures beyond linear CKA, every one a function of the per-minibatch Grams the activation cache
already holds (no forward pass), for all tap pairs of two models at once.

For the images of one minibatch, K = X_c X_cᵀ is a tap's batch-centred Gram (`seelike.cka.gram`); squared
distances follow from it, d²ᵢⱼ = Kᵢᵢ + Kⱼⱼ − 2Kᵢⱼ (centring does not change them). The measures:

- `linear_cka`          minibatch linear CKA, unbiased HSIC₁, ratio of means (`seelike.cka`; the default).
- `linear_cka_biased`   the same with the biased HSIC₀ = tr(KHLH)/(n−1)² (Kornblith et al. 2019's estimator, what
                        most other tools report; far from 0 for independent features when p ≫ n).
- `rbf_cka`             CKA of RBF kernels exp(−d²/(2σ²)), σ = `rbf_sigma` × the median pairwise distance (i < j)
                        of that tap in that minibatch (Kornblith et al. use the same median rule), unbiased HSIC₁.
- `dcor`                bias-corrected squared distance correlation (Székely & Rizzo 2014): U-centred distance
                        matrices dᵢⱼ, the same estimator shape as HSIC₁; ratio of means over minibatches.
- `linear_cka_minus_pc` linear CKA after removing each representation's top `pcs_removed` principal directions
                        of the minibatch (the top eigenvectors of K: K' = K − Σ_top λ v vᵀ): how much of a
                        cell the dominant directions explain.
- `rsa`                 representational similarity analysis: Spearman (or Pearson) correlation of the two
                        minibatch RDMs (Euclidean distances, i < j), averaged over minibatches.
- `bures`               normalised Bures similarity ‖X_cᵀY_c‖_* / (‖X_c‖_F‖Y_c‖_F) = tr((K^½LK^½)^½)/√(trK trL)
                        (1 − NBS is the squared orthogonal-Procrustes distance / 2 of the normalised
                        representations), averaged over minibatches; O(n³) per tap pair, so for listed cells only.

The CKA-family measures (the first five) share `seelike.cka.CkaAccumulator`: jackknife SE over minibatches and
the permutation null come with it. `rsa` and `bures` are means of per-minibatch values (`MeanAccumulator`):
their SE is the same delete-one jackknife (= SD/√k of a mean); `rsa` has the permutation null, `bures` none.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from seelike.cka import (
    MIN_BATCH,
    CkaAccumulator,
    ConstantRepresentationWarning,
    GramKernel,
    activation_grams,
    batch_images,
    check_paired_batches,
    h_centre_split,
    pack_upper,
    packed_on,
    permuted_upper_index,
    split_packed,
    strict_upper,
)

# the measures' names and the config keys each reads, defined torch-free for the dry run's config checks
from seelike.config.measures import MEASURE_SETTINGS, MEASURES

__all__ = [
    "CKA_FAMILY",
    "MEASURES",
    "MEASURE_SETTINGS",
    "MeanAccumulator",
    "MeasureOptions",
    "make_accumulator",
    "measures_from_grams",
    "minibatch_similarity",
    "similarity_matrix",
]

# measures computed by CkaAccumulator (a kernel per Gram, HSIC, ratio of means over minibatches)
CKA_FAMILY: tuple[str, ...] = (
    "linear_cka",
    "linear_cka_biased",
    "rbf_cka",
    "dcor",
    "linear_cka_minus_pc",
)
RSA_CORRELATIONS = ("spearman", "pearson")
# eigenvalues below this fraction of a Gram's largest (or below its numerical rank, `rank_tolerance`) are
# rounding noise of a PSD matrix (set to 0), so that a representation of rank ≤ k is exactly constant once its
# top k directions are removed
EIG_RTOL = 1e-12
# RSA (Spearman): squared distances closer than this many eps of the Gram's dtype × its largest diagonal entry
# are tied (the rounding of d² = Kᵢᵢ + Kⱼⱼ − 2Kᵢⱼ)
TIE_EPS = 4


@dataclass(frozen=True)
class MeasureOptions:
    """The settings of the measures (`cka.rbf_sigma`, `cka.rsa_correlation`, `cka.pcs_removed`)."""

    rbf_sigma: float = 1.0  # RBF bandwidth: this fraction of the median pairwise distance
    rsa_correlation: str = "spearman"  # or "pearson"
    pcs_removed: int = 1  # principal directions removed by linear_cka_minus_pc

    def __post_init__(self) -> None:
        if not self.rbf_sigma > 0:
            raise ValueError(f"cka.rbf_sigma must be > 0, got {self.rbf_sigma}")
        if self.rsa_correlation not in RSA_CORRELATIONS:
            raise ValueError(
                f"cka.rsa_correlation must be one of {RSA_CORRELATIONS}, got {self.rsa_correlation!r}"
            )
        if int(self.pcs_removed) != self.pcs_removed or self.pcs_removed < 1:
            raise ValueError(f"cka.pcs_removed must be an integer ≥ 1, got {self.pcs_removed}")


def check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(
            f"unknown similarity measure {measure!r}; valid measures: {', '.join(MEASURES)}"
        )


# ---------------------------------------------------------------- kernels of the CKA family
def squared_distances(diag: torch.Tensor, off: torch.Tensor, n: int) -> torch.Tensor:
    """Squared Euclidean distances d²ᵢⱼ = Kᵢᵢ + Kⱼⱼ − 2Kᵢⱼ (i < j, strict upper order) from a Gram in split form;
    clamped at 0 (rounding can make a tiny distance negative)."""
    i, j, _ = strict_upper(n, off.device)
    return (diag[..., i] + diag[..., j] - 2 * off).clamp_min(0)


def median_last(v: torch.Tensor) -> torch.Tensor:
    """numpy's median over the last axis (mean of the two middle values for an even count)."""
    s = v.sort(-1).values
    m = s.shape[-1]
    return s[..., (m - 1) // 2] if m % 2 else (s[..., m // 2 - 1] + s[..., m // 2]) / 2


def distance_kernel(packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance matrices (zero diagonal): U-centred, HSIC₁'s estimator is the bias-corrected dCov²."""
    diag, off = split_packed(packed, n)
    return torch.zeros_like(diag), squared_distances(diag, off, n).sqrt()


def rbf_kernel(sigma_fraction: float) -> GramKernel:
    """RBF kernel matrices exp(−d²/(2σ²)) with σ = `sigma_fraction` × the median distance over the pairs i < j,
    per tap and minibatch. When over half the pairs coincide (median 0) the mean distance stands in; a tap
    whose images all coincide gives a constant kernel (flagged constant by the accumulator)."""

    def kernel(packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        diag, off = split_packed(packed, n)
        d2 = squared_distances(diag, off, n)
        d = d2.sqrt()
        scale = median_last(d)
        scale = torch.where(scale > 0, scale, d.mean(-1))
        sigma = sigma_fraction * scale
        safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))[..., None]
        k = torch.where(sigma[..., None] > 0, torch.exp(-d2 / (2 * safe**2)), torch.ones_like(d2))
        return torch.ones_like(diag), k

    return kernel


def pcs_removed_kernel(k: int) -> GramKernel:
    """Grams with the top `k` principal directions of the minibatch removed: K' = Σ over all but the k largest
    eigenpairs of HKH (H centres the images; a cached Gram is centred already), λ v vᵀ."""

    def kernel(packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        diag, off = split_packed(packed, n)
        hd, ho = h_centre_split(diag, off, n)
        full = _join(hd, ho, n)
        evals, evecs = torch.linalg.eigh(full)  # ascending
        evals = torch.where(
            evals > rank_tolerance(evals, packed.dtype, n), evals, torch.zeros_like(evals)
        )
        keep = max(n - k, 0)
        v = evecs[..., :keep]
        kept = (v * evals[..., None, :keep]) @ v.transpose(-1, -2)
        return split_packed(pack_upper(kept), n)

    return kernel


def rank_tolerance(evals: torch.Tensor, dtype: torch.dtype, n: int) -> torch.Tensor:
    """Eigenvalues (ascending, last axis) at or below this are rounding of a PSD Gram stored in `dtype`: the
    numerical rank of numpy.linalg.matrix_rank, n·eps·λ_max (at least EIG_RTOL·λ_max). A float32 cache leaves
    ~1e-8·λ_max behind in the directions a low-rank tap does not have."""
    return max(n * torch.finfo(dtype).eps, EIG_RTOL) * evals[..., -1:].clamp_min(0)


def _join(diag: torch.Tensor, off: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric (..., n, n) matrices from their split form."""
    i, j, _ = strict_upper(n, off.device)
    out = off.new_zeros((*off.shape[:-1], n, n))
    out[..., i, j] = off
    out[..., j, i] = off
    out.diagonal(dim1=-2, dim2=-1).copy_(diag)
    return out


# ---------------------------------------------------------------- means of per-minibatch values
@dataclass
class MeanAccumulator:
    """Tₐ×T_b means over minibatches of a per-minibatch similarity (`rsa`, `bures`), with the same interface as
    `CkaAccumulator` (add, result, jackknife_se, null, degenerate, dropped, batches).

    `values(grams_a, grams_b, n)` returns one minibatch's Tₐ×T_b values and, when `permutations`, their
    permutation null (P, Tₐ, T_b) — the second model's images permuted within the minibatch, seeded by (seed,
    minibatch index) as for CKA — or None where the measure has none; cells outside `cells` stay NaN.
    """

    n_a: int
    n_b: int
    measure: str
    options: MeasureOptions = field(default_factory=MeasureOptions)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    permutations: int = 0
    seed: int = 0
    cells: np.ndarray | None = None  # (Tₐ, T_b) bool: the cells computed (bures); None = all
    chunk: int = 32
    batches: int = field(init=False, default=0)
    dropped: list[int] = field(init=False, default_factory=list)
    batch_values: list[np.ndarray] = field(init=False, default_factory=list)
    batch_nulls: list[np.ndarray] = field(init=False, default_factory=list)
    const_a: np.ndarray = field(init=False)
    const_b: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.measure not in ("rsa", "bures"):
            raise ValueError(f"MeanAccumulator computes rsa and bures, not {self.measure!r}")
        self.const_a = np.zeros(self.n_a, bool)
        self.const_b = np.zeros(self.n_b, bool)

    def add(self, grams_a, grams_b=None, batch_id: int = -1) -> bool:
        n = batch_images(grams_a)
        if n < MIN_BATCH:
            self.dropped.append(batch_id if batch_id >= 0 else self.batches + len(self.dropped))
            return False
        if grams_b is not None and batch_images(grams_b) != n:
            raise ValueError(
                f"minibatch sizes differ between models: {n} vs {batch_images(grams_b)}"
            )
        rng = np.random.default_rng([self.seed, batch_id if batch_id >= 0 else self.batches])
        perms = [rng.permutation(n) for _ in range(self.permutations)]
        step = self._rsa if self.measure == "rsa" else self._bures
        values, null = step(grams_a, grams_b, n, perms)
        self.batch_values.append(values)
        if null is not None:
            self.batch_nulls.append(null)
        self.batches += 1
        return True

    # -- rsa: RDM vectors, ranked (Spearman) or not, standardised to unit norm: correlations are dot products
    def _rdm_vectors(self, grams, n: int) -> tuple[torch.Tensor, np.ndarray]:
        out, flags = [], []
        for start in range(0, grams.shape[0], self.chunk):
            packed = packed_on(grams[start : start + self.chunk], self.device)
            diag, off = split_packed(packed, n)
            d2 = squared_distances(diag, off, n)
            if self.options.rsa_correlation == "spearman":
                # ranks of d² are those of d; d² from a Gram carries rounding of a few eps × the largest
                # diagonal entry, which would split exact ties (e.g. binary features): gaps below that tie
                tol = TIE_EPS * torch.finfo(packed.dtype).eps * diag.amax(-1, keepdim=True)
                d = average_ranks(d2, tol)
            else:
                d = d2.sqrt()
            raw = d.norm(dim=-1)
            d = d - d.mean(-1, keepdim=True)
            # an RDM with (numerically) one value has no correlation: all images equidistant, or coinciding
            constant = d.norm(dim=-1) <= 1e-12 * raw
            d = torch.where(constant[:, None], torch.zeros_like(d), d)
            out.append(d / d.norm(dim=-1, keepdim=True).clamp_min(1e-300))
            flags.append(constant)
        return torch.cat(out), torch.cat(flags).cpu().numpy()

    def _rsa(self, grams_a, grams_b, n: int, perms) -> tuple[np.ndarray, np.ndarray | None]:
        va, ca = self._rdm_vectors(grams_a, n)
        vb, cb = (va, ca) if grams_b is None else self._rdm_vectors(grams_b, n)
        self.const_a |= ca
        self.const_b |= cb
        values = (va @ vb.T).cpu().numpy()
        null = None
        if perms:
            null = np.stack(
                [
                    (va @ vb[:, permuted_upper_index(n, p, self.device)].T).cpu().numpy()
                    for p in perms
                ]
            )
        return values, null

    # -- bures: square-root factors R (RRᵀ = HKH) of the listed taps, then nuclear norms of RₐᵀR_b per cell
    def _factors(self, grams, n: int, taps: np.ndarray) -> tuple[dict, dict]:
        factors, traces = {}, {}
        for start in range(0, len(taps), self.chunk):
            idx = taps[start : start + self.chunk]
            sub = packed_on(
                grams[idx] if isinstance(grams, np.ndarray) else grams[torch.as_tensor(idx)],
                self.device,
            )
            diag, off = split_packed(sub, n)
            hd, ho = h_centre_split(diag, off, n)
            evals, evecs = torch.linalg.eigh(_join(hd, ho, n))
            # below the numerical rank the eigenvalues are rounding, and their square roots would add ~1e-4
            tol = rank_tolerance(evals, sub.dtype, n)
            evals = torch.where(evals > tol, evals, torch.zeros_like(evals))
            r = evecs * evals.sqrt()[..., None, :]
            for t, f, tr in zip(idx, r, hd.sum(-1), strict=True):
                factors[int(t)], traces[int(t)] = f, float(tr)
        return factors, traces

    def _bures(self, grams_a, grams_b, n: int, perms) -> tuple[np.ndarray, None]:
        cells = np.ones((self.n_a, self.n_b), bool) if self.cells is None else self.cells
        ia, ib = np.nonzero(cells)
        fa, ta = self._factors(grams_a, n, np.unique(ia))
        fb, tb = (fa, ta) if grams_b is None else self._factors(grams_b, n, np.unique(ib))
        for t, tr in ta.items():
            self.const_a[t] |= tr <= 0
        for t, tr in tb.items():
            self.const_b[t] |= tr <= 0
        values = np.full((self.n_a, self.n_b), np.nan)
        for start in range(0, len(ia), self.chunk):
            a, b = ia[start : start + self.chunk], ib[start : start + self.chunk]
            m = torch.stack([fa[int(x)].T for x in a]) @ torch.stack([fb[int(y)] for y in b])
            nuc = torch.linalg.svdvals(m).sum(-1).cpu().numpy()
            den = np.sqrt([ta[int(x)] * tb[int(y)] for x, y in zip(a, b, strict=True)])
            values[a, b] = np.where(den > 0, nuc / np.where(den > 0, den, 1.0), 0.0)
        return values, None

    # -- the accumulator interface
    def degenerate(self) -> tuple[np.ndarray, np.ndarray]:
        return self.const_a.copy(), self.const_b.copy()

    def _masked(self, v: np.ndarray) -> np.ndarray:
        v = v.copy()
        v[..., self.const_a, :] = 0.0
        v[..., :, self.const_b] = 0.0
        if self.cells is not None:
            v[..., ~self.cells] = np.nan
        return v

    def result(self) -> np.ndarray:
        if not self.batch_values:
            raise ValueError(f"no minibatch of at least {MIN_BATCH} examples was added")
        return self._masked(np.mean(self.batch_values, 0))

    def jackknife_se(self) -> np.ndarray:
        """Delete-one-minibatch jackknife SE of the mean (= sample SD / √k); NaN with fewer than 2."""
        k = len(self.batch_values)
        if k < 2:
            return np.full((self.n_a, self.n_b), np.nan)
        v = np.stack(self.batch_values)
        loo = (v.sum(0) - v) / (k - 1)
        return self._masked(np.sqrt((k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0)))

    def null(self) -> np.ndarray:
        """(permutations, Tₐ, T_b) null of the mean; NaN for a measure without one (bures)."""
        if not self.batch_nulls:
            return np.full((self.permutations, self.n_a, self.n_b), np.nan)
        return self._masked(np.mean(self.batch_nulls, 0))


def average_ranks(v: torch.Tensor, tol: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Ranks 1..m along the last axis of a (T, m) stack, ties given their average rank (as
    scipy.stats.rankdata); values whose sorted neighbours differ by at most `tol` (per row) are tied."""
    s, order = v.sort(-1)
    t, m = s.shape
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = (s[:, 1:] - s[:, :-1]) > tol
    group = new.cumsum(-1) - 1 + m * torch.arange(t, device=v.device)[:, None]  # unique per row
    pos = torch.arange(1, m + 1, dtype=v.dtype, device=v.device).expand(t, m)
    sums = v.new_zeros(t * m).index_add_(0, group.ravel(), pos.reshape(-1))
    counts = v.new_zeros(t * m).index_add_(0, group.ravel(), torch.ones_like(pos).reshape(-1))
    ranks = torch.empty_like(v)
    ranks.scatter_(-1, order, (sums / counts.clamp_min(1))[group])
    return ranks


# ---------------------------------------------------------------- one accumulator per measure
def make_accumulator(
    measure: str,
    n_a: int,
    n_b: int,
    options: MeasureOptions | None = None,
    device: torch.device | str = "cpu",
    permutations: int = 0,
    seed: int = 0,
    cells: np.ndarray | None = None,
) -> CkaAccumulator | MeanAccumulator:
    """The accumulator computing `measure` for Tₐ×T_b tap pairs over minibatches of stacked Grams (full or
    packed); `cells` restricts `bures` to some tap pairs (others NaN)."""
    check_measure(measure)
    options = options or MeasureOptions()
    device = torch.device(device)
    if measure in ("rsa", "bures"):
        return MeanAccumulator(
            n_a, n_b, measure, options, device,
            permutations=permutations if measure == "rsa" else 0, seed=seed,
            cells=cells if measure == "bures" else None,
        )  # fmt: skip
    kernel = {
        "linear_cka": None,
        "linear_cka_biased": None,
        "rbf_cka": rbf_kernel(options.rbf_sigma),
        "dcor": distance_kernel,
        "linear_cka_minus_pc": pcs_removed_kernel(options.pcs_removed),
    }[measure]
    return CkaAccumulator(
        n_a, n_b, device=device, permutations=permutations, seed=seed, kernel=kernel,
        biased=measure == "linear_cka_biased",
    )  # fmt: skip


# ---------------------------------------------------------------- from activations (the API's entry points)
def measures_from_grams(
    grams: Iterable[tuple],
    names_a: Sequence[str],
    names_b: Sequence[str] | None = None,
    measures: Sequence[str] = ("linear_cka",),
    options: MeasureOptions | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, pd.DataFrame]:
    """measure → tap × tap DataFrame, from the stacked Grams of each minibatch (as `seelike.cka.cka_from_grams`):
    `grams` yields (grams_a, grams_b), stacks (Tₐ, n, n) / (T_b, n, n) or packed, grams_b None for
    self-similarity; every measure reads each minibatch once. Minibatches with n < 4 are dropped with a warning;
    constant taps are warned about (ConstantRepresentationWarning) and given 0."""
    for m in measures:
        check_measure(m)
    names_a = list(names_a)
    names_b = names_a if names_b is None else list(names_b)
    accs = {m: make_accumulator(m, len(names_a), len(names_b), options, device) for m in measures}
    for i, (ga, gb) in enumerate(grams):
        for acc in accs.values():
            acc.add(ga, gb, batch_id=i)
    out = {}
    for m, acc in accs.items():
        if acc.dropped and m == measures[0]:
            warnings.warn(
                f"dropped minibatches {acc.dropped}: fewer than {MIN_BATCH} examples", stacklevel=3
            )
        result = (
            acc.result()
        )  # raises first when every minibatch was dropped (no tap to call constant)
        deg_a, deg_b = acc.degenerate()
        constant = sorted(
            {n for n, d in zip(names_a, deg_a, strict=True) if d}
            | {n for n, d in zip(names_b, deg_b, strict=True) if d}
        )
        if constant:
            warnings.warn(
                f"constant representation(s) {constant}: {m} undefined; reported as 0",
                ConstantRepresentationWarning,
                stacklevel=3,
            )
        out[m] = pd.DataFrame(result, index=names_a, columns=names_b)
    return out


def similarity_matrix(
    xs_by_tap: Mapping[str, Sequence],
    ys_by_tap: Mapping[str, Sequence] | None = None,
    measure: str = "linear_cka",
    options: MeasureOptions | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """`measure` for every tap pair: rows = first model's taps, columns = second's (self if None).

    Each dict maps tap name → sequence of activation batches (n_i, ...), batch i being the same images for every
    tap of both models (as `seelike.cka.cka_matrix`). Minibatches with n < 4 are dropped with a warning; constant
    taps are warned about (ConstantRepresentationWarning) and given 0.
    """
    check_measure(measure)
    device = torch.device(device)
    grams, names_a, names_b = activation_grams(xs_by_tap, ys_by_tap, device)
    return measures_from_grams(grams, names_a, names_b, [measure], options, device)[measure]


def minibatch_similarity(
    xs: Sequence, ys: Sequence, measure: str, options: MeasureOptions | None = None
) -> float:
    """`measure` of two equal-length sequences of activation batches (n_i, ...) of the same images."""
    check_paired_batches(xs, ys)
    v = similarity_matrix({"x": list(xs)}, {"y": list(ys)}, measure, options).iloc[0, 0]
    return float(v) if not math.isnan(v) else math.nan
