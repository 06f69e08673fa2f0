"""Size a CKA protocol by the precision it buys: from a pilot activation cache, predict each cell's standard
error, the Gram compute and the disk of a proposed (batch size, images per repeat, repeats).

Why it works from one pilot: HSIC₁ is a U-statistic of order 4, so the minibatch estimator averaged over N/n
disjoint minibatches of n images has Var ≈ (a + b/n) / N per repeat (the leading term does not depend on n).
A pilot cache holds each minibatch's Gram, and the Gram of any subset of a minibatch's images is a principal
submatrix of it, so the pilot can be re-cut into smaller minibatches without a forward pass. The delete-one-
minibatch jackknife gives Var at each cut n' (tested against the spread over independent repeats in
tests/test_cka.py); `fit_law` fits Var·N = s·(1 + β/n') — one shape β for all cells, a level s per cell, the
cuts weighted by their degrees of freedom — and predicts any (n, N, R): SE = √(s·(1 + β/n) / (N·R)). Cuts
must divide the pilot's batch size; predictions for n above the pilot's batch extrapolate the fitted 1/n law.

How far to trust it: a pilot of few minibatches gives noisy variances, above all at its large cuts. The
planner refits the law with each of the pilot's minibatches left out and prints, beside each proposal's median
SE, its 90% range from that jackknife (log scale, Student t with m − 1 degrees of freedom for m minibatches).
Measured on real activations (BENCHMARKS.md, "Planner calibration"): from a 4,096-image pilot, within ±10%
of the SD over disjoint repeats for batch 32–256 and N = 256–4,096; from 1,024 images a single pilot can be
20% off at n ≥ 128, and its range says so.

    python -m seelike.planner results/cache/<dataset>/<a> results/cache/<dataset>/<b> \\
        --batch 128 256 1024 --images 2560 10240 --repeats 1 10 20 [--target-se 0.005]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
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
from seelike.jackknife import jackknife_se


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


def pilot_accumulators(
    cache_a: str | Path, cache_b: str | Path, cuts: Sequence[int] | None = None, repeat: int = 0
) -> tuple[dict[int, CkaAccumulator], int, dict]:
    """The pilot's full minibatches of one repeat, re-cut at each size in `cuts`: {cut: accumulator whose
    minibatches are the cuts, in pilot order (pilot minibatch m holds cuts m·(B/cut) … (m+1)·(B/cut) − 1)},
    images used N, pilot metadata of a."""
    meta_a, meta_b = read_cache_meta(cache_a), read_cache_meta(cache_b)
    check_compatible(meta_a, meta_b)
    same = Path(cache_a).resolve() == Path(cache_b).resolve()
    batch = meta_a["plan"]["batch_size"]
    full_batches = [b for b, n in enumerate(meta_a["batch_sizes"]) if n == batch]
    if len(full_batches) < 2 and not cuts:
        raise ValueError("the pilot needs at least 2 full minibatches")
    cut_list = _cuts(batch, cuts)
    accs = {c: CkaAccumulator(len(meta_a["taps"]), len(meta_b["taps"])) for c in cut_list}
    for b in full_batches:
        # unpacked once per minibatch, then cut at every size
        ga = unpack_upper(torch.from_numpy(np.array(load_packed_grams(cache_a, repeat, b))))
        gb = (
            None
            if same
            else unpack_upper(torch.from_numpy(np.array(load_packed_grams(cache_b, repeat, b))))
        )
        add_recut(accs, ga, gb)
    return accs, len(full_batches) * batch, meta_a


def add_recut(accs: dict[int, CkaAccumulator], ga: torch.Tensor, gb: torch.Tensor | None) -> None:
    """Add one minibatch's full Grams (T, n, n) (gb None: self-similarity), re-cut at each accumulator's size."""
    for c, acc in accs.items():
        subs_a = recut(ga, c)
        subs_b = subs_a if gb is None else recut(gb, c)
        for sa, sb in zip(subs_a, subs_b, strict=True):
            acc.add(sa, None if gb is None else sb)


def variance_by_cut(
    cache_a: str | Path, cache_b: str | Path, cuts: Sequence[int] | None = None, repeat: int = 0
) -> tuple[dict[int, np.ndarray], int, dict]:
    """Jackknife variance (Tₐ×T_b) of the minibatch CKA of one pilot repeat re-cut into minibatches of
    each size in `cuts`; returns ({cut: variance}, images used N, pilot metadata of a)."""
    accs, n_images, meta_a = pilot_accumulators(cache_a, cache_b, cuts, repeat)
    return {c: acc.jackknife_se() ** 2 for c, acc in accs.items()}, n_images, meta_a


# the range printed beside each proposal's median SE
RANGE_LEVEL = 0.90
# shapes β of the pooled law tried by `fit_law` (0: no minibatch-size dependence at all)
BETA_GRID = np.concatenate([[0.0], np.geomspace(0.1, 1e4, 301)])


def fit_law(
    var: dict[int, np.ndarray], n_images: int, dof: dict[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell a, b ≥ 0 of Var·N = a + b/n from the jackknife variances at each cut n of N pilot images.

    One shape for all cells, a level per cell: Var·N = s·(1 + β/n), i.e. a = s, b = s·β. β is the grid value
    minimising the cells' relative squared residuals, each cut weighted by its degrees of freedom (`dof`: its
    minibatches − 1; default equal); each cell's s is then the dof-weighted mean of its Var·N/(1 + β/n). Why
    not a free (a, b) per cell: a pilot's cuts at large n hold few minibatches, so each cell's slope is mostly
    noise. On real activations (EfficientNet-Lite0, BENCHMARKS.md "Planner calibration"), from 1,024-image pilots
    (mean of 8) per-cell fits under-predicted the SE of the high-CKA cells at n = 256 by 24% and the pooled
    shape by 10%, and the pooled shape's prediction varied less between pilots (±14% against ±17%); with
    2,048- and 4,096-image pilots the two agree within 4%."""
    cut_list = sorted(var)
    y = np.stack([var[c] * n_images for c in cut_list])  # (cuts, Tₐ, T_b)
    # one cut: all variance in the 1/n term (the pilot's own SE at its own cut)
    if len(cut_list) == 1:
        return np.zeros_like(y[0]), y[0] * cut_list[0]
    y = np.nan_to_num(y)
    w = np.array([(dof or {}).get(c, 1) for c in cut_list], float)[:, None, None]
    n = np.asarray(cut_list, float)[:, None, None]
    # cells with a variance at every cut: not a tap with itself (CKA 1 by construction: its jackknife variance is
    # rounding noise), not a constant tap
    fit = (y > 1e-10 * y.max()).all(0)
    best, best_s, best_res = 0.0, None, np.inf
    for beta in BETA_GRID:
        f = 1 + beta / n
        s = (w * y / f).sum(0) / w.sum()
        res = (w * (y / np.where(fit, s, 1) / f - 1) ** 2)[:, fit].sum()
        if res < best_res:
            best, best_s, best_res = beta, s, res
    return best_s, best_s * best


@dataclass
class PrecisionModel:
    """Per-cell Var·N = a + b/n fitted on a pilot (arrays Tₐ×T_b), with what the costs need; `loo_a`, `loo_b`
    (m, Tₐ, T_b): the same fit with each of the pilot's m minibatches left out (how far the prediction can be
    trusted from a pilot of this size)."""

    a: np.ndarray
    b: np.ndarray
    cuts: list[int]
    tap_features: list[int]  # features per image of each tap of model a (Gram cost ∝ n·p per image)
    tap_features_b: list[int]
    same: bool
    loo_a: np.ndarray | None = None
    loo_b: np.ndarray | None = None

    def se(self, batch: int, images: int, repeats: int = 1) -> np.ndarray:
        """Predicted standard error of each cell's CKA (mean over `repeats` repeats of `images` images)."""
        return np.sqrt(np.clip(self.a + self.b / batch, 0, None) / (images * repeats))

    def se_range(
        self,
        batch: int,
        images: int,
        repeats: int,
        cells: np.ndarray,
        summary: Callable[..., np.ndarray] = np.median,
        level: float = RANGE_LEVEL,
    ) -> tuple[float, float] | None:
        """`level` range of a summary over `cells` (default the median) of the predicted SE: the delete-one-
        minibatch jackknife of its log × Student t with m − 1 degrees of freedom (on real activations it covered
        more often than a bootstrap over the same 8 minibatches: BENCHMARKS.md, "Planner calibration"). None
        without the refits."""
        if self.loo_a is None or self.loo_b is None or not cells.any():
            return None
        from scipy.stats import t

        point = np.log(summary(self.se(batch, images, repeats)[cells]))
        loo = np.sqrt(np.clip(self.loo_a + self.loo_b / batch, 0, None) / (images * repeats))
        se = jackknife_se(np.log(summary(loo[:, cells], axis=1)))
        q = t.ppf(0.5 + level / 2, len(loo) - 1)
        return float(np.exp(point - q * se)), float(np.exp(point + q * se))


def jackknife_law(
    accs: dict[int, CkaAccumulator], n_images: int, pilot_batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """(m, Tₐ, T_b) a and b refitted with each of the pilot's m full minibatches left out (all its cuts
    together), each refit on the (m − 1)/m of the images that remain."""
    out_a, out_b = [], []
    for drop in range(pilot_batches):
        var, dof = {}, {}
        for c, acc in accs.items():
            per = acc.batches // pilot_batches
            sub = acc.subset([i for i in range(acc.batches) if i // per != drop])
            var[c], dof[c] = sub.jackknife_se() ** 2, sub.batches - 1
        a, b = fit_law(var, n_images * (pilot_batches - 1) // pilot_batches, dof)
        out_a.append(a)
        out_b.append(b)
    return np.stack(out_a), np.stack(out_b)


def precision_model(
    accs: dict[int, CkaAccumulator],
    n_images: int,
    pilot_batches: int,
    tap_features: list[int],
    tap_features_b: list[int],
    same: bool,
    refits: bool = True,
) -> PrecisionModel:
    """The law fitted on a pilot's re-cut accumulators (`pilot_accumulators`), with its delete-one-minibatch
    refits when `refits` and the pilot has at least 3 full minibatches."""
    dof = {c: acc.batches - 1 for c, acc in accs.items()}
    a, b = fit_law({c: acc.jackknife_se() ** 2 for c, acc in accs.items()}, n_images, dof)
    la = lb = None
    if refits and pilot_batches >= 3:
        la, lb = jackknife_law(accs, n_images, pilot_batches)
    return PrecisionModel(a, b, sorted(accs), tap_features, tap_features_b, same, la, lb)


def fit_precision(
    cache_a: str | Path, cache_b: str | Path, cuts: Sequence[int] | None = None, refits: bool = True
) -> PrecisionModel:
    """Fit Var·N = a + b/n per cell on the pilot's re-cut minibatches (`fit_law`), with the delete-one-minibatch
    refits that give its range (`PrecisionModel.median_range`)."""
    accs, n_images, meta_a = pilot_accumulators(cache_a, cache_b, cuts)
    meta_b = read_cache_meta(cache_b)
    feats = [int(np.prod(t["shape"])) for t in meta_a["taps"]]
    feats_b = [int(np.prod(t["shape"])) for t in meta_b["taps"]]
    same = Path(cache_a).resolve() == Path(cache_b).resolve()
    pilot_batches = n_images // meta_a["plan"]["batch_size"]
    return precision_model(accs, n_images, pilot_batches, feats, feats_b, same, refits)


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
                        # how far the pilot lets the median be trusted
                        **_range(model.se_range(n, big_n, r, cells)),
                        "gram_gflop": gram_gflop(feats, n, big_n, r),
                        "disk_gb": disk / 1e9,
                    }
                )
    df = pd.DataFrame(rows).sort_values(["gram_gflop", "disk_gb"]).reset_index(drop=True)
    if target_se is not None:
        df["meets_target"] = df["se_max"] <= target_se
    return df


def _range(r: tuple[float, float] | None) -> dict[str, float]:
    return {} if r is None else {"se_median_lo": r[0], "se_median_hi": r[1]}


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
    ap.add_argument(
        "--no-range", action="store_true", help="skip the delete-one-minibatch refits of the pilot"
    )
    args = ap.parse_args(argv)
    model = fit_precision(args.cache_a, args.cache_b, args.cuts, refits=not args.no_range)
    values, _, _ = cka_array(cka_from_caches(args.cache_a, args.cache_b)[0])
    table = plan_table(
        model, args.batch, args.images, args.repeats, args.min_cka, values, args.target_se
    )
    print(f"pilot re-cut at {model.cuts}; SE over cells with |CKA| ≥ {args.min_cka}")
    if model.loo_a is not None:
        print(
            f"se_median_lo / _hi: {RANGE_LEVEL:.0%} range of the median SE from refits with each of the pilot's "
            f"{len(model.loo_a)} minibatches left out (the pilot's own uncertainty; a wide range asks for a "
            "larger pilot)"
        )
    elif not args.no_range:
        print("no range: the pilot has fewer than 3 full minibatches")
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
