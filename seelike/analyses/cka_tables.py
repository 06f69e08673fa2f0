"""CKA tables from activation caches (no model rerun), tidy and with the settings that made them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seelike.analyses.cache import check_compatible, load_packed_grams, read_cache_meta
from seelike.cka import MIN_BATCH, CkaAccumulator
from seelike.device import exact_fp32
from seelike.models.taps import BLOCK_OUTPUT_KINDS

log = logging.getLogger(__name__)


# A cell is distinguishable from its permutation null when it lies this many null SDs above the null mean.
NULL_Z = 3.0


@exact_fp32()
def cka_from_caches(
    cache_a: str | Path,
    cache_b: str | Path,
    device: str | torch.device = "cpu",
    permutations: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Minibatch CKA of every tap pair of two cached models (a == b: self-similarity).

    Returns a long table and metadata (plan, sample hash, dropped minibatches, constant taps). One row per tap
    pair: `cka` (mean over repeats), `cka_std` / `cka_min` / `cka_max` over repeats, `cka_se` (standard
    error of `cka`: the delete-one-minibatch jackknife SE of each repeat, combined as √Σ SE²ᵣ / R), the
    permutation null — `permutations` draws of the same statistic with the second model's images permuted
    within each minibatch, from the cached Grams (no forward pass) — as `null_mean`, `null_sd`, `null_z` =
    (cka − null_mean) / null_sd and the one-sided `p_value` = (1 + #{null ≥ cka}) / (permutations + 1)
    (NaN without permutations, and on a self-similarity diagonal), and the `constant` flags.
    """
    device = torch.device(device)
    meta_a, meta_b = read_cache_meta(cache_a), read_cache_meta(cache_b)
    check_compatible(meta_a, meta_b)
    same = Path(cache_a).resolve() == Path(cache_b).resolve()
    plan = meta_a["plan"]
    taps_a, taps_b = meta_a["taps"], meta_b["taps"]
    per_repeat, ses, nulls, dropped = [], [], [], []
    const_a = np.zeros(len(taps_a), bool)
    const_b = np.zeros(len(taps_b), bool)
    for r in range(plan["repeats"]):
        acc = CkaAccumulator(
            len(taps_a), len(taps_b), device=device, permutations=permutations, seed=plan["seed"]
        )
        for b, n in enumerate(meta_a["batch_sizes"]):
            if n < MIN_BATCH:
                acc.dropped.append(b)
                continue
            # memory-mapped packed Grams: the accumulator reads them a chunk of taps at a time
            ga = load_packed_grams(cache_a, r, b)
            gb = None if same else load_packed_grams(cache_b, r, b)
            acc.add(ga, gb, batch_id=b)
        if acc.dropped:
            log.warning(
                "repeat %d: dropped minibatch(es) %s with fewer than %d images",
                r,
                acc.dropped,
                MIN_BATCH,
            )
            dropped.append({"repeat": r, "batches": acc.dropped})
        per_repeat.append(acc.result())
        ses.append(acc.jackknife_se())
        nulls.append(acc.null())
        da, db = acc.degenerate()
        const_a |= da
        const_b |= db
    stack = np.stack(per_repeat)
    value = stack.mean(0)
    se = np.sqrt((np.stack(ses) ** 2).sum(0)) / len(ses)
    null = np.stack(nulls).mean(0)  # (permutations, Tₐ, T_b): the null of the mean over repeats
    if permutations:
        null_mean = null.mean(0)
        null_sd = null.std(0, ddof=1) if permutations > 1 else np.full_like(value, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            null_z = (value - null_mean) / null_sd
        p_value = (1 + (null >= value[None]).sum(0)) / (permutations + 1)
    else:
        null_mean = null_sd = null_z = p_value = np.full_like(value, np.nan)
    if same:  # a tap against itself is 1 by construction: no null to test against
        for arr in (null_mean, null_sd, null_z, p_value):
            np.fill_diagonal(arr, np.nan)
    ia, ib = np.meshgrid(np.arange(len(taps_a)), np.arange(len(taps_b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    df = pd.DataFrame(
        {
            "tap_a": [taps_a[i]["name"] for i in ia],
            "kind_a": [taps_a[i]["kind"] for i in ia],
            "index_a": ia,
            "tap_b": [taps_b[j]["name"] for j in ib],
            "kind_b": [taps_b[j]["kind"] for j in ib],
            "index_b": ib,
            "cka": value.ravel(),
            "cka_std": (
                stack.std(0, ddof=1) if len(stack) > 1 else np.zeros_like(stack[0])
            ).ravel(),
            "cka_min": stack.min(0).ravel(),
            "cka_max": stack.max(0).ravel(),
            "cka_se": se.ravel(),
            "null_mean": np.asarray(null_mean).ravel(),
            "null_sd": np.asarray(null_sd).ravel(),
            "null_z": np.asarray(null_z).ravel(),
            "p_value": np.asarray(p_value).ravel(),
            "constant": const_a[ia] | const_b[ib],
        }
    )
    constant = [taps_a[i]["name"] for i in np.flatnonzero(const_a)]
    constant_b = [taps_b[j]["name"] for j in np.flatnonzero(const_b)]
    if constant or constant_b:
        log.warning("constant taps (CKA undefined, reported 0): %s %s", constant, constant_b)
    meta = {
        "model_a": meta_a["model_name"],
        "model_b": meta_b["model_name"],
        "plan": plan,
        "samples_hash": plan["samples_hash"],
        "estimator": "minibatch linear CKA, unbiased HSIC (Song et al. 2012), ratio of means (Nguyen et al. 2021)",
        "uncertainty": {
            "cka_se": "delete-one-minibatch jackknife of the ratio of means, per repeat; √Σ SE²ᵣ / R",
            "permutations": int(permutations),
            "null": "second model's images permuted within each minibatch (P L Pᵀ), seeded by "
            "(plan seed, minibatch); null of the mean over repeats",
            "null_z_threshold": NULL_Z,
            "null_floor": _null_floor(null_sd, same),
        },
        "dropped_batches": dropped,
        "constant_taps_a": constant,
        "constant_taps_b": constant_b,
        "n_taps_a": len(taps_a),
        "n_taps_b": len(taps_b),
    }
    return df, meta


def _null_floor(null_sd: np.ndarray, same: bool) -> float | None:
    """The protocol's null floor: NULL_Z × the median null SD over the cells (a self diagonal excluded) —
    cells below it cannot be told from independent representations."""
    sd = np.asarray(null_sd, dtype=np.float64)
    sd = sd[np.isfinite(sd)]
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
    diag = cross[(cross["tap_a"] == cross["tap_b"]) & cross["kind_a"].isin(kinds)]
    diag = diag.sort_values("index_a")
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
