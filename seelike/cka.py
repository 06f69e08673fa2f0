"""Minibatch linear CKA with the unbiased HSIC estimator (Song et al. 2012; Nguyen, Raghu & Kornblith 2021).

For activations X (n×p₁), Y (n×p₂) of the same n images: K = XXᵀ, L = YYᵀ and

    HSIC₁(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))     (Song et al., eq. 5)

with K̃, L̃ the Grams with zeroed diagonals. Equivalently HSIC₁ = ⟨U(K), U(L)⟩ / (n(n−3)) with U the
U-centring below, which lets all tap pairs of two models share ONE matrix product per minibatch.
Minibatch CKA is a ratio of means over k minibatches (Nguyen et al. 2021, eq. 4):

    CKA = mean_i HSIC₁(K_i, L_i) / sqrt(mean_i HSIC₁(K_i, K_i) · mean_i HSIC₁(L_i, L_i)).

Grams are computed in fp32 (TF32 and autocast off), everything after in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from seelike.device import exact_fp32
from seelike.jackknife import jackknife_se

__all__ = [
    "MIN_BATCH",
    "CkaAccumulator",
    "ConstantRepresentationWarning",
    "GramKernel",
    "activation_grams",
    "batch_images",
    "check_paired_batches",
    "cka_from_grams",
    "cka_matrix",
    "gram",
    "h_centre_split",
    "hsic1",
    "minibatch_cka",
    "n_from_packed",
    "pack_upper",
    "packed_on",
    "packed_size",
    "permuted_upper_index",
    "split_packed",
    "strict_upper",
    "u_centre",
    "u_centre_packed",
    "u_centre_strict",
    "unpack_upper",
]

MIN_BATCH = 4  # HSIC₁ divides by n(n−3) and (n−1)(n−2)
# A tap whose U-centred Gram carries less than this fraction of its Gram's energy is constant (HSIC₁ = 0).
DEGENERATE_RTOL = 1e-10


class ConstantRepresentationWarning(UserWarning):
    """A representation is constant across the images (HSIC₁(K, K) = 0): its CKA is undefined, reported 0."""


def _as_tensor(x, device: torch.device | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.to(device) if device is not None else t
    return t if t.dtype == torch.float64 else t.float()


# `gram` centres and multiplies at most this many activation values at a time (16 MiB in fp32): no full centred
# copy of an activation ever exists, e.g. 392 MiB for a (128, 256, 56, 56) ResNet-50 unit.
GRAM_SLICE_VALUES = 1 << 22


def _feature_slices(t: torch.Tensor, budget: int) -> Iterator[torch.Tensor]:
    """(n, s) slices of the features of `t` (n, ...), flattened per example, of at most `budget` values each
    (at least one feature), in order. Only a slice is ever copied: a contiguous `t` is sliced as an (n, p) view;
    another layout (e.g. channels-last) is cut along its first feature dimension first."""
    n = t.shape[0]
    if t.ndim <= 2 or t.is_contiguous():
        flat = t.reshape(n, -1)
        step = max(1, budget // max(1, n))
        for i in range(0, flat.shape[1], step):
            yield flat[:, i : i + step]
        return
    inner = max(1, math.prod(t.shape[2:]))
    step = max(1, budget // max(1, n * inner))
    for i in range(0, t.shape[1], step):
        part = t[:, i : i + step]
        if step == 1 and n * inner > budget:
            yield from _feature_slices(part[:, 0], budget)
        else:
            yield part.reshape(n, -1)


def gram(x, device: torch.device | None = None) -> torch.Tensor:
    """Gram of one batch of activations (n, ...) flattened per example, in exact fp32 (float64 if given).

    The features are centred over the batch first: K_c = (X − 1μᵀ)(X − 1μᵀ)ᵀ differs from XXᵀ only by terms
    of the form 1vᵀ + v1ᵀ + c11ᵀ, which U-centring removes, so HSIC₁ is unchanged in exact arithmetic — but
    post-ReLU features carry a large common mean, and without centring fp32 Grams lose ~5 digits to it.
    K_c is accumulated over slices of at most `GRAM_SLICE_VALUES` features × images, each centred on its own
    (the mean of a feature is a per-feature quantity), so no centred copy of the whole activation exists.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.to(device) if device is not None else t
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    n = t.shape[0]
    with exact_fp32():
        k = torch.zeros((n, n), dtype=dtype, device=t.device)
        for s in _feature_slices(t, GRAM_SLICE_VALUES):
            s = s.to(dtype)
            s = s - s.mean(0, keepdim=True)
            k.addmm_(s, s.T)
        return k


def u_centre(k: torch.Tensor) -> torch.Tensor:
    """U-centre one or a stack of Grams (..., n, n) in float64: zero the diagonal, subtract row and column
    means scaled by 1/(n−2), add the total over (n−1)(n−2), zero the diagonal again."""
    n = k.shape[-1]
    if n < MIN_BATCH:
        raise ValueError(f"HSIC₁ needs a batch of at least {MIN_BATCH} examples, got {n}")
    k = k.double().clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    rows = k.sum(-1)
    total = rows.sum(-1)
    k -= rows[..., :, None] / (n - 2)
    k -= rows[..., None, :] / (n - 2)
    k += (total / ((n - 1) * (n - 2)))[..., None, None]
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


# ---- Packed Grams: the upper triangle WITH the diagonal, row-major (torch.triu_indices(n, n) order).
# A Gram is symmetric, so n(n+1)/2 values hold all of it; the diagonal is kept for measures that need it
# (distances for RBF kernels or RDMs), although linear HSIC₁ ignores it.


def packed_size(n: int) -> int:
    """Number of values of one packed n×n Gram: n(n+1)/2."""
    return n * (n + 1) // 2


def n_from_packed(m: int) -> int:
    """The n of a packed Gram of m = n(n+1)/2 values."""
    n = round(((8 * m + 1) ** 0.5 - 1) / 2)
    if packed_size(n) != m:
        raise ValueError(
            f"{m} values are not the upper triangle (with diagonal) of a square matrix"
        )
    return n


_TRIU: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _triu(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the upper triangle with diagonal, cached per (n, device)."""
    key = (n, str(device))
    if key not in _TRIU:
        iu = torch.triu_indices(n, n, device=device)
        _TRIU[key] = (iu[0], iu[1])
    return _TRIU[key]


_STRICT: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def strict_upper(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row and column indices of the strict upper triangle (row-major, i < j), and the positions of those
    entries in a packed triangle (with diagonal), cached per (n, device): the CKA step's hot path."""
    key = (n, str(device))
    if key not in _STRICT:
        i, j = _triu(n, device)
        off = torch.nonzero(i != j).squeeze(1)
        _STRICT[key] = (i[off], j[off], off)
    return _STRICT[key]


def packed_on(grams, device: torch.device) -> torch.Tensor:
    """A slice of stacked Grams, full (T, n, n) or packed (T, n(n+1)/2), tensor or (memory-mapped) array, as a
    packed tensor on `device`: what the accumulators read, a chunk of taps at a time."""
    g = grams if isinstance(grams, torch.Tensor) else torch.from_numpy(np.array(grams))
    g = g.to(device)
    return pack_upper(g) if g.ndim == 3 else g


def pack_upper(k: torch.Tensor) -> torch.Tensor:
    """(..., n, n) symmetric matrices → (..., n(n+1)/2) upper triangles with the diagonal."""
    i, j = _triu(k.shape[-1], k.device)
    return k[..., i, j]


def unpack_upper(packed, n: int | None = None) -> torch.Tensor:
    """(..., n(n+1)/2) packed Grams → (..., n, n) symmetric matrices (same dtype and device)."""
    t = torch.as_tensor(np.asarray(packed) if not isinstance(packed, torch.Tensor) else packed)
    n = n or n_from_packed(t.shape[-1])
    i, j = _triu(n, t.device)
    out = t.new_zeros((*t.shape[:-1], n, n))
    out[..., i, j] = t
    out[..., j, i] = t
    return out


def split_packed(packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(diagonal (..., n), strict upper triangle (..., n(n−1)/2)) of packed Grams (..., n(n+1)/2), in float64:
    the form a `GramKernel` takes and returns."""
    i, j = _triu(n, packed.device)
    _, _, off = strict_upper(n, packed.device)
    return packed[..., torch.nonzero(i == j).squeeze(1)].double(), packed[..., off].double()


def u_centre_strict(v: torch.Tensor, n: int) -> torch.Tensor:
    """Strict upper triangles (..., n(n−1)/2) of the U-centred matrices of symmetric matrices given by their
    strict upper triangles `v` (the diagonal plays no part): U[i,j] = K[i,j] − (r_i + r_j)/(n−2) +
    Σr/((n−1)(n−2)) for i < j, with r the row sums of K without its diagonal. No n×n matrix is formed."""
    if n < MIN_BATCH:
        raise ValueError(f"HSIC₁ needs a batch of at least {MIN_BATCH} examples, got {n}")
    i, j, _ = strict_upper(n, v.device)
    rows = v.new_zeros((*v.shape[:-1], n))
    rows.index_add_(-1, i, v)
    rows.index_add_(-1, j, v)
    total = rows.sum(-1, keepdim=True)
    return v - (rows[..., i] + rows[..., j]) / (n - 2) + total / ((n - 1) * (n - 2))


def u_centre_packed(packed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict upper triangles of the U-centred Grams of a stack of packed Grams (..., n(n+1)/2), in float64
    (`u_centre_strict`). Also returns the off-diagonal values of K (for the energy test of constant taps)."""
    if n < MIN_BATCH:
        raise ValueError(f"HSIC₁ needs a batch of at least {MIN_BATCH} examples, got {n}")
    _, _, off = strict_upper(n, packed.device)
    v = packed[..., off].double()
    return u_centre_strict(v, n), v


def h_centre_split(
    diag: torch.Tensor, off: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Double centring HKH (H = I − 11ᵀ/n) of symmetric matrices given as (diagonal, strict upper triangle):
    (HKH)[i,j] = K[i,j] − r_i/n − r_j/n + Σr/n², r the full row sums. Returns HKH in the same split form."""
    i, j, _ = strict_upper(n, off.device)
    rows = diag.clone()
    rows.index_add_(-1, i, off)
    rows.index_add_(-1, j, off)
    total = rows.sum(-1, keepdim=True)
    mean = rows / n
    return (
        diag - 2 * mean + total / n**2,
        off - mean[..., i] - mean[..., j] + total / n**2,
    )


# A kernel of the CKA family: packed Grams (T, n(n+1)/2) and n → the kernel matrices of the same images as
# (diagonal (T, n), strict upper (T, n(n−1)/2)), float64. Linear CKA's is the Gram itself (`split_packed`).
GramKernel = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def hsic1(K, L) -> float:
    """Unbiased HSIC of two n×n Gram matrices (float64)."""
    k, ell = _as_tensor(K).double(), _as_tensor(L).double()
    n = k.shape[0]
    if k.shape != (n, n) or ell.shape != (n, n):
        raise ValueError(
            f"hsic1 needs two square Grams of one size, got {tuple(k.shape)} and {tuple(ell.shape)}"
        )
    return float((u_centre(k) * u_centre(ell)).sum() / (n * (n - 3)))


@dataclass
class CkaAccumulator:
    """Float64 running sums for all tap pairs of two models over minibatches.

    `add(grams_a, grams_b)` takes the stacked Grams of one minibatch (Tₐ, n, n) and (T_b, n, n) — the same
    stack twice for self-similarity — U-centres them, and adds the whole Tₐ×T_b block of HSIC₁ values with
    ONE matrix product over the strict upper triangles (both U-centred Grams are symmetric with zero
    diagonal, so ⟨U_K, U_L⟩ = 2·Σ_{i<j} U_K[i,j]·U_L[i,j]).

    The same machinery serves the whole CKA family (`seelike.similarity`): `kernel` maps each Gram to another
    kernel matrix of the same images first (RBF, distances for distance correlation, top principal
    directions removed), and `biased` replaces HSIC₁ by HSIC₀ = tr(KHLH)/(n−1)² (double centring, diagonal
    included: ⟨A, B⟩ = Σ_i A_ii B_ii + 2·Σ_{i<j} A_ij B_ij).
    """

    n_a: int
    n_b: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    chunk: int = 32  # taps U-centred at once: bounds memory at chunk·n² float64
    # Null draws: per minibatch, the second model's images permuted (P L Pᵀ) this many times, seeded by
    # (seed, minibatch index) so every cell and every repeat of one plan sees the same permutations.
    permutations: int = 0
    seed: int = 0
    kernel: GramKernel | None = None  # None: the linear kernel (the Gram itself)
    biased: bool = False
    cross: torch.Tensor = field(init=False)
    self_a: torch.Tensor = field(init=False)
    self_b: torch.Tensor = field(init=False)
    energy_a: torch.Tensor = field(init=False)
    energy_b: torch.Tensor = field(init=False)
    null_cross: torch.Tensor = field(init=False)
    batches: int = field(init=False, default=0)
    dropped: list[int] = field(init=False, default_factory=list)
    # per-minibatch HSIC₁ terms (Tₐ×T_b cross, Tₐ and T_b self), kept for the delete-one jackknife
    batch_terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        init=False, default_factory=list
    )

    def __post_init__(self) -> None:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=self.device)
        self.cross, self.self_a, self.self_b = z(self.n_a, self.n_b), z(self.n_a), z(self.n_b)
        self.energy_a, self.energy_b = z(self.n_a), z(self.n_b)
        self.null_cross = z(self.permutations, self.n_a, self.n_b)

    def _upper(self, grams) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled strict-upper-triangle vectors of the U-centred Grams, and each Gram's off-diagonal energy.

        `grams` is a stack of full Grams (T, n, n) or of packed ones (T, n(n+1)/2), e.g. a memory-mapped
        cache file; either way only `chunk` Grams at a time are converted to float64."""
        n = batch_images(grams)
        out, energy = [], []
        for start in range(0, grams.shape[0], self.chunk):
            g = packed_on(grams[start : start + self.chunk], self.device)
            if self.kernel is None and not self.biased:  # the linear CKA hot path
                u, off = u_centre_packed(g, n)
                out.append(u)
                energy.append(2 * (off**2).sum(-1))
                del u, off, g
                continue
            diag, off = (self.kernel or split_packed)(g, n)
            if self.biased:
                hd, ho = h_centre_split(diag, off, n)
                out.append(torch.cat([hd, ho * 2**0.5], -1))
                energy.append((diag**2).sum(-1) + 2 * (off**2).sum(-1))
            else:
                out.append(u_centre_strict(off, n))
                energy.append(2 * (off**2).sum(-1))
            del diag, off, g
        # 2/(n(n−3)) turns the upper-triangle product into HSIC₁ (1/(n−1)² the full product into HSIC₀);
        # split as a square root on each side.
        scale = 1.0 / (n - 1) if self.biased else (2.0 / (n * (n - 3))) ** 0.5
        return torch.cat(out) * scale, torch.cat(energy)

    def _permuted_index(self, n: int, perm: np.ndarray) -> torch.Tensor:
        """Index permuting the images of one `_upper` vector: strict upper triangle, with the diagonal
        first when biased."""
        idx = permuted_upper_index(n, perm, self.device)
        if not self.biased:
            return idx
        return torch.cat([torch.as_tensor(perm, dtype=torch.long, device=self.device), n + idx])

    def add(self, grams_a, grams_b=None, batch_id: int = -1) -> bool:
        """Add one minibatch of stacked Grams, full (T, n, n) or packed (T, n(n+1)/2) — the same stack twice
        (or None) for self-similarity; returns False (and records it) when n < 4 makes HSIC₁ undefined."""
        n = batch_images(grams_a)
        if n < MIN_BATCH:
            self.dropped.append(batch_id if batch_id >= 0 else self.batches + len(self.dropped))
            return False
        va, ea = self._upper(grams_a)
        if grams_b is None:
            vb, eb = va, ea
        else:
            if batch_images(grams_b) != n:
                raise ValueError(
                    f"minibatch sizes differ between models: {n} vs {batch_images(grams_b)}"
                )
            vb, eb = self._upper(grams_b)
        cross, self_a, self_b = va @ vb.T, (va * va).sum(-1), (vb * vb).sum(-1)
        self.cross += cross
        self.self_a += self_a
        self.self_b += self_b
        self.energy_a += ea
        self.energy_b += eb
        self.batch_terms.append((cross, self_a, self_b))
        if self.permutations:
            rng = np.random.default_rng([self.seed, batch_id if batch_id >= 0 else self.batches])
            for p in range(self.permutations):
                idx = self._permuted_index(n, rng.permutation(n))
                self.null_cross[p] += va @ vb[:, idx].T
        self.batches += 1
        return True

    def degenerate(self) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks of constant taps (HSIC₁(K,K) ≈ 0 relative to the Gram's energy) for each model."""
        da = self.self_a <= DEGENERATE_RTOL * self.energy_a * 2.0
        db = self.self_b <= DEGENERATE_RTOL * self.energy_b * 2.0
        # all-zero activations have no energy at all
        return (da | (self.energy_a == 0)).cpu().numpy(), (db | (self.energy_b == 0)).cpu().numpy()

    def _ratio(self, cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor) -> np.ndarray:
        deg_a, deg_b = self.degenerate()
        denom = torch.sqrt(torch.outer(self_a.clamp_min(0), self_b.clamp_min(0)))
        out = (cross / torch.where(denom > 0, denom, torch.ones_like(denom))).cpu().numpy()
        out[..., deg_a, :] = 0.0
        out[..., :, deg_b] = 0.0
        return out

    def result(self) -> np.ndarray:
        """Tₐ×T_b minibatch CKA (ratio of means; the 1/k factors cancel). Constant taps give 0."""
        if self.batches == 0:
            raise ValueError(f"no minibatch of at least {MIN_BATCH} examples was added")
        return self._ratio(self.cross, self.self_a, self.self_b)

    def jackknife_se(self) -> np.ndarray:
        """Tₐ×T_b delete-one-minibatch jackknife standard error of `result()`:
        SE² = (k−1)/k · Σ_i (CKA₍₋ᵢ₎ − mean_i CKA₍₋ᵢ₎)², CKA₍₋ᵢ₎ the ratio of means without minibatch i.
        NaN with fewer than 2 minibatches."""
        if len(self.batch_terms) < 2:
            return np.full((self.n_a, self.n_b), np.nan)
        return jackknife_se(self.leave_one_out())

    def leave_one_out(self) -> np.ndarray:
        """(k, Tₐ, T_b) CKA₍₋ᵢ₎: the ratio of means without minibatch i, for each of the k minibatches (the
        jackknife's replicates; a statistic of several cells, e.g. their mean, takes its SE from these)."""
        return np.stack(
            [
                self._ratio(self.cross - c, self.self_a - a, self.self_b - b)
                for c, a, b in self.batch_terms
            ]
        )

    def subset(self, batches: Sequence[int]) -> CkaAccumulator:
        """The accumulator of the listed minibatches only (by position among those added; a minibatch listed
        twice counts twice: a bootstrap resample), without the null draws. The Grams' energies, which only
        decide constant taps, are scaled to the share of minibatches kept."""
        out = CkaAccumulator(
            self.n_a, self.n_b, self.device, kernel=self.kernel, biased=self.biased
        )
        out.batch_terms = [self.batch_terms[i] for i in batches]
        if out.batch_terms:
            out.cross, out.self_a, out.self_b = (t.sum(0) for t in out._stacked_terms())
        share = len(out.batch_terms) / max(self.batches, 1)
        out.energy_a, out.energy_b = self.energy_a * share, self.energy_b * share
        out.batches = len(out.batch_terms)
        return out

    def terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The per-minibatch HSIC₁ terms as float64 arrays: cross (k, Tₐ, T_b), self_a (k, Tₐ), self_b (k, T_b)
        (what `seelike.analyses.replicates` groups for the jackknife of any statistic of the table)."""
        if not self.batch_terms:
            raise ValueError(f"no minibatch of at least {MIN_BATCH} examples was added")
        return tuple(t.cpu().numpy() for t in self._stacked_terms())

    def _stacked_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`batch_terms` stacked per term: cross (k, Tₐ, T_b), self_a (k, Tₐ), self_b (k, T_b)."""
        return tuple(torch.stack([t[i] for t in self.batch_terms]) for i in range(3))

    def null(self) -> np.ndarray:
        """(permutations, Tₐ, T_b) CKA of the permutation null: the same statistic with the second model's
        images permuted within each minibatch (HSIC₁(K, P L Pᵀ); the self terms do not change)."""
        return self._ratio(self.null_cross, self.self_a, self.self_b)


def permuted_upper_index(
    n: int, perm: np.ndarray, device: torch.device | None = None
) -> torch.Tensor:
    """Index into a strict-upper-triangle vector (row-major, i < j) that permutes the matrix's rows and
    columns: v[idx] is the strict upper triangle of P M Pᵀ, (P M Pᵀ)[i, j] = M[perm[i], perm[j]]."""
    i, j, _ = strict_upper(n, torch.device("cpu"))
    p = torch.as_tensor(perm, dtype=torch.long)
    a, b = p[i], p[j]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    # position of (lo, hi) in the row-major strict upper triangle
    pos = lo * n - lo * (lo + 1) // 2 + (hi - lo - 1)
    return pos.to(device) if device is not None else pos


def batch_images(grams) -> int:
    """Images in one minibatch of stacked Grams, full (T, n, n) or packed (T, n(n+1)/2)."""
    return grams.shape[-1] if grams.ndim == 3 else n_from_packed(grams.shape[-1])


def activation_grams(
    xs_by_tap: Mapping[str, Sequence],
    ys_by_tap: Mapping[str, Sequence] | None,
    device: torch.device,
) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None]], list[str], list[str] | None]:
    """Per minibatch i, the stacked Grams of every tap's batch i (`gram`) for both models (None for b when
    `ys_by_tap` is None), made lazily, and the tap names of each; every tap needs the same number of batches."""
    names_a = list(xs_by_tap)
    names_b = list(ys_by_tap) if ys_by_tap is not None else None
    lens = {len(v) for v in xs_by_tap.values()} | (
        {len(v) for v in ys_by_tap.values()} if ys_by_tap else set()
    )
    if len(lens) != 1:
        raise ValueError(f"every tap needs the same number of minibatches, got {sorted(lens)}")

    def stack(by_tap, names, i):
        return torch.stack([gram(by_tap[t][i], device) for t in names])

    grams = (
        (
            stack(xs_by_tap, names_a, i),
            None if names_b is None else stack(ys_by_tap, names_b, i),
        )
        for i in range(lens.pop())
    )
    return grams, names_a, names_b


def check_paired_batches(xs: Sequence, ys: Sequence) -> None:
    """Two sequences of activation batches of the same images: as many batches, as many examples each."""
    if len(xs) != len(ys):
        raise ValueError(
            f"xs and ys need the same number of minibatches, got {len(xs)} and {len(ys)}"
        )
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if len(x) != len(y):
            raise ValueError(f"minibatch {i}: {len(x)} examples in xs but {len(y)} in ys")


def cka_from_grams(
    grams: Iterable[tuple],
    names_a: Sequence[str],
    names_b: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Minibatch CKA table from the stacked Grams of each minibatch: what `cka_matrix` and
    `seelike.api.compare` both return.

    `grams` yields, per minibatch, (grams_a, grams_b): stacks (Tₐ, n, n) and (T_b, n, n) (or packed), grams_b
    None for self-similarity. Rows = `names_a`, columns = `names_b` (self if None). Minibatches with n < 4 are
    dropped with a warning; constant taps are listed in `df.attrs["constant_rows"/"constant_cols"]`, warned
    about (ConstantRepresentationWarning) and given CKA 0; `df.attrs["dropped_batches"]` lists the dropped.
    """
    names_a = list(names_a)
    names_b = names_a if names_b is None else list(names_b)
    acc = CkaAccumulator(len(names_a), len(names_b), device=torch.device(device))
    for i, (ga, gb) in enumerate(grams):
        acc.add(ga, gb, batch_id=i)
    if acc.dropped:
        warnings.warn(
            f"dropped minibatches {acc.dropped}: fewer than {MIN_BATCH} examples", stacklevel=3
        )
    df = pd.DataFrame(acc.result(), index=names_a, columns=names_b)
    deg_a, deg_b = acc.degenerate()
    df.attrs["constant_rows"] = [n for n, d in zip(names_a, deg_a, strict=True) if d]
    df.attrs["constant_cols"] = [n for n, d in zip(names_b, deg_b, strict=True) if d]
    df.attrs["dropped_batches"] = list(acc.dropped)
    constant = sorted(set(df.attrs["constant_rows"]) | set(df.attrs["constant_cols"]))
    if constant:
        warnings.warn(
            f"constant representation(s) {constant}: HSIC₁(K,K)=0, CKA undefined; reported as 0",
            ConstantRepresentationWarning,
            stacklevel=3,
        )
    return df


def cka_matrix(
    xs_by_tap: Mapping[str, Sequence],
    ys_by_tap: Mapping[str, Sequence] | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Minibatch CKA of every tap pair: rows = first model's taps, columns = second's (self if None).

    Each dict maps tap name → sequence of activation batches (n_i, ...), batch i being the same images for
    every tap of both models. Batches with n < 4 are dropped with a warning; constant taps are listed in
    `df.attrs["constant_rows"/"constant_cols"]`, warned about, and given CKA 0 (`cka_from_grams`).
    """
    device = torch.device(device)
    grams, names_a, names_b = activation_grams(xs_by_tap, ys_by_tap, device)
    return cka_from_grams(grams, names_a, names_b, device)


def minibatch_cka(xs: Sequence, ys: Sequence) -> float:
    """Minibatch CKA of two equal-length sequences of activation batches (n_i, ...) of the same images."""
    check_paired_batches(xs, ys)
    return float(cka_matrix({"x": list(xs)}, {"y": list(ys)}).iloc[0, 0])
