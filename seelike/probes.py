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

Aggregations of one tap activation (`aggregate`): tokens (B, N, C) → `cls` (first prefix token, when there is
one), `mean_spatial` (mean of the patch tokens), `mean_all` (mean of all tokens); CNN maps (B, C, H, W) →
`pool_final` (adaptive average pool to the final stage's spatial size, flattened; skipped when that is 1×1) and
`mean_spatial` (global mean); anything else → `flat`. Per-token probes (`token`) use every position of chosen taps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seelike.io import atomic_write, write_json

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LAMBDAS",
    "FEATURES_FORMAT",
    "ProbeDataError",
    "ProbeFit",
    "RidgeFactors",
    "Standardiser",
    "aggregate",
    "aggregation_names",
    "build_probe_features",
    "default_probe_taps",
    "extract_probe_features",
    "final_spatial_size",
    "fit_probe",
    "heldout_accuracies",
    "holdout_split",
    "kshot_indices",
    "lambda_grid",
    "normalised_depth",
    "one_hot_pm1",
    "pick_lambda",
    "probe_sample_plan",
    "probe_table",
    "read_features_meta",
    "ridge_solve",
    "select_lambda",
    "select_probe_taps",
    "select_token_taps",
    "token_positions",
]

DEFAULT_LAMBDAS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-3, 5, 17))
FEATURES_FORMAT = 1


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
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """W minimising ‖xW − t‖² + lam‖W‖² (no centring, no scaling: the raw solver, for tests and reuse)."""
    if lam <= 0:
        raise ValueError(f"ridge λ must be > 0, got {lam}")
    device = torch.device(device)
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
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    form: str = "auto",
) -> np.ndarray:
    """Accuracy on (x_val, y_val) of the probe fitted on (x_fit, y_fit) for every λ (one factorisation)."""
    device = torch.device(device)
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
    device: str | torch.device = "cpu",
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
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    form: str = "auto",
) -> ProbeFit:
    """The paper's probe: λ chosen on a held-out part of the training examples, refit on all, scored on test."""
    device = torch.device(device)
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


# ------------------------------------------------------------------------------------------------ features
def final_spatial_size(shapes: dict[str, Sequence[int]]) -> tuple[int, int] | None:
    """Spatial size (H, W) of the last 4-D (C, H, W) activation in forward order: the final stage's grid."""
    last = None
    for shape in shapes.values():
        if len(shape) == 3:
            last = (int(shape[1]), int(shape[2]))
    return last


def aggregation_names(
    shape: Sequence[int], num_prefix: int, pool_hw: tuple[int, int] | None
) -> list[str]:
    """The aggregations `aggregate` gives for an activation of per-example `shape`."""
    if len(shape) == 2:
        return (["cls"] if num_prefix else []) + ["mean_spatial", "mean_all"]
    if len(shape) == 3:
        return (["pool_final"] if pool_hw is not None and tuple(pool_hw) != (1, 1) else []) + [
            "mean_spatial"
        ]
    return ["flat"]


def aggregate(
    x: torch.Tensor, num_prefix: int, pool_hw: tuple[int, int] | None = None
) -> dict[str, torch.Tensor]:
    """Per-image feature vectors (B, d) of one tap activation, one per aggregation (module docstring)."""
    if x.dim() == 3:
        out = {}
        if num_prefix:
            out["cls"] = x[:, 0]
        out["mean_spatial"] = x[:, num_prefix:].mean(1)
        out["mean_all"] = x.mean(1)
        return out
    if x.dim() == 4:
        out = {}
        if pool_hw is not None and tuple(pool_hw) != (1, 1):
            out["pool_final"] = F.adaptive_avg_pool2d(x, tuple(pool_hw)).flatten(1)
        out["mean_spatial"] = x.mean(dim=(2, 3))
        return out
    return {"flat": x.reshape(len(x), -1)}


def token_positions(x: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """(B, G, C): the patch tokens of a ViT activation, or the row-major positions of a CNN map."""
    if x.dim() == 3:
        return x[:, num_prefix:]
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    raise ValueError(
        f"per-token probes need a token (B,N,C) or map (B,C,H,W) activation, got {tuple(x.shape)}"
    )


def default_probe_taps(taps: Sequence[Any], kinds: Sequence[str] | None) -> list[Any]:
    """Taps whose kind is listed (None: every tap), in forward order."""
    return [t for t in taps if kinds is None or t.kind in kinds]


def normalised_depth(indices: Sequence[int]) -> dict[int, float]:
    """Layer index / number of layers over the probed taps: the first probed tap 0, the last 1."""
    order = sorted({int(i) for i in indices})
    n = len(order)
    return {i: (r / (n - 1) if n > 1 else 1.0) for r, i in enumerate(order)}


def _grid_of(
    shape: Sequence[int], num_prefix: int, vit_grid: tuple[int, int] | None
) -> list[int] | None:
    """(rows, cols) of the positions of a per-example activation shape: a CNN map's own size, a ViT's patch
    grid (from its patch embedding when the token count fits, else the square root)."""
    if len(shape) == 3:
        return [int(shape[1]), int(shape[2])]
    if len(shape) == 2:
        g = int(shape[0]) - num_prefix
        if vit_grid is not None and vit_grid[0] * vit_grid[1] == g:
            return [int(vit_grid[0]), int(vit_grid[1])]
        s = math.isqrt(g)
        return [s, s] if s * s == g else [1, g]
    return None


def _vit_grid(model: nn.Module, img_hw: Sequence[int]) -> tuple[int, int] | None:
    if not hasattr(model, "patch_embed"):
        return None
    from seelike.attention import token_grid

    try:
        return token_grid(model, img_hw).grid_hw
    except (ValueError, AttributeError, TypeError):
        return None


def extract_probe_features(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n_images: int,
    out_dir: str | Path,
    taps: Sequence[Any],
    token_taps: Sequence[str] = (),
    aggregations: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    num_prefix: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    progress=None,
) -> dict[str, Any]:
    """ONE streaming forward pass writing only the aggregated features of each tap.

    Layout of `out_dir`: `meta.json` (taps, aggregations, dims, labels order), `labels.npy`, and per tap and
    aggregation `{tap_index:03d}_{aggregation}.npy` float32 (n_images, d); per-token taps also
    `{tap_index:03d}_token.npy` float32 (n_images, G, C). Features go straight into memory-mapped files, so
    nothing beyond one batch's activations is held in memory.
    """
    from seelike.models.taps import record_taps

    device = torch.device(device)
    out_dir = Path(out_dir)
    taps = list(taps)
    names = {t.name for t in taps}
    missing = [n for n in token_taps if n not in names]
    if missing:
        raise ValueError(
            f"per-token taps {missing} are not among the probed taps {sorted(names)[:8]}..."
        )
    if num_prefix is None:
        num_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    n_batches = len(batches) if hasattr(batches, "__len__") else -1
    it = iter(batches)
    try:
        first = next(it)
    except StopIteration:
        raise ProbeDataError("no images to extract probe features from") from None

    # Shapes of every tap from one image: the final stage's grid must be known before pooling earlier taps.
    from seelike.models.taps import discover_taps, tap_record

    all_taps = discover_taps(model)
    shapes: dict[str, list[int]] = {}

    def on_shape(t, a: torch.Tensor) -> None:
        shapes.setdefault(t.name, list(a.shape[1:]))

    with record_taps(model, all_taps, on_shape), torch.inference_mode():
        model(first[0][:1].to(device))
    pool_hw = final_spatial_size(shapes)
    vit_grid = _vit_grid(model, first[0].shape[-2:])
    flat = [n for n in token_taps if len(shapes[n]) not in (2, 3)]
    if flat:
        log.warning("no per-token probes for %s: their activations have no token grid or map", flat)
        token_taps = [n for n in token_taps if n not in flat]

    plan: dict[str, list[str]] = {}
    for t in taps:
        aggs = aggregation_names(shapes[t.name], num_prefix, pool_hw)
        if aggregations is not None:
            aggs = [a for a in aggs if a in aggregations]
        plan[t.name] = aggs

    with atomic_write(out_dir) as tmp:
        tmp.mkdir(parents=True)
        files: dict[tuple[str, str], np.memmap] = {}
        labels = np.empty(n_images, dtype=np.int64)
        offset = 0
        buf: dict[tuple[str, str], torch.Tensor] = {}

        def on_tap(tap, act: torch.Tensor) -> None:
            # Copies, never views: a view (the CLS token, a flattened or per-token activation) would keep the
            # whole activation alive until the batch is written, and in-place ops that follow (timm ResNet's
            # `x += shortcut`) would change it.
            a = act.detach().float()
            for name, v in aggregate(a, num_prefix, pool_hw).items():
                if name in plan[tap.name]:
                    buf[(tap.name, name)] = v.to("cpu", copy=True)
            if tap.name in token_taps:
                buf[(tap.name, "token")] = token_positions(a, num_prefix).to("cpu", copy=True)

        t0 = time.time()
        with record_taps(model, taps, on_tap), torch.inference_mode():
            for b, (x, y) in enumerate(_chain(first, it)):
                if offset + len(x) > n_images:
                    raise ProbeDataError(
                        f"the loader gave more than the {n_images} images announced"
                    )
                buf.clear()
                model(x.to(device, non_blocking=True))
                for (tap_name, agg), v in buf.items():
                    key = (tap_name, agg)
                    if key not in files:
                        idx = next(t.index for t in taps if t.name == tap_name)
                        files[key] = np.lib.format.open_memmap(
                            tmp / f"{idx:03d}_{agg}.npy", mode="w+", dtype=np.float32,
                            shape=(n_images, *v.shape[1:]),
                        )  # fmt: skip
                    files[key][offset : offset + len(x)] = v.numpy()
                labels[offset : offset + len(x)] = y.numpy()
                offset += len(x)
                if progress is not None:
                    progress(0, b, n_batches)
        if offset != n_images:
            raise ProbeDataError(f"expected {n_images} images, the loader gave {offset}")
        for mm in files.values():
            mm.flush()
        files.clear()
        np.save(tmp / "labels.npy", labels)
        meta = {
            "format": FEATURES_FORMAT,
            "n_images": n_images,
            "num_prefix_tokens": num_prefix,
            "pool_hw": list(pool_hw) if pool_hw else None,
            "taps": [
                {
                    **tap_record(t, shapes[t.name]),
                    "aggregations": plan[t.name],
                    "token": t.name in token_taps,
                    "grid_hw": _grid_of(shapes[t.name], num_prefix, vit_grid)
                    if t.name in token_taps
                    else None,
                }
                for t in taps
            ],
            "seconds": round(time.time() - t0, 2),
            "device": str(device),
            **(extra_meta or {}),
        }
        write_json(tmp / "meta.json", meta)
    return meta


def _chain(first, rest):
    yield first
    yield from rest


def read_features_meta(features_dir: str | Path) -> dict[str, Any]:
    path = Path(features_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{features_dir} holds no probe features (no meta.json); rerun probe_features"
        )
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ plan
def probe_sample_plan(
    samples: pd.DataFrame, shots: Sequence[int | str], n_test: int | None, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Rows to extract features for, and the probe-training sets as positions into those rows.

    Rows = the union of the k-shot sets (or the whole train split for `all`) in sample-list order, then the
    first `n_test` test images (None: all). k-shot sets are drawn from the whole train split
    (`kshot_indices`), so they do not depend on which other shot counts are configured.
    """
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    test = samples[samples["split"] == "test"].reset_index(drop=True)
    if len(train) == 0:
        raise ProbeDataError(
            "the sample list has no train split: linear probes are fitted on train images"
        )
    if n_test is not None:
        if n_test > len(test):
            raise ProbeDataError(
                f"probes.n_test = {n_test} but the sample list has {len(test)} test images; lower it or raise "
                "the dataset's max_test"
            )
        test = test.iloc[:n_test]
    if len(test) == 0:
        raise ProbeDataError(
            "no test images to score the probes on; raise probes.n_test or the dataset's max_test"
        )
    labels = train["label"].to_numpy()
    chosen: dict[str, np.ndarray] = {}
    for k in shots:
        chosen[str(k)] = (
            np.arange(len(train)) if k == "all" else kshot_indices(labels, int(k), seed)
        )
    pool = np.unique(np.concatenate(list(chosen.values())))
    where = {int(i): p for p, i in enumerate(pool)}
    sets = {k: [where[int(i)] for i in idx] for k, idx in chosen.items()}
    rows = pd.concat([train.iloc[pool], test], ignore_index=True)
    return rows, sets


# ------------------------------------------------------------------------------------------------ table
def probe_table(
    features_dir: str | Path,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    holdout: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    progress=None,
) -> pd.DataFrame:
    """Tidy accuracy table (model, tap, depth, aggregation, token, shots, accuracy, lam, ...) for every probed
    tap, aggregation and shot count, from a features directory written by `extract_probe_features` whose
    meta holds `splits` (train / test per row) and `train_sets` (shot count → row positions).
    """
    features_dir = Path(features_dir)
    meta = read_features_meta(features_dir)
    labels = np.load(features_dir / "labels.npy")
    split = np.asarray(meta["splits"])
    test_rows = np.flatnonzero(split == "test")
    if len(test_rows) == 0:
        raise ProbeDataError("the probe features hold no test images; set probes.n_test > 0")
    depth = normalised_depth([t["index"] for t in meta["taps"]])
    model_name = model_name or meta.get("model", "model")
    y_te = labels[test_rows]
    rows = []
    for k, sel in meta["train_sets"].items():
        sel = np.asarray(sel)
        y_tr = labels[sel]
        for tap in meta["taps"]:
            base = {
                "model": model_name, "tap": tap["name"], "kind": tap["kind"], "tap_index": tap["index"],
                "block": tap["block"], "depth": depth[tap["index"]], "shots": str(k),
            }  # fmt: skip
            aggs = list(tap["aggregations"]) + (["token"] if tap["token"] else [])
            for agg in aggs:
                arr = np.load(features_dir / f"{tap['index']:03d}_{agg}.npy", mmap_mode="r")
                x_tr, x_te = np.asarray(arr[sel]), np.asarray(arr[test_rows])
                if agg != "token":
                    fit = fit_probe(x_tr, y_tr, x_te, y_te, lambdas, holdout, seed, device)
                    rows.append({**base, "aggregation": agg, "token": -1, "token_row": -1, "token_col": -1,
                                 **_fit_cols(fit)})  # fmt: skip
                    continue
                gw = tap["grid_hw"][1]
                for g in range(x_tr.shape[1]):
                    fit = fit_probe(
                        x_tr[:, g], y_tr, x_te[:, g], y_te, lambdas, holdout, seed, device
                    )
                    rows.append({**base, "aggregation": "token", "token": g, "token_row": g // gw,
                                 "token_col": g % gw, **_fit_cols(fit)})  # fmt: skip
            if progress is not None:
                progress(tap["name"], k)
    df = pd.DataFrame(rows)
    df["chance"] = 1.0 / len(np.unique(labels[split == "train"]))
    return df


def _fit_cols(fit: ProbeFit) -> dict[str, Any]:
    return {
        "accuracy": fit.accuracy, "lam": fit.lam, "val_accuracy": float(np.nanmax(fit.val_accuracies)),
        "n_train": fit.n_train, "n_test": fit.n_test, "dim": fit.dim, "solver": fit.form,
    }  # fmt: skip


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


def select_probe_taps(taps: Sequence[Any], cfg: dict[str, Any], model_key: str) -> list[Any]:
    """Taps to probe: `probes.taps.<model>` names when given, else every tap of a kind in `probes.tap_kinds`."""
    explicit = (cfg.get("taps") or {}).get(model_key)
    if explicit:
        by_name = {t.name: t for t in taps}
        missing = [n for n in explicit if n not in by_name]
        if missing:
            raise ValueError(
                f"probes.taps.{model_key} names {missing}, not taps of this model; valid names include "
                f"{[t.name for t in taps][:12]}"
            )
        return sorted((by_name[n] for n in explicit), key=lambda t: t.index)
    chosen = default_probe_taps(taps, cfg.get("tap_kinds"))
    if not chosen:
        kinds = sorted({t.kind for t in taps})
        raise ValueError(
            f"model {model_key!r} has no taps of kinds {cfg.get('tap_kinds')}; its kinds are {kinds}. Set "
            f"probes.tap_kinds or probes.taps.{model_key}"
        )
    return chosen


def select_token_taps(
    probed: Sequence[Any], spec: str | dict[str, Any], model_key: str
) -> list[str]:
    """Taps with per-token probes: `last` (the last probed tap), `all`, `none`, or {model: [names]}."""
    if isinstance(spec, dict):
        spec = spec.get(model_key, "last")
    if spec == "none":
        return []
    if spec == "last":
        return [probed[-1].name]
    if spec == "all":
        return [t.name for t in probed]
    names = {t.name for t in probed}
    missing = [n for n in spec if n not in names]
    if missing:
        raise ValueError(
            f"probes.token_taps.{model_key} names {missing}, which are not probed taps; probed: {sorted(names)}"
        )
    return list(spec)


def build_probe_features(
    model: nn.Module,
    info: dict[str, Any],
    samples_csv: str | Path,
    dataset_cfg: dict[str, Any],
    out_dir: str | Path,
    cfg: dict[str, Any],
    model_key: str,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress=None,
) -> dict[str, Any]:
    """The probe_features rule: k-shot train images + test images, one streaming pass, aggregated features."""
    from seelike.data.loader import make_loader, read_samples
    from seelike.data.samples import samples_hash
    from seelike.models.taps import discover_taps, tap_family

    rows, sets = probe_sample_plan(read_samples(samples_csv), cfg["shots"], cfg.get("n_test"), seed)
    taps = select_probe_taps(discover_taps(model), cfg, model_key)
    token_taps = select_token_taps(taps, cfg.get("token_taps", "last"), model_key)
    loader = make_loader(
        rows, dataset_cfg, info["data_config"], split=None, batch_size=cfg["batch_size"],
        num_workers=num_workers,
    )  # fmt: skip
    extra = {
        "model": model_key,
        "arch": info.get("arch"),
        "family": tap_family(model),
        "samples_hash": samples_hash(samples_csv),
        "splits": rows["split"].tolist(),
        "ids": rows["id"].astype(str).tolist(),
        "train_sets": sets,
        "shots": [str(k) for k in cfg["shots"]],
        "seed": int(seed),
    }
    return extract_probe_features(
        model, loader, len(rows), out_dir, taps, token_taps, cfg.get("aggregations"), device,
        extra_meta=extra, progress=progress,
    )  # fmt: skip
