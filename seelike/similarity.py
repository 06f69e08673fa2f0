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
- `mutual_knn`          mutual k-NN alignment (Huh et al. 2024): N_A(i), N_B(i) the k = `knn_k` nearest
                        neighbours of image i (itself excluded) in each representation, mean_i |N_A(i) ∩ N_B(i)|/k,
                        averaged over minibatches. Chance level (independent representations) is k/(n−1).
- `cknna`               CKNNA (Huh et al. 2024; their unbiased, distance_agnostic=False variant): with Ĉ the
                        cosine kernel Ĉᵢⱼ = Kᵢⱼ/√(KᵢᵢKⱼⱼ) of each representation, mask_K(i,j) = 1 if j ∈ N_K(i)
                        (row-wise, not symmetric) and m = mask_K ⊙ mask_L: sim(K, L) = HSIC_u(m⊙Ĉ_K, m⊙Ĉ_L) with
                        HSIC_u(A, B) = [Σ(Ã⊙B̃ᵀ) + ΣÃ ΣB̃/((n−1)(n−2)) − 2Σ(ÃB̃)/(n−2)] / (n(n−3)) (Ã: zero
                        diagonal, no symmetry assumed), cknna = sim(K, L)/√(sim(K, K) sim(L, L)), averaged over
                        minibatches. As Huh et al.'s, it is not exactly symmetric in the two models (Σ(ÃB̃) ≠ Σ(B̃Ã)
                        for the asymmetric masked kernels; the two orders differ little, ~1e-3 in the tests).

Neighbours (`knn_metric`): `cosine` (default, Huh et al.'s choice) takes the largest Ĉᵢⱼ, `euclidean` the
smallest d²ᵢⱼ; cknna's kernel values are the cosines Ĉ under either. An image at the minibatch mean (Kᵢᵢ = 0) has
cosine 0 with every image. Ties at the k-th neighbour are broken towards the lower image index (`knn_indices`):
deterministic, but with exact ties the value depends on the image order. `knn_k` must be below n − 1 (an error
naming `cka.knn_k` otherwise). A tap whose images all coincide (K = 0), or, for cknna, whose sim(K, K) is 0 (or
negative), is undefined: 0 and flagged constant. Where Huh et al. add 1e-6 to cknna's denominator, nothing is
added here.

Differences from Huh et al.'s numbers: the cache holds Grams of minibatch-CENTRED features, while Huh et al.
L2-normalise the UNcentred features, after clamping every value at the 95th percentile of |x| (their
`remove_outliers`). Centring removes the mean direction shared by all images; for uncentred post-ReLU / GELU
features that direction dominates the cosines (all images look alike, cosines near 1, and the neighbour sets
are decided by small residual differences). Neighbour sets under the centred cosine are those of the centred
representation (for features whose minibatch mean is already 0 the values equal theirs exactly), and nothing
is clamped here. So mutual_knn and cknna compare models within seelike, not with the paper's values; they
also depend on the minibatch size n (chance k/(n−1)): compare values at one `cka.batch_size`.

The CKA-family measures (the first five) share `seelike.cka.CkaAccumulator`: jackknife SE over minibatches and
the permutation null come with it. `rsa` and `bures` are means of per-minibatch values (`MeanAccumulator`):
their SE is the same delete-one jackknife (= SD/√k of a mean); `rsa` has the permutation null, `bures` none.
`mutual_knn` and `cknna` are means of per-minibatch values too (`KnnAccumulator`, a sibling), with the same SE
and a permutation null (the second model's images, hence its neighbour sets and kernel, permuted within the
minibatch, seeded as for rsa; neighbour sets are found once, before permuting, so exact ties keep their
unpermuted order).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from seelike.cka import (
    DEGENERATE_RTOL,
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
from seelike.jackknife import jackknife_se

__all__ = [
    "CKA_FAMILY",
    "KNN_MEASURES",
    "MEASURES",
    "MEASURE_SETTINGS",
    "KnnAccumulator",
    "MeanAccumulator",
    "MeasureOptions",
    "knn_indices",
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
# measures computed from each minibatch's k-nearest-neighbour sets (KnnAccumulator), and their neighbour metrics
KNN_MEASURES: tuple[str, ...] = ("mutual_knn", "cknna")
KNN_METRICS = ("cosine", "euclidean")
# eigenvalues below this fraction of a Gram's largest (or below its numerical rank, `rank_tolerance`) are
# rounding noise of a PSD matrix (set to 0), so that a representation of rank ≤ k is exactly constant once its
# top k directions are removed
EIG_RTOL = 1e-12
# RSA (Spearman): squared distances closer than this many eps of the Gram's dtype × its largest diagonal entry
# are tied (the rounding of d² = Kᵢᵢ + Kⱼⱼ − 2Kᵢⱼ)
TIE_EPS = 4


@dataclass(frozen=True)
class MeasureOptions:
    """The settings of the measures (`cka.rbf_sigma`, `cka.rsa_correlation`, `cka.pcs_removed`, `cka.knn_k`,
    `cka.knn_metric`)."""

    rbf_sigma: float = 1.0  # RBF bandwidth: this fraction of the median pairwise distance
    rsa_correlation: str = "spearman"  # or "pearson"
    pcs_removed: int = 1  # principal directions removed by linear_cka_minus_pc
    knn_k: int = 10  # neighbours per image of mutual_knn and cknna (Huh et al. 2024's topk)
    knn_metric: str = "cosine"  # or "euclidean": how mutual_knn and cknna pick the neighbours

    def __post_init__(self) -> None:
        if not self.rbf_sigma > 0:
            raise ValueError(f"cka.rbf_sigma must be > 0, got {self.rbf_sigma}")
        if self.rsa_correlation not in RSA_CORRELATIONS:
            raise ValueError(
                f"cka.rsa_correlation must be one of {RSA_CORRELATIONS}, got {self.rsa_correlation!r}"
            )
        if int(self.pcs_removed) != self.pcs_removed or self.pcs_removed < 1:
            raise ValueError(f"cka.pcs_removed must be an integer ≥ 1, got {self.pcs_removed}")
        if isinstance(self.knn_k, bool) or int(self.knn_k) != self.knn_k or self.knn_k < 1:
            raise ValueError(f"cka.knn_k must be an integer ≥ 1, got {self.knn_k!r}")
        if self.knn_metric not in KNN_METRICS:
            raise ValueError(
                f"cka.knn_metric must be one of {KNN_METRICS}, got {self.knn_metric!r}"
            )


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
    `KnnAccumulator` is the sibling for `mutual_knn` and `cknna`.
    """

    COMPUTES: ClassVar[tuple[str, ...]] = ("rsa", "bures")

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
        if self.measure not in self.COMPUTES:
            raise ValueError(
                f"{type(self).__name__} computes {' and '.join(self.COMPUTES)}, not {self.measure!r}"
            )
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
        values, null = self._step()(grams_a, grams_b, n, perms)
        self.batch_values.append(values)
        if null is not None:
            self.batch_nulls.append(null)
        self.batches += 1
        return True

    def _step(self):
        """The per-minibatch step of the measure: (grams_a, grams_b, n, perms) → (values, null or None)."""
        return self._rsa if self.measure == "rsa" else self._bures

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
        if len(self.batch_values) < 2:
            return np.full((self.n_a, self.n_b), np.nan)
        return self._masked(jackknife_se(self.leave_one_out()))

    def leave_one_out(self) -> np.ndarray:
        """(k, Tₐ, T_b) means without minibatch i (the jackknife's replicates; needs k ≥ 2)."""
        v = np.stack(self.batch_values)
        return self._masked((v.sum(0) - v) / (len(v) - 1))

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


# ---------------------------------------------------------------- k-nearest-neighbour measures (Huh et al. 2024)
# Dense per-tap n×n arrays made at once (the neighbour search, the second model's lookup tables): at most this
# many values per array; and at most this many in each gathered (B taps × A taps × n × k) array of the pair
# terms. Both bound memory whatever the tap count (about 64 and 32 MiB in float64).
KNN_DENSE_VALUES = 1 << 23
KNN_GATHER_VALUES = 1 << 22


def knn_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(T, n, k) column indices, ascending, of the k largest scores of each row of (T, n, n) `scores` (set the
    diagonal to −∞ first to exclude each image itself). Ties at the k-th largest value are broken towards the
    lower index: deterministic, whatever torch.topk's order among equal values."""
    t, n = scores.shape[:2]
    kth = scores.topk(k, dim=-1).values[..., -1:]
    take = scores >= kth
    if not bool((take.sum(-1) == k).all()):  # a tie at the k-th value: the lowest tied indices
        above = scores > kth
        tied = scores == kth
        need = k - above.sum(-1, keepdim=True)
        take = above | (tied & (tied.cumsum(-1) <= need))
    return take.nonzero()[:, -1].reshape(t, n, k)


@dataclass
class Neighbours:
    """One minibatch's k nearest neighbours in every tap of one model (T taps, n images, k neighbours)."""

    index: torch.Tensor  # (T, n, k) long: N(i), ascending
    cosine: torch.Tensor  # (T, n, k) float64: the cosine kernel Ĉ[i, N(i, r)]
    mutual: torch.Tensor  # (T, n, k) float64: Ĉ[i, N(i, r)] where i ∈ N(N(i, r)) too, else 0
    constant: np.ndarray  # (T,) bool: every image at the minibatch mean (K = 0)

    def __getitem__(self, taps: slice) -> Neighbours:
        return Neighbours(
            self.index[taps], self.cosine[taps], self.mutual[taps], self.constant[taps]
        )


def _cosines_and_scores(
    packed: torch.Tensor, n: int, metric: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine kernels Ĉᵢⱼ = Kᵢⱼ/√(KᵢᵢKⱼⱼ) of packed centred Grams (an image at the minibatch mean, Kᵢᵢ = 0,
    has cosine 0 with every image; the diagonal is left undefined), the neighbour scores (the cosines — the same
    tensor — or −d² for `euclidean`; diagonal −∞), and whether each tap is constant (K = 0)."""
    diag, off = split_packed(packed, n)
    full = _join(diag, off, n)
    norm = diag.clamp_min(0).sqrt()
    inv = torch.where(norm > 0, 1 / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)
    cos = full * inv[..., :, None] * inv[..., None, :]
    if metric == "cosine":  # the diagonal of Ĉ is never read: no neighbour of i is i
        scores = cos
    else:  # −d²ᵢⱼ = 2Kᵢⱼ − Kᵢᵢ − Kⱼⱼ
        scores = full.mul_(2).sub_(diag[..., :, None]).sub_(diag[..., None, :])
    scores.diagonal(dim1=-2, dim2=-1).fill_(-math.inf)
    return cos, scores, diag.amax(-1) <= 0


def _knn_self_hsic(nb: Neighbours, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CKNNA's sim(K, K) = HSIC_unbiased(mask_K⊙Ĉ, mask_K⊙Ĉ) per tap, and the energy Σ(mask_K⊙Ĉ)²/(n(n−3))
    that decides when it is 0 (`DEGENERATE_RTOL`)."""
    t = nb.index.shape[0]
    v = nb.cosine
    t1 = (nb.mutual * v).sum((-1, -2))
    total = v.sum((-1, -2))
    rows = v.sum(-1)
    t3 = 2 / (n - 2) * (v * rows.gather(-1, nb.index.view(t, -1)).view_as(v)).sum((-1, -2))
    scale = n * (n - 3)
    hsic = (t1 + total**2 / ((n - 1) * (n - 2)) - t3) / scale
    return hsic, (v**2).sum((-1, -2)) / scale


@dataclass
class _Lookup:
    """Lookup tables of a block of cb B taps: `member` (cb, n²) bool = mask_L (mutual_knn); for cknna `pos`
    (cb, n²) = r where j = N_L(i, r), else −1 (int16: a quarter of a float64 table, and random reads of the
    dense table are what the pair terms cost), with B's lists' values `cosine`, `mutual` (cb, n·k)."""

    member: torch.Tensor | None = None
    pos: torch.Tensor | None = None
    cosine: torch.Tensor | None = None
    mutual: torch.Tensor | None = None

    @property
    def taps(self) -> int:
        return (self.member if self.member is not None else self.pos).shape[0]

    @classmethod
    def of(cls, nb: Neighbours, n: int, cknna: bool) -> _Lookup:
        t, _, k = nb.index.shape
        if not cknna:
            member = torch.zeros((t, n, n), dtype=torch.bool, device=nb.index.device)
            return cls(member=member.scatter_(-1, nb.index, True).view(t, n * n))
        dtype = torch.int16 if k < 2**15 else torch.int32
        pos = torch.full((t, n, n), -1, dtype=dtype, device=nb.index.device)
        r = torch.arange(k, dtype=dtype, device=nb.index.device).expand_as(nb.index)
        pos.scatter_(-1, nb.index, r)
        return cls(pos=pos.view(t, n * n), cosine=nb.cosine.reshape(t, n * k),
                   mutual=nb.mutual.reshape(t, n * k))  # fmt: skip


def _knn_pair_block(na: Neighbours, lb: _Lookup, n: int, perm: torch.Tensor | None) -> torch.Tensor:
    """The pair terms of one block of A taps (`na`) × B taps (`lb`), B's images permuted by `perm` (None: not
    permuted): (ca, cb) counts Σᵢ|N_A(i) ∩ N_B(i)| (mutual_knn) or sim(K, L) = HSIC_unbiased(m⊙K̂, m⊙L̂),
    m = mask_K⊙mask_L (cknna). Every term is a sum over A's neighbour entries (i, j = N_A(i, r)) of an A factor
    times B's lookup at (π(i), π(j)):
        hit = mask_L           ΣA = Σ hit·K̂ᵢⱼ           ΣB = Σ (mask_L⊙L̂)ᵢⱼ
        Σ(A ⊙ Bᵀ) = Σ (mask_K⊙mask_Kᵀ⊙K̂)ᵢⱼ · (mask_L⊙mask_Lᵀ⊙L̂)ᵢⱼ
        Σ(AB) = Σⱼ colsum(A)ⱼ rowsum(B)ⱼ = Σ hit·K̂ᵢⱼ · rowⱼ,  rowⱼ = Σᵣ (mask_L⊙L̂) at (j, N_A(j, r))
    (the `'aij,bij->abj'` contraction of the row and column sums, as a gather of A's neighbour lists)."""
    ca, _, k = na.index.shape
    cb = lb.taps
    rows = torch.arange(n, device=na.index.device) if perm is None else perm
    cols = na.index if perm is None else perm[na.index]
    ij = (rows[:, None] * n + cols).view(-1)
    if lb.pos is None:
        return lb.member.index_select(1, ij).view(cb, ca, n * k).sum(-1).T.double()
    at = lb.pos.index_select(1, ij).view(cb, ca, n, k)
    hit = at >= 0
    # position of (π(i), π(j)) in B's lists: π(i)·k + r
    at = (at.clamp_min(0).long() + rows.view(1, 1, n, 1) * k).view(cb, ca * n * k)
    lv = torch.where(hit.view(cb, -1), lb.cosine.gather(1, at), 0.0).view(cb, ca, n, k)
    lm = torch.where(hit.view(cb, -1), lb.mutual.gather(1, at), 0.0).view(cb, ca, n * k)
    row = lv.sum(-1)  # (cb, ca, n)
    hv = torch.where(hit.view(cb, ca, n * k), na.cosine.view(ca, n * k), 0.0)
    t1 = (lm * na.mutual.view(ca, n * k)).sum(-1)
    t2 = hv.sum(-1) * row.sum(-1) / ((n - 1) * (n - 2))
    t3 = (hv * row.gather(-1, na.index.view(1, ca, n * k).expand(cb, -1, -1))).sum(-1) * (
        2 / (n - 2)
    )
    return ((t1 + t2 - t3) / (n * (n - 3))).T


@dataclass
class KnnAccumulator(MeanAccumulator):
    """Tₐ×T_b means over minibatches of `mutual_knn` or `cknna` (Huh et al. 2024), from the k = `knn_k` nearest
    neighbours of every image in every tap (`knn_metric`); SE and permutation null as `MeanAccumulator`'s (the
    null permutes the second model's neighbour sets and kernel with its images). Per minibatch, each tap's
    neighbour lists (T, n, k) are found once; the pair terms are gathers of one model's lists from dense lookup
    tables of the other's, a block of taps at a time (`KNN_DENSE_VALUES`, `KNN_GATHER_VALUES`)."""

    COMPUTES: ClassVar[tuple[str, ...]] = KNN_MEASURES

    def _step(self):
        return self._knn

    def _neighbours(self, grams, n: int) -> Neighbours:
        k, metric = int(self.options.knn_k), self.options.knn_metric
        step = max(1, min(self.chunk, KNN_DENSE_VALUES // (n * n)))
        parts = []
        for start in range(0, grams.shape[0], step):
            cos, scores, constant = _cosines_and_scores(
                packed_on(grams[start : start + step], self.device), n, metric
            )
            index = knn_indices(scores, k)
            del scores
            t = index.shape[0]
            cosine = cos.gather(-1, index)
            del cos
            # i ∈ N(j) for j = N(i, r): i among the neighbour list of j
            back = index.gather(1, index.view(t, n * k, 1).expand(-1, -1, k)).view(t, n, k, k)
            i = torch.arange(n, device=self.device).view(1, n, 1, 1)
            mutual = torch.where((back == i).any(-1), cosine, 0.0)
            parts.append((index, cosine, mutual, constant.cpu().numpy()))
        return Neighbours(*(torch.cat([p[f] for p in parts]) for f in range(3)),
                          np.concatenate([p[3] for p in parts]))  # fmt: skip

    def _undefined(self, nb: Neighbours, n: int) -> tuple[np.ndarray, torch.Tensor | None]:
        """Taps whose value is undefined in this minibatch (constant; for cknna also sim(K, K) ≤ 0 relative to
        its energy), and cknna's sim(K, K) per tap."""
        if self.measure == "mutual_knn":
            return nb.constant.copy(), None
        hsic, energy = _knn_self_hsic(nb, n)
        flat = (hsic <= DEGENERATE_RTOL * energy).cpu().numpy()
        return nb.constant | flat, hsic

    def _pairs(self, na: Neighbours, nb: Neighbours, n: int, perms: list) -> torch.Tensor:
        """(len(perms), Tₐ, T_b) pair terms (`_knn_pair_block`) for each of `perms` (None: unpermuted), in
        blocks of taps; each block of B's lookup tables serves every permutation."""
        k = na.index.shape[-1]
        cb = max(1, min(self.chunk, KNN_DENSE_VALUES // (n * n)))
        ca = max(1, min(self.chunk, KNN_GATHER_VALUES // (cb * n * k)))
        out = torch.empty((len(perms), na.index.shape[0], nb.index.shape[0]), dtype=torch.float64,
                          device=self.device)  # fmt: skip
        for b0 in range(0, nb.index.shape[0], cb):
            lb = _Lookup.of(nb[b0 : b0 + cb], n, self.measure == "cknna")
            t = lb.taps
            for p, perm in enumerate(perms):
                for a0 in range(0, na.index.shape[0], ca):
                    out[p, a0 : a0 + ca, b0 : b0 + t] = _knn_pair_block(
                        na[a0 : a0 + ca], lb, n, perm
                    )
            del lb
        return out

    def _knn(self, grams_a, grams_b, n: int, perms) -> tuple[np.ndarray, np.ndarray | None]:
        k = int(self.options.knn_k)
        if k >= n - 1:
            raise ValueError(
                f"cka.knn_k is {k} but a minibatch holds {n} images: {self.measure} needs knn_k < the "
                f"minibatch size − 1 (the k nearest neighbours of an image must leave some image out); lower "
                f"cka.knn_k to at most {n - 2}, or raise cka.batch_size"
            )
        na = self._neighbours(grams_a, n)
        nb = na if grams_b is None else self._neighbours(grams_b, n)
        dead_a, self_a = self._undefined(na, n)
        dead_b, self_b = (dead_a, self_a) if grams_b is None else self._undefined(nb, n)
        self.const_a |= dead_a
        self.const_b |= dead_b
        perms = [None] + [torch.as_tensor(p, device=self.device) for p in perms]
        terms = self._pairs(na, nb, n, perms)
        if self.measure == "mutual_knn":
            v = (terms / (n * k)).cpu().numpy()
        else:
            den = torch.sqrt(torch.outer(self_a.clamp_min(0), self_b.clamp_min(0)))
            v = (terms / torch.where(den > 0, den, torch.ones_like(den))).cpu().numpy()
        v[:, dead_a, :] = 0.0
        v[:, :, dead_b] = 0.0
        return v[0], (v[1:] if len(perms) > 1 else None)


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
    if measure in KNN_MEASURES:
        return KnnAccumulator(
            n_a, n_b, measure, options, device, permutations=permutations, seed=seed
        )
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
