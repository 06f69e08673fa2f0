"""Size a CKA protocol by the precision it buys: from a pilot activation cache, predict each cell's standard
error, the Gram compute and the disk of a proposed (batch size, images per repeat, repeats).

Why it works from one pilot: HSIC₁ is a U-statistic of order 4, so the minibatch estimator averaged over N/n
disjoint minibatches of n images has Var ≈ (a + b/n) / N per repeat (the leading term does not depend on n).
A pilot cache holds each minibatch's Gram, and the Gram of any subset of a minibatch's images is a principal
submatrix of it, so the pilot can be re-cut into smaller minibatches without a forward pass. The delete-one-
minibatch jackknife gives Var at each cut n' (tested against the spread over independent repeats in
tests/test_cka.py); a least-squares fit of Var·N = a + b/n' per cell then predicts any (n, N, R):
SE = √((a + b/n) / (N·R)). Cuts must divide the pilot's batch size; predictions for n above the pilot's
batch extrapolate the fitted 1/n law.

    python -m seelike.planner results/cache/<dataset>/<a> results/cache/<dataset>/<b> \\
        --batch 128 256 1024 --images 2560 10240 --repeats 1 10 20 [--target-se 0.005]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seelike.analyses.cache import (
    check_compatible,
    gram_bytes,
    load_packed_grams,
    read_cache_meta,
)
from seelike.cka import MIN_BATCH, CkaAccumulator, pack_upper, unpack_upper


def _cuts(batch_size: int, cuts: Sequence[int] | None) -> list[int]:
    if cuts is None:
        cuts = [c for c in (16, 32, 64, 128, 256, 512, 1024) if c <= batch_size]
    bad = [c for c in cuts if batch_size % c or c < MIN_BATCH]
    if bad:
        raise ValueError(
            f"cuts {bad} must divide the pilot's batch size {batch_size} and be ≥ {MIN_BATCH}"
        )
    return sorted({int(c) for c in cuts})


def recut(full: torch.Tensor, cut: int) -> list[torch.Tensor]:
    """The Grams (T, n, n) of one minibatch re-cut into n/cut minibatches of `cut` images each (consecutive
    images: principal submatrices), packed."""
    n = full.shape[-1]
    return [pack_upper(full[:, s : s + cut, s : s + cut]) for s in range(0, n, cut)]


def variance_by_cut(
    cache_a: str | Path, cache_b: str | Path, cuts: Sequence[int] | None = None, repeat: int = 0
) -> tuple[dict[int, np.ndarray], int, dict]:
    """Jackknife variance (Tₐ×T_b) of the minibatch CKA of one pilot repeat re-cut into minibatches of
    each size in `cuts`; returns ({cut: variance}, images used N, pilot metadata of a)."""
    meta_a, meta_b = read_cache_meta(cache_a), read_cache_meta(cache_b)
    check_compatible(meta_a, meta_b)
    same = Path(cache_a).resolve() == Path(cache_b).resolve()
    full_batches = [
        b for b, n in enumerate(meta_a["batch_sizes"]) if n == meta_a["plan"]["batch_size"]
    ]
    if len(full_batches) < 2 and not cuts:
        raise ValueError("the pilot needs at least 2 full minibatches")
    cut_list = _cuts(meta_a["plan"]["batch_size"], cuts)
    accs = {c: CkaAccumulator(len(meta_a["taps"]), len(meta_b["taps"])) for c in cut_list}
    for b in full_batches:
        # unpacked once per minibatch, then cut at every size
        ga = unpack_upper(torch.from_numpy(np.array(load_packed_grams(cache_a, repeat, b))))
        gb = (
            None
            if same
            else unpack_upper(torch.from_numpy(np.array(load_packed_grams(cache_b, repeat, b))))
        )
        for c in cut_list:
            subs_a = recut(ga, c)
            subs_b = subs_a if gb is None else recut(gb, c)
            for sa, sb in zip(subs_a, subs_b, strict=True):
                accs[c].add(sa, None if gb is None else sb)
    n_images = len(full_batches) * meta_a["plan"]["batch_size"]
    return {c: acc.jackknife_se() ** 2 for c, acc in accs.items()}, n_images, meta_a


@dataclass
class PrecisionModel:
    """Per-cell Var·N = a + b/n fitted on a pilot (arrays Tₐ×T_b), with what the costs need."""

    a: np.ndarray
    b: np.ndarray
    cuts: list[int]
    tap_features: list[int]  # features per image of each tap of model a (Gram cost ∝ n·p per image)
    tap_features_b: list[int]
    same: bool

    def se(self, batch: int, images: int, repeats: int = 1) -> np.ndarray:
        """Predicted standard error of each cell's CKA (mean over `repeats` repeats of `images` images)."""
        return np.sqrt(np.clip(self.a + self.b / batch, 0, None) / (images * repeats))


def fit_precision(
    cache_a: str | Path, cache_b: str | Path, cuts: Sequence[int] | None = None
) -> PrecisionModel:
    """Fit Var·N = a + b/n per cell on the pilot's re-cut minibatches (least squares over the cuts, a, b ≥ 0)."""
    var, n_images, meta_a = variance_by_cut(cache_a, cache_b, cuts)
    meta_b = read_cache_meta(cache_b)
    cut_list = sorted(var)
    y = np.stack([var[c] * n_images for c in cut_list])  # (cuts, Tₐ, T_b)
    x = np.stack([np.ones(len(cut_list)), 1.0 / np.asarray(cut_list, float)], 1)  # (cuts, 2)
    if len(cut_list) == 1:
        a, b = np.zeros_like(y[0]), y[0] * cut_list[0]  # one cut: all variance in the 1/n term
    else:
        coef, *_ = np.linalg.lstsq(x, y.reshape(len(cut_list), -1), rcond=None)
        a, b = (c.reshape(y.shape[1:]) for c in coef)
        # a negative coefficient is noise: refit the other alone
        neg_a, neg_b = a < 0, b < 0
        a = np.where(neg_a, 0, a)
        b = np.where(neg_a, (y * x[:, 1, None, None]).sum(0) / (x[:, 1] ** 2).sum(), b)
        b = np.where(neg_b, 0, b)
        a = np.where(neg_b & ~neg_a, y.mean(0), a)
    feats = [int(np.prod(t["shape"])) for t in meta_a["taps"]]
    feats_b = [int(np.prod(t["shape"])) for t in meta_b["taps"]]
    same = Path(cache_a).resolve() == Path(cache_b).resolve()
    return PrecisionModel(np.nan_to_num(a), np.nan_to_num(b), cut_list, feats, feats_b, same)


def gram_gflop(tap_features: Sequence[int], batch: int, images: int, repeats: int) -> float:
    """Multiply-adds ×2 of the cache's fp32 Grams: Σ_taps p · n per image (X Xᵀ of an n×p batch is n²p)."""
    return 2.0 * sum(tap_features) * batch * images * repeats / 1e9


def plan_table(
    model: PrecisionModel,
    batches: Sequence[int],
    images: Sequence[int],
    repeats: Sequence[int],
    min_cka: float = 0.05,
    values: np.ndarray | None = None,
    target_se: float | None = None,
) -> pd.DataFrame:
    """One row per proposed protocol: the median and maximum predicted SE over the cells (cells with
    |CKA| ≥ min_cka when `values` is given; self diagonals left out), the Gram GFLOP and disk of both models'
    caches, sorted by cost; `meets_target` when `target_se` is given."""
    cells = np.ones_like(model.a, bool)
    if values is not None:
        cells &= np.abs(values) >= min_cka
    if model.same:
        np.fill_diagonal(cells, False)
    rows = []
    for n in batches:
        for big_n in images:
            if big_n < n:
                continue
            for r in repeats:
                se = model.se(n, big_n, r)[cells]
                sizes = [min(n, big_n - i) for i in range(0, big_n, n)]
                feats = model.tap_features + ([] if model.same else model.tap_features_b)
                disk = gram_bytes(len(model.tap_features), sizes, r)
                if not model.same:
                    disk += gram_bytes(len(model.tap_features_b), sizes, r)
                rows.append(
                    {
                        "batch_size": n,
                        "n_images": big_n,
                        "repeats": r,
                        "se_median": float(np.median(se)) if se.size else math.nan,
                        "se_max": float(se.max()) if se.size else math.nan,
                        "gram_gflop": gram_gflop(feats, n, big_n, r),
                        "disk_gb": disk / 1e9,
                    }
                )
    df = pd.DataFrame(rows).sort_values(["gram_gflop", "disk_gb"]).reset_index(drop=True)
    if target_se is not None:
        df["meets_target"] = df["se_max"] <= target_se
    return df


def main(argv: Sequence[str] | None = None) -> int:
    from seelike.analyses.cka_tables import cka_from_caches
    from seelike.tables import cka_array

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache_a")
    ap.add_argument("cache_b")
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--images", type=int, nargs="+", default=[2560, 5120, 10240])
    ap.add_argument("--repeats", type=int, nargs="+", default=[1, 10, 20])
    ap.add_argument(
        "--cuts", type=int, nargs="+", default=None, help="pilot re-cuts (divide its batch)"
    )
    ap.add_argument("--min-cka", type=float, default=0.05, help="cells counted in the SE columns")
    ap.add_argument("--target-se", type=float, default=None)
    args = ap.parse_args(argv)
    model = fit_precision(args.cache_a, args.cache_b, args.cuts)
    values, _, _ = cka_array(cka_from_caches(args.cache_a, args.cache_b)[0])
    table = plan_table(
        model, args.batch, args.images, args.repeats, args.min_cka, values, args.target_se
    )
    print(f"pilot re-cut at {model.cuts}; SE over cells with |CKA| ≥ {args.min_cka}")
    print(table.to_markdown(index=False, floatfmt=".4g") if _has_tabulate() else table.to_string())
    if args.target_se is not None:
        ok = table[table["meets_target"]]
        print("cheapest meeting the target:", ok.iloc[0].to_dict() if len(ok) else "none")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
