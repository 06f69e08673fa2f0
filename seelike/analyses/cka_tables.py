"""CKA tables from activation caches (no model rerun), tidy and with the settings that made them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seelike.analyses.cache import check_compatible, load_packed_grams, read_cache_meta
from seelike.analyses.pair_scores import pair_uncertainty
from seelike.analyses.replicates import CkaGroups, group_terms
from seelike.cka import MIN_BATCH
from seelike.device import analysis_device, exact_fp32
from seelike.models.taps import BLOCK_OUTPUT_KINDS
from seelike.similarity import MeasureOptions, check_measure, make_accumulator
from seelike.tables import CKA_COLUMNS, NULL_Z

log = logging.getLogger(__name__)


@exact_fp32()
def cka_from_caches(
    cache_a: str | Path,
    cache_b: str | Path,
    device: str | torch.device | None = None,
    permutations: int = 0,
    with_groups: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]] | tuple[pd.DataFrame, dict[str, Any], CkaGroups]:
    """Minibatch CKA of every tap pair of two cached models (a == b: self-similarity).

    Returns a long table and metadata (plan, sample hash, dropped minibatches, constant taps). One row per tap
    pair: `cka` (mean over repeats), `cka_std` / `cka_min` / `cka_max` over repeats, `cka_se` (standard
    error of `cka`: the delete-one-minibatch jackknife SE of each repeat, combined as √Σ SE²ᵣ / R), the
    permutation null — `permutations` draws of the same statistic with the second model's images permuted
    within each minibatch, from the cached Grams (no forward pass) — as `null_mean`, `null_sd`, `null_z` =
    (cka − null_mean) / null_sd and the one-sided `p_value` = (1 + #{null ≥ cka}) / (permutations + 1)
    (NaN without permutations, and on a self-similarity diagonal), and the `constant` flags.
    `with_groups`: also the per-repeat HSIC₁ terms summed over groups of minibatches
    (`seelike.analyses.replicates.CkaGroups`), for the jackknife / bootstrap of any statistic of the table.
    """
    out = measures_from_caches(
        cache_a, cache_b, ("linear_cka",), device=device, permutations=permutations,
        with_groups=with_groups,
    )  # fmt: skip
    df = out[0].drop(columns="measure").rename(columns=CKA_COLUMNS)
    return (df, *out[1:])


ESTIMATORS = {
    "linear_cka": "minibatch linear CKA, unbiased HSIC (Song et al. 2012), ratio of means (Nguyen et al. 2021)",
    "linear_cka_biased": "minibatch linear CKA, biased HSIC₀ = tr(KHLH)/(n−1)² (Kornblith et al. 2019), "
    "ratio of means",
    "rbf_cka": "minibatch RBF-kernel CKA, σ = {rbf_sigma:g} × median pairwise distance per tap and minibatch, "
    "unbiased HSIC, ratio of means",
    "dcor": "bias-corrected squared distance correlation (Székely & Rizzo 2014; U-centred distance "
    "matrices), ratio of means over minibatches",
    "rsa": "RSA: {rsa_correlation} correlation of the minibatch RDMs (Euclidean distances), mean over "
    "minibatches",
    "linear_cka_minus_pc": "minibatch linear CKA with each representation's top {pcs_removed} principal "
    "direction(s) of the minibatch removed, unbiased HSIC, ratio of means",
    "bures": "normalised Bures similarity ‖XᵀY‖_* / (‖X‖_F‖Y‖_F) of the centred minibatch representations, "
    "mean over minibatches (listed tap pairs only)",
    "mutual_knn": "mutual k-NN alignment (Huh et al. 2024): mean over images of |N_A(i) ∩ N_B(i)| / k, "
    "k = {knn_k} nearest neighbours by {knn_metric} of the minibatch-centred features (chance k/(n−1)), mean "
    "over minibatches",
    "cknna": "CKNNA (Huh et al. 2024, unbiased HSIC): CKA of the cosine kernels of the minibatch-centred "
    "features restricted to pairs that are k-NN in both (k = {knn_k}, {knn_metric} neighbours), mean over "
    "minibatches",
}


def bures_cells(
    taps_a: list[dict], taps_b: list[dict], bures_taps: str | list[str] = "block_outputs"
) -> np.ndarray:
    """(Tₐ, T_b) mask of the tap pairs `bures` is computed for: both taps block outputs (`"block_outputs"`:
    BLOCK_OUTPUT_KINDS) or both among the listed tap names (`cka.bures_taps`); a listed name in neither model
    is an error naming the key."""
    if bures_taps == "block_outputs":
        pick = lambda taps: np.array([t["kind"] in BLOCK_OUTPUT_KINDS for t in taps])
    else:
        names = set(bures_taps)
        known = {t["name"] for t in taps_a} | {t["name"] for t in taps_b}
        if unknown := sorted(names - known):
            raise ValueError(
                f"cka.bures_taps lists {unknown[:5]}, not taps of either model; list names from "
                "results/models/<model>/taps.csv, or set cka.bures_taps: block_outputs"
            )
        pick = lambda taps: np.array([t["name"] in names for t in taps])
    return pick(taps_a)[:, None] & pick(taps_b)[None, :]


@exact_fp32()
def measures_from_caches(
    cache_a: str | Path,
    cache_b: str | Path,
    measures: Sequence[str],
    options: MeasureOptions | None = None,
    device: str | torch.device | None = None,
    permutations: int = 0,
    bures_taps: str | list[str] = "block_outputs",
    with_groups: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]] | tuple[pd.DataFrame, dict[str, Any], CkaGroups]:
    """Similarity `measures` (`seelike.similarity.MEASURES`) of every tap pair of two cached models, reading
    each minibatch's Grams once for all of them (a == b: self-similarity).

    One long table, one row per measure × tap pair: `value` (mean over repeats), `value_std` / `value_min` /
    `value_max` over repeats, `se` (delete-one-minibatch jackknife SE per repeat, combined as √Σ SE²ᵣ / R),
    the permutation null (`null_mean`, `null_sd`, `null_z`, `p_value`: NaN where a measure has none, without
    permutations, and on a self-similarity diagonal) and `constant`. `bures` only for the `bures_cells`.
    `with_groups` (linear CKA among the measures): also linear CKA's per-repeat HSIC₁ terms summed over groups of
    consecutive minibatches (`seelike.analyses.replicates`), returned third.
    """
    options = options or MeasureOptions()
    device = analysis_device(device)
    for m in measures:
        check_measure(m)
    meta_a, meta_b = read_cache_meta(cache_a), read_cache_meta(cache_b)
    check_compatible(meta_a, meta_b)
    same = Path(cache_a).resolve() == Path(cache_b).resolve()
    plan = meta_a["plan"]
    taps_a, taps_b = meta_a["taps"], meta_b["taps"]
    cells = bures_cells(taps_a, taps_b, bures_taps) if "bures" in measures else None
    runs: dict[str, list] = {m: [] for m in measures}
    replicates: dict[str, list] = {m: [] for m in measures}
    grouped = []  # linear CKA's terms per repeat, summed over groups of minibatches
    dropped = []
    for r in range(plan["repeats"]):
        accs = {
            m: make_accumulator(
                m, len(taps_a), len(taps_b), options, device, permutations, plan["seed"], cells
            )
            for m in measures
        }
        skipped = []
        for b, n in enumerate(meta_a["batch_sizes"]):
            if n < MIN_BATCH:
                skipped.append(b)
                continue
            # memory-mapped packed Grams: each accumulator reads them a chunk of taps at a time
            ga = load_packed_grams(cache_a, r, b)
            gb = None if same else load_packed_grams(cache_b, r, b)
            for acc in accs.values():
                acc.add(ga, gb, batch_id=b)
        if skipped:
            log.warning(
                "repeat %d: dropped minibatch(es) %s with fewer than %d images",
                r,
                skipped,
                MIN_BATCH,
            )
            dropped.append({"repeat": r, "batches": skipped})
        for m, acc in accs.items():
            runs[m].append((acc.result(), acc.jackknife_se(), acc.null(), *acc.degenerate()))
            if (
                not same and acc.batches >= 2
            ):  # the jackknife replicates of the pair's diagonal (pair_scores)
                replicates[m].append(acc.leave_one_out())
        if with_groups:  # linear CKA's terms, summed over groups of minibatches
            grouped.append(group_terms(*accs["linear_cka"].terms()))
    frames, constant_a, constant_b, floors, pair, consts = [], set(), set(), {}, {}, {}
    for m in measures:
        cols, const_a, const_b = _combine_repeats(runs[m], permutations, same)
        consts[m] = (const_a, const_b)
        constant_a |= {taps_a[i]["name"] for i in np.flatnonzero(const_a)}
        constant_b |= {taps_b[j]["name"] for j in np.flatnonzero(const_b)}
        floors[m] = _null_floor(cols["null_sd"], const_a[:, None] | const_b[None, :])
        frames.append(_long_table(m, taps_a, taps_b, cols, const_a, const_b))
        if not same:
            null = np.stack([r[2] for r in runs[m]]).mean(0)
            constant = const_a[:, None] | const_b[None, :]
            pair[m] = pair_uncertainty(taps_a, taps_b, null, replicates[m], constant)
    if constant_a or constant_b:
        log.warning(
            "constant taps (undefined, reported 0): %s %s", sorted(constant_a), sorted(constant_b)
        )
    settings = {"rbf_sigma": options.rbf_sigma, "rsa_correlation": options.rsa_correlation,
                "pcs_removed": options.pcs_removed, "knn_k": options.knn_k,
                "knn_metric": options.knn_metric}  # fmt: skip
    meta = {
        "model_a": meta_a["model_name"],
        "model_b": meta_b["model_name"],
        "plan": plan,
        "samples_hash": plan["samples_hash"],
        "estimator": ESTIMATORS["linear_cka"] if list(measures) == ["linear_cka"] else None,
        "measures": {m: ESTIMATORS[m].format(**settings) for m in measures},
        "uncertainty": {
            "cka_se": "delete-one-minibatch jackknife of the ratio of means, per repeat; √Σ SE²ᵣ / R",
            "permutations": int(permutations),
            "null": "second model's images permuted within each minibatch (P L Pᵀ), seeded by "
            "(plan seed, minibatch); null of the mean over repeats",
            "null_z_threshold": NULL_Z,
            "null_floor": floors.get("linear_cka", floors[measures[0]]),
            "null_floor_by_measure": floors,
            # per measure, what the model-pair scores need (seelike.analyses.pair_scores); none for a == b
            "pair": pair,
        },
        "dropped_batches": dropped,
        "constant_taps_a": sorted(constant_a, key=[t["name"] for t in taps_a].index),
        "constant_taps_b": sorted(constant_b, key=[t["name"] for t in taps_b].index),
        "n_taps_a": len(taps_a),
        "n_taps_b": len(taps_b),
    }
    if "bures" in measures:
        meta["bures_taps"] = bures_taps
    if meta["estimator"] is None:
        del meta["estimator"]
    return (pd.concat(frames, ignore_index=True), meta, *_groups(grouped, consts, meta))


def _groups(grouped: list, consts: dict, meta: dict[str, Any]) -> tuple[CkaGroups, ...]:
    """(linear CKA's `CkaGroups`,) from its per-repeat grouped terms, noted in `meta`; () when none were kept."""
    if not grouped:
        return ()
    meta["uncertainty"]["groups"] = (
        f"per repeat, the HSIC₁ terms of {grouped[0][0].shape[0]} groups of consecutive minibatches "
        "(seelike.analyses.replicates), stored beside the table"
    )
    return (CkaGroups.from_repeats(grouped, *consts["linear_cka"]),)


def with_linear_cka(
    cka: pd.DataFrame, cka_meta: dict[str, Any], measures: pd.DataFrame, meta: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One long table of all measures of a model pair: the CKA rule's table (`cka_from_caches`, its columns
    renamed back) as the `linear_cka` rows, first, then the other measures' rows (`measures_from_caches`);
    linear CKA is computed once, by the CKA rule, and both tables carry its numbers unchanged."""
    linear = cka.rename(columns={v: k for k, v in CKA_COLUMNS.items()}).assign(measure="linear_cka")
    table = pd.concat([linear[measures.columns], measures[measures["measure"] != "linear_cka"]])
    unc = dict(meta["uncertainty"])
    floors = {"linear_cka": (cka_meta.get("uncertainty") or {}).get("null_floor")}
    unc["null_floor_by_measure"] = {**floors, **unc.get("null_floor_by_measure", {}), **floors}
    unc["null_floor"] = floors["linear_cka"]
    cka_pair = (cka_meta.get("uncertainty") or {}).get("pair") or {}
    unc["pair"] = {
        **cka_pair,
        **{k: v for k, v in unc.get("pair", {}).items() if k != "linear_cka"},
    }
    out = {
        **meta,
        "measures": {"linear_cka": ESTIMATORS["linear_cka"], **meta["measures"]},
        "uncertainty": unc,
    }
    for side in ("constant_taps_a", "constant_taps_b"):
        out[side] = list(dict.fromkeys(cka_meta.get(side, []) + meta.get(side, [])))
    return table.reset_index(drop=True), out


def _combine_repeats(
    runs: list[tuple], permutations: int, same: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-repeat (value, jackknife SE, null draws, constant a, constant b) → the table's columns."""
    stack = np.stack([r[0] for r in runs])
    value = stack.mean(0)
    se = np.sqrt((np.stack([r[1] for r in runs]) ** 2).sum(0)) / len(runs)
    null = np.stack([r[2] for r in runs]).mean(0)  # (permutations, Tₐ, T_b): the null of the mean
    nan = np.full_like(value, np.nan)
    if permutations and np.isfinite(null).any():
        null_mean = null.mean(0)
        null_sd = null.std(0, ddof=1) if permutations > 1 else nan
        with np.errstate(divide="ignore", invalid="ignore"):
            null_z = (value - null_mean) / null_sd
        p_value = (1 + (null >= value[None]).sum(0)) / (permutations + 1)
        p_value = np.where(np.isfinite(value), p_value, np.nan)
    else:
        null_mean, null_sd, null_z, p_value = nan, nan.copy(), nan.copy(), nan.copy()
    if same:  # a tap against itself is 1 by construction: no null to test against
        for arr in (null_mean, null_sd, null_z, p_value):
            np.fill_diagonal(arr, np.nan)
    with np.errstate(invalid="ignore"):
        cols = {
            "value": value,
            "value_std": stack.std(0, ddof=1)
            if len(stack) > 1
            else np.where(np.isfinite(value), 0.0, np.nan),
            "value_min": stack.min(0),
            "value_max": stack.max(0),
            "se": se,
            "null_mean": null_mean,
            "null_sd": null_sd,
            "null_z": null_z,
            "p_value": p_value,
        }
    const_a = np.any([r[3] for r in runs], axis=0)
    const_b = np.any([r[4] for r in runs], axis=0)
    return cols, const_a, const_b


def _long_table(
    measure: str,
    taps_a: list[dict],
    taps_b: list[dict],
    cols: dict[str, np.ndarray],
    const_a: np.ndarray,
    const_b: np.ndarray,
) -> pd.DataFrame:
    ia, ib = np.meshgrid(np.arange(len(taps_a)), np.arange(len(taps_b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    return pd.DataFrame(
        {
            "measure": measure,
            "tap_a": [taps_a[i]["name"] for i in ia],
            "kind_a": [taps_a[i]["kind"] for i in ia],
            "index_a": ia,
            "tap_b": [taps_b[j]["name"] for j in ib],
            "kind_b": [taps_b[j]["kind"] for j in ib],
            "index_b": ib,
            **{k: np.asarray(v).ravel() for k, v in cols.items()},
            "constant": const_a[ia] | const_b[ib],
        }
    )


def _null_floor(null_sd: np.ndarray, constant: np.ndarray) -> float | None:
    """The protocol's null floor: NULL_Z × the median null SD over the cells (a self diagonal and constant cells,
    whose null SD is 0 by construction, excluded) — cells below it cannot be told from independent
    representations."""
    sd = np.asarray(null_sd, dtype=np.float64)
    sd = sd[np.isfinite(sd) & ~np.broadcast_to(constant, sd.shape)]
    return float(NULL_Z * np.median(sd)) if sd.size else None


class TapMismatchError(ValueError):
    """Two models compared block by block expose different taps (not two checkpoints of one architecture)."""


def per_block_cka(
    cross: pd.DataFrame, taps: pd.DataFrame, kinds: tuple[str, ...] = BLOCK_OUTPUT_KINDS
) -> pd.DataFrame:
    """Per-block CKA of two checkpoints of one architecture (Fig 12, App. G), from their cross-CKA table.

    `cross` is `cka_from_caches(reference, other)`'s table, `taps` the reference's taps table. Keeps the
    diagonal (each tap against the same tap of the other model) for the block-output kinds, in forward order,
    with `depth` = position among those taps scaled to 0..1.
    """
    names_a = cross.drop_duplicates("index_a").sort_values("index_a")["tap_a"].tolist()
    names_b = cross.drop_duplicates("index_b").sort_values("index_b")["tap_b"].tolist()
    if names_a != names_b:
        only_a = sorted(set(names_a) - set(names_b))[:5]
        only_b = sorted(set(names_b) - set(names_a))[:5]
        raise TapMismatchError(
            f"per-block CKA needs the same taps in both models ({len(names_a)} vs {len(names_b)} taps; "
            f"only in the reference: {only_a}, only in the other: {only_b}); compare different architectures "
            "with cka.pairs instead"
        )
    diag = _per_block_rows(cross, kinds)
    block = taps.set_index("name")["block"]
    n = len(diag)
    return pd.DataFrame(
        {
            "tap": diag["tap_a"].to_numpy(),
            "kind": diag["kind_a"].to_numpy(),
            "block": pd.array([block.get(t) for t in diag["tap_a"]], dtype="Int64"),
            "depth": np.arange(n) / max(n - 1, 1),
            "cka": diag["cka"].to_numpy(),
            "std": diag["cka_std"].to_numpy(),
            "se": diag["cka_se"].to_numpy() if "cka_se" in diag else np.nan,
        }
    )


def _per_block_rows(cross: pd.DataFrame, kinds: tuple[str, ...]) -> pd.DataFrame:
    """The cells of a cross-CKA table a per-block table keeps: each block-output tap against the same tap."""
    diag = cross[(cross["tap_a"] == cross["tap_b"]) & cross["kind_a"].isin(kinds)]
    return diag.sort_values("index_a")


def per_block_groups(
    cross: pd.DataFrame, groups: CkaGroups, kinds: tuple[str, ...] = BLOCK_OUTPUT_KINDS
) -> CkaGroups:
    """The jackknife groups of `per_block_cka(cross, …)`'s table: the cross table's groups on the kept taps
    (n × n, in the table's order; its values are the diagonal)."""
    diag = _per_block_rows(cross, kinds)
    return groups.take(diag["index_a"].to_numpy(), diag["index_b"].to_numpy())
