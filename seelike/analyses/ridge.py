"""Closed-form linear probes per tap (Figs 11, 13): regularised least squares to {−1, 1} one-hot targets.

The probe rule of the paper, written out:

- Features are standardised with the statistics of the examples the probe is fitted on (mean, population std;
  a constant feature gets scale 1, so it is 0 after centring). Targets T ∈ {−1, 1}^{n×C} are centred too, so
  the bias is the mean target and is not penalised: W = argmin ‖X W − T‖² + λ‖W‖² on centred X, T, and the
  prediction for a query x is (x − μ)/σ · W + mean(T).
- Primal W = (XᵀX + λI)⁻¹XᵀT when d ≤ n, dual W = Xᵀ(XXᵀ + λI)⁻¹T when d > n (same answer). ONE
  eigendecomposition of the smaller Gram serves every λ of the grid: with G = Q diag(e) Qᵀ, predictions on
  any query set are A diag(1/(e + λ)) B for fixed A, B (`RidgeFactors`).
- λ: the penalty is λ·n for n fitting examples (ridge on the mean squared error), so a λ chosen on the reduced
  split means the same on the refit. It is chosen from a log grid by accuracy on a stratified held-out part of
  the probe-training set (ties → the larger λ, the simpler model), then the probe is refitted on all
  probe-training examples with that λ and scored on the test split.
- k-shot: exactly k training images per class, a seeded draw that is nested across k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seelike.device import analysis_device

DEFAULT_LAMBDAS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-3, 5, 17))


class ProbeDataError(ValueError):
    """The probe cannot be fitted as asked (too few images per class, no test images, ...)."""


# ------------------------------------------------------------------------------------------------ solver
def _dtype_for(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    # float64 everywhere by default: the solves are small next to the forward passes, and fp64 is exact enough
    # to match a float64 reference to 1e-8 on CPU and GPU alike.
    return dtype or torch.float64


@dataclass
class Standardiser:
    """Per-feature z-scoring with the statistics of the fitting examples (constant features → scale 1)."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = 1e-12) -> Standardiser:
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        # relative threshold: a feature whose spread is round-off of its magnitude is constant
        tiny = std <= eps * (1.0 + mean.abs())
        return cls(mean, torch.where(tiny, torch.ones_like(std), std))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def one_hot_pm1(labels: Sequence[int] | np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """{−1, 1} one-hot targets: column j is +1 where the label is classes[j], −1 elsewhere."""
    labels = np.asarray(labels)
    return np.where(labels[:, None] == np.asarray(classes)[None, :], 1.0, -1.0)


@dataclass
class RidgeFactors:
    """Spectral factorisation of a centred ridge problem, reusable for every λ.

    primal (d ≤ n): XᵀX = V diag(e) Vᵀ,  W(λ) = V diag(1/(e+λ)) Vᵀ XᵀT
    dual   (d > n): XXᵀ = U diag(e) Uᵀ,  W(λ) = Xᵀ U diag(1/(e+λ)) Uᵀ T
    """

    form: str
    evals: torch.Tensor  # (r,)
    basis: torch.Tensor  # V (d, d) or U (n, n)
    proj_t: torch.Tensor  # Vᵀ XᵀT or UᵀT, (r, C)
    x: torch.Tensor  # the centred, standardised fitting features (n, d)

    @classmethod
    def fit(cls, x: torch.Tensor, t: torch.Tensor, form: str = "auto") -> RidgeFactors:
        n, d = x.shape
        if form == "auto":
            form = "primal" if d <= n else "dual"
        if form == "primal":
            e, q = torch.linalg.eigh(x.T @ x)
            proj = q.T @ (x.T @ t)
        elif form == "dual":
            e, q = torch.linalg.eigh(x @ x.T)
            proj = q.T @ t
        else:
            raise ValueError(f"form must be 'auto', 'primal' or 'dual', got {form!r}")
        # a PSD Gram's round-off can give tiny negative eigenvalues; they would blow up 1/(e+λ) for small λ
        return cls(form, e.clamp_min(0), q, proj, x)

    def query(self, xq: torch.Tensor) -> torch.Tensor:
        """A (m, r) such that predictions(λ) = A diag(1/(e+λ)) proj_t."""
        return xq @ self.basis if self.form == "primal" else (xq @ self.x.T) @ self.basis

    def weights(self, lam: float) -> torch.Tensor:
        inv = 1.0 / (self.evals + lam)
        core = self.basis @ (inv[:, None] * self.proj_t)
        return core if self.form == "primal" else self.x.T @ core

    def predict_many(self, a: torch.Tensor, lams: Sequence[float]) -> torch.Tensor:
        """Predictions (L, m, C) for every λ from the query factor A (m, r)."""
        lam_t = torch.as_tensor(list(lams), dtype=self.evals.dtype, device=self.evals.device)
        inv = 1.0 / (self.evals[None, :] + lam_t[:, None])  # (L, r)
        return torch.einsum("mr,lr,rc->lmc", a, inv, self.proj_t)


def ridge_solve(
    x: np.ndarray | torch.Tensor,
    t: np.ndarray | torch.Tensor,
    lam: float,
    form: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """W minimising ‖xW − t‖² + lam‖W‖² (no centring, no scaling: the raw solver, for tests and reuse)."""
    if lam <= 0:
        raise ValueError(f"ridge λ must be > 0, got {lam}")
    device = analysis_device(device)
    dt = _dtype_for(device, dtype)
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device, dt)
    tt = torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).to(device, dt)
    return RidgeFactors.fit(xt, tt, form).weights(lam).cpu().numpy()


def pick_lambda(lams: Sequence[float], accuracies: Sequence[float]) -> float:
    """The λ with the best held-out accuracy; ties go to the larger λ (more regularised, simpler model)."""
    acc = np.asarray(accuracies, dtype=np.float64)
    lam = np.asarray(lams, dtype=np.float64)
    best = acc.max()
    return float(lam[np.isclose(acc, best, rtol=0, atol=1e-12)].max())


def _prep(x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device=device, dtype=dtype).reshape(len(t), -1)


def _fit_predict(
    x_fit: torch.Tensor,
    y_fit: np.ndarray,
    x_query: torch.Tensor,
    classes: np.ndarray,
    lams: Sequence[float],
    form: str,
) -> tuple[torch.Tensor, str]:
    """Predicted class indices (L, m) of the query examples for every λ (penalty λ·n)."""
    std = Standardiser.fit(x_fit)
    xf = std(x_fit)
    t = torch.as_tensor(one_hot_pm1(y_fit, classes), dtype=x_fit.dtype, device=x_fit.device)
    t_mean = t.mean(0)
    fac = RidgeFactors.fit(xf, t - t_mean, form)
    n = len(x_fit)
    preds = fac.predict_many(fac.query(std(x_query)), [lam * n for lam in lams]) + t_mean
    return preds.argmax(-1), fac.form


def heldout_accuracies(
    x_fit: np.ndarray | torch.Tensor,
    y_fit: Sequence[int] | np.ndarray,
    x_val: np.ndarray | torch.Tensor,
    y_val: Sequence[int] | np.ndarray,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    form: str = "auto",
) -> np.ndarray:
    """Accuracy on (x_val, y_val) of the probe fitted on (x_fit, y_fit) for every λ (one factorisation)."""
    device = analysis_device(device)
    dt = _dtype_for(device, dtype)
    y_fit, y_val = np.asarray(y_fit), np.asarray(y_val)
    classes = np.unique(y_fit)
    pred, _ = _fit_predict(
        _prep(x_fit, device, dt), y_fit, _prep(x_val, device, dt), classes, lambdas, form
    )
    pred_labels = classes[pred.cpu().numpy()]
    return (pred_labels == y_val[None, :]).mean(1)


def select_lambda(
    x: np.ndarray | torch.Tensor,
    y: Sequence[int] | np.ndarray,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    holdout: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    form: str = "auto",
) -> tuple[float, np.ndarray]:
    """Choose λ on a stratified held-out part of (x, y): fit on the rest, score every λ, `pick_lambda`.

    Returns (λ, held-out accuracy per λ).
    """
    y = np.asarray(y)
    fit_idx, val_idx = holdout_split(y, holdout, seed)
    x = x if isinstance(x, torch.Tensor) else np.asarray(x)
    acc = heldout_accuracies(
        x[fit_idx], y[fit_idx], x[val_idx], y[val_idx], lambdas, device, dtype, form
    )
    return pick_lambda(lambdas, acc), acc


@dataclass
class ProbeFit:
    accuracy: float
    lam: float
    val_accuracies: np.ndarray
    n_train: int
    n_test: int
    dim: int
    form: str
    predictions: np.ndarray = field(repr=False)


def fit_probe(
    x_train: np.ndarray | torch.Tensor,
    y_train: Sequence[int] | np.ndarray,
    x_test: np.ndarray | torch.Tensor,
    y_test: Sequence[int] | np.ndarray,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    holdout: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    form: str = "auto",
) -> ProbeFit:
    """The paper's probe: λ chosen on a held-out part of the training examples, refit on all, scored on test."""
    device = analysis_device(device)
    dt = _dtype_for(device, dtype)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if len(y_test) == 0:
        raise ProbeDataError(
            "no test examples to score the probe on; the sample list needs a test split"
        )
    classes = np.unique(y_train)
    if len(lambdas) > 1:
        lam, val_acc = select_lambda(x_train, y_train, lambdas, holdout, seed, device, dt, form)
    else:
        lam, val_acc = float(lambdas[0]), np.array([np.nan])
    xtr, xte = _prep(x_train, device, dt), _prep(x_test, device, dt)
    pred_idx, used = _fit_predict(xtr, y_train, xte, classes, [lam], form)
    pred = classes[pred_idx[0].cpu().numpy()]
    return ProbeFit(
        accuracy=float((pred == y_test).mean()),
        lam=lam,
        val_accuracies=val_acc,
        n_train=len(y_train),
        n_test=len(y_test),
        dim=int(xtr.shape[1]),
        form=used,
        predictions=pred,
    )


# ------------------------------------------------------------------------------------------------ sampling
def kshot_indices(labels: Sequence[int] | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of exactly `k` examples per class, sorted; a seeded per-class draw, nested across k."""
    labels = np.asarray(labels)
    if k < 1:
        raise ValueError(f"shots must be ≥ 1, got {k}")
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ProbeDataError(
                f"class {c} has only {len(idx)} training images but {k}-shot probes need {k}; lower "
                "probes.shots or raise the dataset's max_train"
            )
        # per-class generator keyed on (seed, class): the first k of one permutation, so 5-shot ⊂ 10-shot
        perm = np.random.default_rng([seed, int(c)]).permutation(idx)
        out.append(perm[:k])
    return np.sort(np.concatenate(out))


def holdout_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split into (fit, held-out) indices: round(fraction·n_c) per class, at least 1, leaving ≥ 1."""
    labels = np.asarray(labels)
    if not 0 < fraction < 1:
        raise ValueError(f"probes.holdout must lie strictly between 0 and 1, got {fraction}")
    fit, val = [], []
    rng = np.random.default_rng([seed, 7919])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < 2:
            raise ProbeDataError(
                f"class {c} has {len(idx)} probe-training image(s): choosing λ on a held-out part needs ≥ 2 "
                "per class; raise probes.shots or give a single value in probes.lambdas"
            )
        n_val = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


# ------------------------------------------------------------------------------------------------ rule entry
def lambda_grid(spec: dict[str, Any] | Sequence[float] | None) -> list[float]:
    """The λ grid of the config: {log10_min, log10_max, num} (a log grid) or an explicit list."""
    if spec is None:
        return list(DEFAULT_LAMBDAS)
    if isinstance(spec, dict):
        return [
            float(v) for v in np.logspace(spec["log10_min"], spec["log10_max"], int(spec["num"]))
        ]
    return [float(v) for v in spec]
