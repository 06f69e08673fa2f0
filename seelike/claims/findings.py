"""The claims table: one row per testable finding of Raghu et al. 2021 (figure, claim, model, metric, value, seen,
note), assembled from `seelike.claims.metrics`. `seen` is True / False where one number (or a comparison of two
models) decides the finding, None for descriptive numbers and where the decision needs something this run lacks
(no ViT, no CNN, no reference model, too few head subsets, an undefined value). `robust` and `measures` read the
Fig 1 and Fig 2 findings again under the other similarity measures (`_robustness`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seelike.analyses.replicates import CkaGroups, Interval, aligned
from seelike.claims.metrics import (
    LOCAL_FRACTION,
    LOWEST_QUARTER,
    NEXT_THIRD_END,
    attention_early_late,
    block_output_cka,
    cross_cka_alignment,
    cross_cka_alignment_of,
    erf_first_stage_ratio,
    erf_growth,
    head_subset_trend,
    head_subset_trend_of,
    localisation_stats,
    log_ratio,
    no_skip_partition,
    no_skip_partition_of,
    per_block_thirds,
    per_block_thirds_of,
    probe_depth,
    probe_depth_se,
    probe_gap,
    self_cka_thirds,
    self_cka_thirds_of,
    skip_ratio_summary,
    stage_cka,
    stage_cka_of,
    third_size,
)
from seelike.claims.table import (
    COLUMNS,
    SEEN_SE,
    ClaimInputs,
    Rows,
    cka_interval,
    cka_se,
    combined_se,
    exceeds,
    mean_se,
    measure_inputs,
    measure_verdict,
    other_measures,
)
from seelike.tables import cka_array, primary_aggregation, probe_shots


def _vit_cnn_pairs(inp: ClaimInputs, models: Sequence[str]) -> list[tuple[str, str]]:
    """(ViT, CNN) pairs among `models` for the ViT-vs-CNN comparisons: the configured cross pairs (`cross_cka`
    keys) with one ViT and one CNN, else every standard ViT × CNN (models with `remove_skip` left out)."""
    pairs = [
        (a, b) if inp.is_vit(a) else (b, a)
        for a, b in inp.cross_cka
        if (inp.is_vit(a) and inp.is_cnn(b)) or (inp.is_cnn(a) and inp.is_vit(b))
    ]
    if not pairs:
        std = [m for m in models if m not in inp.no_skip]
        pairs = [(v, c) for v in std if inp.is_vit(v) for c in std if inp.is_cnn(c)]
    return [(v, c) for v, c in pairs if v in models and c in models]


# Fig 1 is read twice: on every tap, and on block outputs only (BLOCK_OUTPUT_KINDS: ViT embedding and block
# outputs, CNN stem and unit outputs), so that the sub-layer taps (norms, branches) cannot make one model look
# more or less uniform than the other. Metric suffix and note of each reading.
_FIG1_READINGS = (
    ("", "all taps"),
    ("_block_outputs", "block outputs (embed / stem, block / unit outputs)"),
)


def _complete(df: pd.DataFrame) -> bool:
    """Every cell of a long table has a value or is a constant tap's (left out as undefined): a measure computed
    only for some tap pairs (bures: block outputs by default) cannot be read on the others."""
    ok = np.isfinite(df["cka"].to_numpy(dtype=np.float64))
    if "constant" in df:
        ok |= df["constant"].to_numpy(bool)
    return bool(ok.all())


# ---------------------------------------------------------------- uncertainty of the CKA-derived numbers
# Where a table has jackknife groups (`seelike.analyses.replicates`), an SE is the delete-one-group jackknife of
# the statistic itself (several tables resampled jointly: the same images), and an argmax or rank statistic gets
# a bootstrap interval; without groups, the earlier bounds from the cells' SEs (`cka_se`).
_FIRST, _LAST = "vit_first_two_thirds_best_cnn_cka", "vit_last_third_best_cnn_cka"
_RHO = "spearman_distance_vs_cka"


def _cka_groups(inp: ClaimInputs, section: str, key, df: pd.DataFrame) -> CkaGroups | None:
    """The jackknife groups of a long CKA table of `inp` (section, key), aligned as `cka_array(df)` reads it (df
    may be a part of the table: its block outputs); None without."""
    g = inp.groups.get((section, key))
    return None if g is None else aligned(g, df)


def _head_subset_groups(inp: ClaimInputs, m: str, df: pd.DataFrame) -> CkaGroups | None:
    """A head-subset table's groups: subsets × CNN taps in the order of `subset` and `cnn_tap_order`."""
    g = inp.groups.get(("head_subsets", m))
    if g is None or "cnn_tap_order" not in df:
        return None
    return g if g.shape == (df["subset"].nunique(), df["cnn_tap_order"].nunique()) else None


def _inside(
    ivl: Interval, low: float, high: float, open_low: bool = False, strict: bool = False
) -> bool | None:
    """An interval inside (low, high] (`open_low`: low excluded; `strict`: high excluded too); None when it
    is undefined."""
    if not (math.isfinite(ivl.low) and math.isfinite(ivl.high)):
        return None
    above = ivl.low > low if open_low else ivl.low >= low
    return above and (ivl.high < high if strict else ivl.high <= high)


def _interval_columns(ivl: Interval | None) -> dict[str, float]:
    """A row's `ci_low`, `ci_high` and `se` (the bootstrap draws' SD) from an interval (NaN without)."""
    if ivl is None:
        return {}
    return {"ci_low": ivl.low, "ci_high": ivl.high, "se": ivl.sd}


def _first(f):
    """A metric of one table's matrix as a metric of the list of matrices."""
    return lambda ms: f(ms[0])


def _difference(f, g, key: str):
    """The metric f(first table)[key] − g(second table)[key], as {"d": …}."""
    return lambda ms: {"d": f(ms[:1])[key] - g(ms[1:])[key]}


def _stage_metric(names: list[str]):
    def metric(ms: list[np.ndarray]) -> dict[str, float] | None:
        r = stage_cka_of(ms[0], names)
        return None if r is None else {**r, "diff": r["within"] - r["across"]}

    return metric


def _stage_bound(df: pd.DataFrame) -> list[float]:
    """Within and across: the mean of their cells' SEs; the difference: the two combined as independent."""
    se_w, se_a = mean_se(stage_cka, df, "within", "across")
    return [se_w, se_a, combined_se(se_w, se_a)]


def _partition_metric(names: list[str], block: int):
    return lambda ms: no_skip_partition_of(ms[0], names, block)


def _partition_bound(df: pd.DataFrame, block: int) -> list[float]:
    """Fig 8's partition (within − across) without groups: the two means' cell-SE bounds, combined."""
    se_w, se_a = mean_se(lambda d: no_skip_partition(d, block), df, "within", "across")
    return [combined_se(se_w, se_a)]


def _fig1(inp: ClaimInputs, out: Rows, complete: bool = False) -> None:
    """Fig 1 rows. `complete`: a reading only takes the tables `_complete` on its cells (the other similarity
    measures; linear CKA defines every cell, and its rows stay exactly as they were)."""
    tables = {
        "": dict(inp.self_cka),
        "_block_outputs": {
            m: d for m, df in inp.self_cka.items() if (d := block_output_cka(df)) is not None
        },
    }
    if complete:
        tables = {s: {m: d for m, d in t.items() if _complete(d)} for s, t in tables.items()}
    third_keys = ("lowest_vs_highest_third", "adjacent")
    for suffix, what in _FIG1_READINGS:
        groups = {m: _cka_groups(inp, "self_cka", m, df) for m, df in tables[suffix].items()}
        thirds = {m: self_cka_thirds(df) for m, df in tables[suffix].items()}
        # ([SE of the thirds, SE of adjacent], how)
        thirds_se = {
            m: cka_se(_first(self_cka_thirds_of), [groups[m]], third_keys,
                      mean_se(self_cka_thirds, df, *third_keys))
            for m, df in tables[suffix].items()
        }  # fmt: skip
        for m, t in thirds.items():
            claim = (
                "ViT layers are uniform: lowest and highest third alike"
                if inp.is_vit(m)
                else f"{inp.cnn_name(m)} layers: lowest vs highest third (the paper: less alike than a ViT's)"
            )
            n = int(t["n_taps"])
            (se_third, se_adjacent), how = thirds_se[m]
            note = f"{what}: {n} taps; thirds = first/last {third_size(n)} taps; {how}"
            out.add(
                "1", claim, m, f"cka_lowest_vs_highest_third{suffix}", t["lowest_vs_highest_third"],
                note=note, se=se_third,
            )  # fmt: skip
            out.add(
                "1", claim, m, f"cka_adjacent_taps{suffix}", t["adjacent"], se=se_adjacent,
                note=f"{what}: mean CKA of taps i, i+1; {how}",
            )  # fmt: skip
        for m, df in tables[suffix].items():
            if not inp.is_cnn(m) or (s := stage_cka(df)) is None:
                continue
            c = f"{inp.cnn_name(m)} has distinct stages: taps alike within a stage, less across stages"
            (se_w, se_a, se), how = cka_se(
                _stage_metric(cka_array(df)[1]), [groups[m]], ("within", "across", "diff"),
                _stage_bound(df),
            )  # fmt: skip
            out.add(
                "1", c, m, f"cka_within_stage{suffix}", s["within"],
                note=f"{what}: tap pairs i<j in one stage; {how}", se=se_w,
            )  # fmt: skip
            out.add(
                "1", c, m, f"cka_across_stage{suffix}", s["across"],
                note=f"{what}: tap pairs in different stages; {how}", se=se_a,
            )  # fmt: skip
            diff = s["within"] - s["across"]
            out.add(
                "1", c, m, f"cka_within_minus_across_stage{suffix}", diff, se=se,
                seen=exceeds(diff, se), note=f"{what}; {how}; seen: > 0 by {SEEN_SE:g} SE",
            )  # fmt: skip
        pairs = _vit_cnn_pairs(inp, list(thirds))
        metric = f"cka_lowest_vs_highest_third_vit_minus_cnn{suffix}"
        for v, c in pairs:
            claim = (
                "ViT layers are more uniform (lowest and highest third alike) than "
                f"{inp.cnn_name(c)} layers"
            )
            diff = thirds[v]["lowest_vs_highest_third"] - thirds[c]["lowest_vs_highest_third"]
            # both self tables come from the same images: resampled jointly, their correlation kept
            (se,), how = cka_se(
                _difference(_first(self_cka_thirds_of), _first(self_cka_thirds_of), third_keys[0]),
                [groups[v], groups[c]], ("d",),
                [combined_se(thirds_se[v][0][0], thirds_se[c][0][0])],
            )  # fmt: skip
            out.add(
                "1", claim, f"{v} vs {c}", metric, diff, seen=exceeds(diff, se), se=se,
                note=f"{what}; {how}; seen: > 0 by {SEEN_SE:g} SE",
            )  # fmt: skip
        if not pairs and thirds and not suffix:
            out.add(
                "1", "ViT layers are more uniform (lowest and highest third alike) than CNN layers",
                "-", metric, math.nan, note="needs a ViT and a CNN in the config",
            )  # fmt: skip


def _fig2(inp: ClaimInputs, out: Rows, complete: bool = False) -> None:
    """Fig 2 rows; `complete` as for `_fig1`."""
    for (a, b), df in inp.cross_cka.items():
        if complete and not _complete(df):
            continue
        if inp.is_vit(a) and inp.is_cnn(b):
            cnn_side = "b"
        elif inp.is_cnn(a) and inp.is_vit(b):
            cnn_side = "a"
        else:
            continue
        r = cross_cka_alignment(df, cnn_side=cnn_side)
        v, c = (b, a) if cnn_side == "a" else (a, b)
        pair, cnn = f"{v} vs {c}", inp.cnn_name(c)
        groups = [_cka_groups(inp, "cross_cka", (a, b), df)]

        def alignment(ms: list[np.ndarray], flip: bool = cnn_side == "b") -> dict[str, float]:
            r = cross_cka_alignment_of(ms[0].T if flip else ms[0])
            return {**r, "diff": r[_FIRST] - r[_LAST]}

        # the depths are means of argmaxes: a bootstrap interval, which must lie inside the band
        lo_key, up_key = "cnn_lower_half_best_vit_depth", "cnn_upper_half_best_vit_depth"
        lo, up = r[lo_key], r[up_key]
        got = cka_interval(alignment, groups, (lo_key, up_key))
        if got is None:
            ivl, how = {}, "no interval (no jackknife groups): the point value decides"
            seen_lo, seen_up = lo <= LOWEST_QUARTER, LOWEST_QUARTER < up <= NEXT_THIRD_END
        else:
            ivl, how = got
            seen_lo = _inside(ivl[lo_key], -math.inf, LOWEST_QUARTER)
            seen_up = _inside(ivl[up_key], LOWEST_QUARTER, NEXT_THIRD_END, open_low=True)
        out.add(
            "2", f"lower half of the {cnn} matches the lowest quarter of the ViT", pair, lo_key, lo,
            seen=seen_lo, **_interval_columns(ivl.get(lo_key)),
            note=f"mean relative depth (0..1) of the best-matching ViT tap; {how} (se: its SD); "
            "seen: interval <= 0.25",
        )  # fmt: skip
        out.add(
            "2", f"top half of the {cnn} matches the next third of the ViT", pair, up_key, up,
            seen=seen_up, **_interval_columns(ivl.get(up_key)),
            note=f"{how} (se: its SD); seen: interval inside (0.25, {NEXT_THIRD_END:.2f}]",
        )  # fmt: skip
        last, first = r[_LAST], r[_FIRST]
        (se_first, se_last, se), how = cka_se(
            alignment, groups, (_FIRST, _LAST, "diff"), [math.nan] * 3
        )
        claim = f"last third of the ViT is unlike any {cnn} layer"
        out.add(
            "2", claim, pair, _FIRST, first, se=se_first,
            note=f"per ViT tap: max CKA over {cnn} taps, averaged; {how}",
        )  # fmt: skip
        out.add(
            "2", claim, pair, _LAST, last, se=se_last, seen=exceeds(first - last, se),
            note=f"first two thirds - last = {first - last:.3g} ± {se:.2g} (one table, jointly); "
            f"seen: below the first two thirds' value by {SEEN_SE:g} SE",
        )  # fmt: skip


def _fig3_5(inp: ClaimInputs, out: Rows) -> None:
    for m, (df, uniform) in inp.attention.items():
        r = attention_early_late(df, uniform)
        thr = f"local = mean distance < {LOCAL_FRACTION:g} × uniform ({LOCAL_FRACTION * uniform:.1f} px)"
        # a head is local / global only by SEEN_SE SEs of its mean over images; the interval runs from the heads
        # decided so to those not decided otherwise, and an undecided head counts against each verdict
        k = f"{SEEN_SE:g} SE"
        c1 = "lower layers mix local and global heads"
        out.add(
            "3-4", c1, m, "uniform_attention_px", uniform, se=0.0,
            note="uniform attention over the grid (geometry: exact)",
        )  # fmt: skip
        und = int(r["early_undecided"])
        out.add(
            "3-4", c1, m, "early_global_heads", r["early_global_heads"],
            ci_low=r["early_global_sure"], ci_high=r["early_global_sure"] + und,
            note=f"blocks 0, 1; not local; {und} heads within {k} of the threshold",
        )  # fmt: skip
        out.add(
            "3-4", c1, m, "early_local_heads", r["early_local_heads"],
            ci_low=r["early_local_sure"], ci_high=r["early_local_sure"] + und,
            seen=r["early_local_sure"] > 0 and r["early_global_sure"] > 0,
            note=f"blocks 0, 1; {thr}; interval: heads local by {k} .. not global by {k} ({und} undecided); "
            f"seen: a head local and a head global, each by {k}",
        )  # fmt: skip
        und = int(r["late_undecided"])
        out.add(
            "3-4", "higher layers: all heads global", m, "late_local_heads", r["late_local_heads"],
            ci_low=r["late_local_sure"], ci_high=r["late_local_sure"] + und,
            seen=r["late_global_sure"] == r["late_heads"],
            note=f"last two blocks, {int(r['late_heads'])} heads, {und} within {k} of the threshold; "
            f"seen: every head global by {k}",
        )  # fmt: skip
        c3 = "head distances spread more in lower than in higher layers"
        spread_note = "SE: delta method on the two extreme heads, averaged over the blocks"
        out.add(
            "3-4", c3, m, "early_spread_px", r["early_spread_px"], se=r["early_spread_se"],
            note=f"max - min, blocks 0, 1; {spread_note}",
        )  # fmt: skip
        diff = r["early_spread_px"] - r["late_spread_px"]
        se = combined_se(r["early_spread_se"], r["late_spread_se"])
        out.add(
            "3-4", c3, m, "late_spread_px", r["late_spread_px"], se=r["late_spread_se"],
            seen=exceeds(diff, se),
            note=f"last two blocks; early - late = {diff:.3g} ± {se:.2g}; seen: < early by {k}",
        )  # fmt: skip
    cnns = [m for m in inp.families if inp.is_cnn(m)]
    for m, df in inp.head_subsets.items():
        r = head_subset_trend(df)
        cnn = inp.head_subset_cnn.get(m) or (cnns[0] if len(cnns) == 1 else None)
        cnn_name = inp.cnn_name(cnn) if cnn else "CNN"
        claim = f"CKA with lower {cnn_name} units falls as head subsets get more global"
        n = int(r["n_subsets"])
        groups = [_head_subset_groups(inp, m, df)]
        dist = df.groupby("subset", sort=True)["subset_mean_distance_px"].first().to_numpy()
        trend = _first(lambda m, dist=dist: head_subset_trend_of(dist, m))
        ends = ("most_local_subset_cka", "most_global_subset_cka")
        ses, how = cka_se(trend, groups, ends, mean_se(head_subset_trend, df, *ends))
        for key, se in zip(ends, ses, strict=True):
            out.add("5", claim, m, key, r[key], se=se, note=f"CKA averaged over CNN taps; {how}")
        rho, got = r["spearman_distance_vs_cka"], cka_interval(trend, groups, (_RHO,))
        if got is None:
            ivl, how, seen = None, "no interval (no jackknife groups)", rho < 0
        else:
            ivl, how = got[0][_RHO], got[1]
            seen = _inside(ivl, -math.inf, 0.0, strict=True)
        out.add(
            "5", claim, m, _RHO, rho, seen=seen if n >= 3 else None, **_interval_columns(ivl),
            note=f"{n} subsets; CKA averaged over CNN taps; {how}; seen: "
            + ("interval < 0" if ivl else "< 0") + " (needs >= 3 subsets)",
        )  # fmt: skip


def _erf_sizes(df: pd.DataFrame) -> list[str]:
    """The ERF size columns of a table (`r50_px`, `r90_px`, … from `erf.quantiles`), by quantile."""
    return sorted(
        (c for c in df.columns if re.fullmatch(r"r\d+_px", c)), key=lambda c: int(c[1:-3])
    )


def _beyond(diff: float, se: float) -> bool | None:
    """`diff` > 0 by `SEEN_SE` SEs; None (undecided) when the SE is unknown: Figs 6, 9, 10 decide only with one."""
    return exceeds(diff, se) if math.isfinite(se) else None


def _fig6(inp: ClaimInputs, out: Rows) -> None:
    sizes = {m: _erf_sizes(df) for m, df in inp.erf.items()}
    # per model: the first quantile (r50 by default, the one Fig 6 prints); across models: every quantile, as a
    # ViT's post-residual map puts much of its mass on the centre patch (the skip) and the rest far away
    growth = {m: erf_growth(df, sizes[m][0]) for m, df in inp.erf.items() if sizes[m]}
    k = f"{SEEN_SE:g} SE"
    jk = "delete-one-group jackknife over images (ERF table)"
    for m, by_res in growth.items():
        q = sizes[m][0][:-3]
        for res, g in by_res.items():
            grows = inp.is_cnn(m)
            claim = (
                f"{inp.cnn_name(m)} ERFs grow with depth" if grows else f"ERF size ({q}) by depth"
            )
            out.add("6", claim, m, f"{q}_px_first_{res}", g["first"], se=g["first_se"],
                    note=f"first tap; SE: {jk}")  # fmt: skip
            out.add("6", claim, m, f"{q}_px_last_{res}", g["last"], se=g["last_se"],
                    note=f"last tap; SE: {jk}")  # fmt: skip
            ratio, se = g["last_over_first"], g["last_over_first_se"]
            out.add(
                "6", claim, m, f"{q}_last_over_first_{res}", ratio, se=se,
                seen=_beyond(ratio - 1, se) if grows else None,
                note=f"Spearman(depth, {q}) = {g['spearman_depth']:.2f}; SE: jackknife of the ratio itself over "
                "the same image groups" + (f"; seen: > 1 by {k}" if grows else ""),
            )  # fmt: skip
    for v, c in _vit_cnn_pairs(inp, list(growth)):
        for size in (s for s in sizes[v] if s in sizes[c]):
            r = erf_first_stage_ratio(inp.erf[v], inp.erf[c], size)
            if r is None:
                continue
            how = (
                f"joint jackknife over the same {int(r['n_groups'])} image groups of both models"
                if r["joint"]
                else "delta method on the log ratio, the two models' SEs taken as independent"
            )
            out.add(
                "6", f"ViT ERFs are larger than {inp.cnn_name(c)} ERFs in early layers", f"{v} vs {c}",
                f"{size[:-3]}_vit_first_over_cnn_first_stage_post", r["ratio"], se=r["se"],
                seen=_beyond(r["ratio"] - 1, r["se"]),
                note=f"ViT block 0 post-attention residual over the CNN's first stage output; SE: {how}; "
                f"seen: > 1 by {k}",
            )  # fmt: skip


def _above_one(ratio: float, log_se: float) -> bool:
    """A ratio > 1 by `SEEN_SE` SEs of its logarithm (`exceeds` on log ratio)."""
    return ratio > 0 and exceeds(math.log(ratio), log_se)


def _fig7(inp: ClaimInputs, out: Rows) -> None:
    summ = {m: skip_ratio_summary(df) for m, df in inp.skip.items()}
    # SEs over images: of a mean of rows, the mean of their SEs (skip_ratio_summary); of a ratio, the delta
    # method on its log (log_ratio), the `se` column holding ratio × SE(log ratio)
    k = f"{SEEN_SE:g} SE"
    for m, s in summ.items():
        inf = f"{int(s['n_inf'])} infinite ratios left out; " if s["n_inf"] else ""
        if "patch_mean" in s:
            out.add(
                "7", "‖z‖/‖f(z)‖ by token type", m, "ratio_patch_mean", s["patch_mean"],
                se=s["patch_mean_se"], note=f"{inf}SE: mean of the per-token SEs over images",
            )  # fmt: skip
            ratio, lse = log_ratio(
                s["patch_late"], s["patch_late_se"], s["patch_early"], s["patch_early_se"]
            )
            out.add(
                "7", "ViT skip ratio rises in later blocks (patch tokens)", m, "ratio_patch_late_over_early",
                ratio, se=ratio * lse, seen=_above_one(ratio, lse),
                note=f"early {s['patch_early']:.3g}, late {s['patch_late']:.3g} (first/last half of blocks); "
                f"SE: delta method on the log ratio; seen: > 1 by {k} (log)",
            )  # fmt: skip
        if "cls_mean" in s and "patch_mean" in s:
            ratio, lse = log_ratio(
                s["cls_early"], s["cls_early_se"], s["patch_early"], s["patch_early_se"]
            )
            fall, fse = log_ratio(
                s["cls_early"], s["cls_early_se"], s["cls_late"], s["cls_late_se"]
            )
            out.add(
                "7", "CLS token differs: high ratio in lower blocks, falling later", m,
                "ratio_cls_over_patch_early", ratio, se=ratio * lse,
                seen=_above_one(ratio, lse) and _above_one(fall, fse),
                note=f"CLS early {s['cls_early']:.3g}, late {s['cls_late']:.3g} (early / late = {fall:.3g} ± "
                f"{fall * fse:.2g}); seen: both ratios > 1 by {k} (log)",
            )  # fmt: skip
        if "spatial_mean" in s:
            out.add(
                "7", "‖z‖/‖f(z)‖ by token type", m, "ratio_spatial_mean", s["spatial_mean"],
                se=s["spatial_mean_se"], note=f"{inf}SE: mean of the per-block SEs over images",
            )  # fmt: skip
    for v, c in _vit_cnn_pairs(inp, list(summ)):
        if "patch_mean" not in summ[v] or "spatial_mean" not in summ[c]:
            continue
        sv, sc = summ[v], summ[c]
        ratio, lse = log_ratio(
            sv["patch_mean"], sv["patch_mean_se"], sc["spatial_mean"], sc["spatial_mean_se"]
        )
        out.add(
            "7", f"skip ratio is higher in ViT than in {inp.cnn_name(c)}", f"{v} vs {c}",
            "ratio_vit_patch_over_cnn", ratio, se=ratio * lse, seen=_above_one(ratio, lse),
            note=f"mean over blocks; SE: delta method on the log ratio; seen: > 1 by {k} (log)",
        )  # fmt: skip


def _fig8(inp: ClaimInputs, out: Rows) -> None:
    claim = "no skip in block i: representations split at block i"
    for m, (block, ref) in inp.no_skip.items():
        if m not in inp.self_cka:
            continue
        df = inp.self_cka[m]
        p = no_skip_partition(df, block)
        groups = _cka_groups(inp, "self_cka", m, df)
        part = _partition_metric(cka_array(df)[1], block)
        (se_p,), how = cka_se(part, [groups], ("partition",), _partition_bound(df, block))
        note = f"within-side minus across-boundary mean CKA; {how}"
        out.add("8", claim, m, f"partition_at_block_{block}", p["partition"], se=se_p, note=note)
        if ref is None or ref not in inp.self_cka:
            out.add(
                "8", claim, m, "partition_minus_reference", math.nan,
                note="no reference model of the same arch without remove_skip",
            )  # fmt: skip
            continue
        df_ref = inp.self_cka[ref]
        pr = no_skip_partition(df_ref, block)
        diff = p["partition"] - pr["partition"]
        part_ref = _partition_metric(cka_array(df_ref)[1], block)
        # the same images in both self tables: resampled jointly, their correlation kept
        (se,), how = cka_se(
            _difference(part, part_ref, "partition"),
            [groups, _cka_groups(inp, "self_cka", ref, df_ref)], ("d",),
            [combined_se(se_p, *_partition_bound(df_ref, block))],
        )  # fmt: skip
        out.add(
            "8", claim, f"{m} vs {ref}", "partition_minus_reference", diff, se=se,
            seen=exceeds(diff, se),
            note=f"reference {ref} partition {pr['partition']:.3g} at the same block; {how}; "
            f"seen: > 0 by {SEEN_SE:g} SE",
        )  # fmt: skip


def _less_local(cnn: str) -> str:
    return f"{cnn} positions localise much less than ViT tokens"


def _localisation_uncertainty(df: pd.DataFrame) -> dict[str, float]:
    """The model-level uncertainty the localisation table carries (`summary_*` columns of
    `seelike.analyses.localisation.SUMMARY_COLUMNS`, one value per table), without the prefix; NaN without."""
    keys = ("own_se", "other_se", "own_minus_other_se", "own_is_argmax_se", "own_is_argmax_ci_low",
            "own_is_argmax_ci_high", "n_groups")  # fmt: skip
    return {
        key: float(df[f"summary_{key}"].iloc[0]) if f"summary_{key}" in df and len(df) else math.nan
        for key in keys
    }


def _fig9_10(inp: ClaimInputs, out: Rows) -> None:
    stats = {m: localisation_stats(df) for m, df in inp.localisation.items()}
    unc = {m: _localisation_uncertainty(df) for m, df in inp.localisation.items()}
    k = f"{SEEN_SE:g} SE"
    for m, s in stats.items():
        u = unc[m]
        vit = inp.is_vit(m)
        claim = (
            "ViT interior tokens match their own input patch"
            if vit
            else _less_local(inp.cnn_name(m))
        )
        jk = f"SE: jackknife of the mean itself over {u['n_groups']:.0f} groups of minibatches"
        n = f"{int(s['n_interior'])} interior positions"
        out.add("9-10", claim, m, "own_patch_cka", s["own"], se=u["own_se"], note=f"{n}; {jk}")
        out.add(
            "9-10", claim, m, "other_patch_cka", s["other"], se=u["other_se"],
            note=f"mean over the other patches; {jk}",
        )  # fmt: skip
        lo, hi = u["own_is_argmax_ci_low"], u["own_is_argmax_ci_high"]
        seen = None
        if vit and math.isfinite(lo):
            seen = lo > 0.5
        out.add(
            "9-10", claim, m, "own_is_argmax_rate", s["own_is_argmax"], se=u["own_is_argmax_se"],
            ci_low=lo, ci_high=hi, seen=seen,
            note="fraction whose best patch is their own; 95% bootstrap interval over groups of minibatches "
            "(se: SD of the draws)" + ("; seen: interval above 0.5" if vit else ""),
        )  # fmt: skip
    # ViT minus CNN: the tables keep each model's SEs, not its replicates, so the two combine as independent,
    # √(SE_v² + SE_c²); both maps come from the same images, which correlate the two estimates positively if at
    # all, so this overstates the SE of the difference (conservative)
    for v, c in _vit_cnn_pairs(inp, list(stats)):
        claim = _less_local(inp.cnn_name(c))
        d = stats[v]["own_is_argmax"] - stats[c]["own_is_argmax"]
        se = combined_se(unc[v]["own_is_argmax_se"], unc[c]["own_is_argmax_se"])
        out.add(
            "9-10", claim, f"{v} vs {c}", "own_is_argmax_vit_minus_cnn", d, se=se, seen=_beyond(d, se),
            note="SE: the two bootstrap SDs combined as independent (same images: conservative); "
            f"seen: > 0 by {k}",
        )  # fmt: skip
        mv = stats[v]["own"] - stats[v]["other"]
        mc = stats[c]["own"] - stats[c]["other"]
        se = combined_se(unc[v]["own_minus_other_se"], unc[c]["own_minus_other_se"])
        out.add(
            "9-10", claim, f"{v} vs {c}", "own_minus_other_vit_minus_cnn", mv - mc, se=se,
            seen=_beyond(mv - mc, se),
            note="(own - other patch CKA) of the ViT minus the CNN's; SE: each model's jackknife SE of its own "
            f"- other, combined as independent (same images: conservative); seen: > 0 by {k}",
        )  # fmt: skip


def _fig11_13(inp: ClaimInputs, out: Rows) -> None:
    for m, df in inp.probes.items():
        present = set(df["aggregation"])
        agg = primary_aggregation(df)
        if agg is None:
            continue
        shots = probe_shots(df)
        r = probe_depth(df, agg, shots)
        if r is None:
            continue
        # SEs over the test images, the probes as fitted (not over draws of the k-shot training set); a
        # difference of probes scored on the same images is paired per image (probe_contrast)
        claim = "probe accuracy rises with depth"
        note = f"{shots}-shot, {agg}; SE over test images"
        k = f"{SEEN_SE:g} SE"
        e = probe_depth_se(df, agg, shots)
        out.add("11-13", claim, m, "accuracy_first_tap", r["first"], se=e["first_se"], note=note)
        out.add("11-13", claim, m, "accuracy_middle_tap", r["middle"], se=e["middle_se"], note=note)
        gain, gse = e["last_minus_first"], e["last_minus_first_se"]
        out.add(
            "11-13", claim, m, "accuracy_last_tap", r["last"], se=e["last_se"], seen=exceeds(gain, gse),
            note=f"{note}; last - first = {gain:.3g} ± {gse:.2g} (paired); seen: > 0 by {k}",
        )  # fmt: skip
        if not inp.is_vit(m) or "cls" not in present:
            continue
        mean_agg = "mean_spatial" if "mean_spatial" in present else "mean_all"
        g = probe_gap(df, "cls", mean_agg, shots)
        if g is None:
            continue
        claim = "ViT CLS token lags the token mean until the last layers"
        out.add(
            "11-13", claim, m, "cls_minus_mean_middle_tap", g["middle"], se=g["middle_se"],
            seen=exceeds(-g["middle"], g["middle_se"]),
            note=f"{shots}-shot, CLS - {mean_agg}, SE paired over test images; seen: < 0 by {k}",
        )  # fmt: skip
        out.add(
            "11-13", claim, m, "cls_minus_mean_last_tap", g["last"], se=g["last_se"],
            seen=exceeds(g["closes"], g["closes_se"]),
            note=f"last - middle gap = {g['closes']:.3g} ± {g['closes_se']:.2g} (paired); seen: gap closes "
            f"(> 0 by {k})",
        )  # fmt: skip


def _fig12(inp: ClaimInputs, out: Rows) -> None:
    claim = "lower layers alike across checkpoints, higher layers diverge"
    for (a, b), df in inp.per_block.items():
        r = per_block_thirds(df)
        pair = f"{a} vs {b}"
        groups = inp.groups.get(("per_block", (a, b)))
        if groups is not None and groups.shape != (len(df), len(df)):
            groups = None  # not this table's (the cells are its rows, on the diagonal)
        order = np.argsort(df["depth"].to_numpy(dtype=np.float64), kind="stable")

        def thirds(ms: list[np.ndarray], order: np.ndarray = order) -> dict[str, float]:
            t = per_block_thirds_of(np.diagonal(ms[0])[order])
            return {**t, "diff": t["lowest_third"] - t["highest_third"]}

        def bound(df: pd.DataFrame = df) -> list[float]:
            se_lo, se_hi = mean_se(per_block_thirds, df, "lowest_third", "highest_third")
            return [se_lo, se_hi, combined_se(se_lo, se_hi)]

        (se_lo, se_hi, se), how = cka_se(
            thirds, [groups], ("lowest_third", "highest_third", "diff"), bound()
        )
        out.add(
            "12", claim, pair, "cka_lowest_third_blocks", r["lowest_third"],
            note=f"by depth; {how}", se=se_lo,
        )  # fmt: skip
        diff = r["lowest_third"] - r["highest_third"]
        out.add(
            "12", claim, pair, "cka_highest_third_blocks", r["highest_third"], se=se_hi,
            seen=exceeds(diff, se),
            note=f"lowest - highest = {diff:.3g} ± {se:.2g}; seen: below the lowest third by {SEEN_SE:g} SE",
        )  # fmt: skip


# ---------------------------------------------------------------- Figs 1, 2 under the other similarity measures
def _robustness(inp: ClaimInputs, df: pd.DataFrame) -> None:
    """Fill `robust` and `measures` of the Fig 1 and Fig 2 rows: each finding recomputed under every other
    measure of `inp.similarity` by the same `_fig1` / `_fig2` code, matched by (figure, model, metric).

    `measures`: each measure's verdict and value ("n/a" where it cannot decide: no table, or cells it does not
    compute on that reading). `robust`: True when linear CKA and every measure that can decide see the finding,
    False when one of them (linear CKA included) does not, None without a `seen` decision or without another
    measure deciding. Other figures: None and ""."""
    measures = other_measures(inp.similarity)
    if not measures:
        return
    rows_by_measure = {}
    for m in measures:
        rows = Rows()
        minp = measure_inputs(inp, m)
        _fig1(minp, rows, complete=True)
        _fig2(minp, rows, complete=True)
        rows_by_measure[m] = {(r["figure"], r["model"], r["metric"]): r for r in rows.rows}
    for i in df.index[df["figure"].isin(("1", "2"))]:
        key = (df.at[i, "figure"], df.at[i, "model"], df.at[i, "metric"])
        seen = df.at[i, "seen"]
        parts, decisions = [], []
        for m in measures:
            text, decision = measure_verdict(m, rows_by_measure[m].get(key), seen is not None)
            parts.append(text)
            if decision is not None:
                decisions.append(decision)
        df.at[i, "measures"] = "; ".join(parts)
        df.at[i, "robust"] = (bool(seen) and all(decisions)) if decisions else None


def summarise(inp: ClaimInputs) -> pd.DataFrame:
    """The claims table: one row per (figure, model or pair, metric), columns `COLUMNS`. Analyses with no table in
    `inp` contribute no rows. With `inp.similarity`, the Fig 1 and Fig 2 rows also say whether the other
    measures agree (`robust`, `measures`; see `_robustness`)."""
    out = Rows()
    for part in (_fig1, _fig2, _fig3_5, _fig6, _fig7, _fig8, _fig9_10, _fig11_13, _fig12):
        part(inp, out)
    df = pd.DataFrame(out.rows, columns=COLUMNS)
    df["seen"] = df["seen"].astype(object)
    df["robust"] = df["robust"].astype(object)
    _robustness(inp, df)
    return df
