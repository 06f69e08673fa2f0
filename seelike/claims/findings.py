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

from seelike.claims.metrics import (
    LOCAL_FRACTION,
    LOWEST_QUARTER,
    NEXT_THIRD_END,
    attention_early_late,
    block_output_cka,
    cross_cka_alignment,
    erf_growth,
    head_subset_trend,
    localisation_stats,
    no_skip_partition,
    per_block_thirds,
    probe_depth,
    self_cka_thirds,
    skip_ratio_summary,
    stage_cka,
    third_size,
)
from seelike.claims.table import (
    COLUMNS,
    SEEN_SE,
    ClaimInputs,
    Rows,
    combined_se,
    exceeds,
    mean_se,
    measure_inputs,
    measure_verdict,
    other_measures,
)
from seelike.tables import primary_aggregation, probe_shots


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
    for suffix, what in _FIG1_READINGS:
        thirds = {m: self_cka_thirds(df) for m, df in tables[suffix].items()}
        thirds_se = {
            m: mean_se(self_cka_thirds, df, "lowest_vs_highest_third")[0]
            for m, df in tables[suffix].items()
        }
        for m, t in thirds.items():
            claim = (
                "ViT layers are uniform: lowest and highest third alike"
                if inp.is_vit(m)
                else f"{inp.cnn_name(m)} layers: lowest vs highest third (the paper: less alike than a ViT's)"
            )
            n = int(t["n_taps"])
            note = f"{what}: {n} taps; thirds = first/last {third_size(n)} taps"
            out.add(
                "1", claim, m, f"cka_lowest_vs_highest_third{suffix}", t["lowest_vs_highest_third"],
                note=note, se=thirds_se[m],
            )  # fmt: skip
            out.add(
                "1", claim, m, f"cka_adjacent_taps{suffix}", t["adjacent"],
                note=f"{what}: mean CKA of taps i, i+1",
            )  # fmt: skip
        for m, df in tables[suffix].items():
            if not inp.is_cnn(m) or (s := stage_cka(df)) is None:
                continue
            c = f"{inp.cnn_name(m)} has distinct stages: taps alike within a stage, less across stages"
            se_w, se_a = mean_se(stage_cka, df, "within", "across")
            out.add(
                "1", c, m, f"cka_within_stage{suffix}", s["within"],
                note=f"{what}: tap pairs i<j in one stage", se=se_w,
            )  # fmt: skip
            out.add(
                "1", c, m, f"cka_across_stage{suffix}", s["across"],
                note=f"{what}: tap pairs in different stages", se=se_a,
            )  # fmt: skip
            diff, se = s["within"] - s["across"], combined_se(se_w, se_a)
            out.add(
                "1", c, m, f"cka_within_minus_across_stage{suffix}", diff, se=se,
                seen=exceeds(diff, se), note=f"{what}; seen: > 0 by {SEEN_SE:g} SE",
            )  # fmt: skip
        pairs = _vit_cnn_pairs(inp, list(thirds))
        metric = f"cka_lowest_vs_highest_third_vit_minus_cnn{suffix}"
        for v, c in pairs:
            claim = (
                "ViT layers are more uniform (lowest and highest third alike) than "
                f"{inp.cnn_name(c)} layers"
            )
            diff = thirds[v]["lowest_vs_highest_third"] - thirds[c]["lowest_vs_highest_third"]
            se = combined_se(thirds_se[v], thirds_se[c])
            out.add(
                "1", claim, f"{v} vs {c}", metric, diff, seen=exceeds(diff, se), se=se,
                note=f"{what}; seen: > 0 by {SEEN_SE:g} SE",
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
        lo, up = r["cnn_lower_half_best_vit_depth"], r["cnn_upper_half_best_vit_depth"]
        out.add(
            "2", f"lower half of the {cnn} matches the lowest quarter of the ViT", pair,
            "cnn_lower_half_best_vit_depth", lo, seen=lo <= LOWEST_QUARTER,
            note="mean relative depth (0..1) of the best-matching ViT tap; seen: <= 0.25",
        )  # fmt: skip
        out.add(
            "2", f"top half of the {cnn} matches the next third of the ViT", pair,
            "cnn_upper_half_best_vit_depth", up, seen=LOWEST_QUARTER < up <= NEXT_THIRD_END,
            note=f"seen: in (0.25, {NEXT_THIRD_END:.2f}]",
        )  # fmt: skip
        last, first = r["vit_last_third_best_cnn_cka"], r["vit_first_two_thirds_best_cnn_cka"]
        claim = f"last third of the ViT is unlike any {cnn} layer"
        out.add(
            "2", claim, pair, "vit_first_two_thirds_best_cnn_cka", first,
            note=f"per ViT tap: max CKA over {cnn} taps, averaged",
        )  # fmt: skip
        out.add(
            "2", claim, pair, "vit_last_third_best_cnn_cka", last, seen=last < first,
            note="seen: below the first two thirds' value",
        )  # fmt: skip


def _fig3_5(inp: ClaimInputs, out: Rows) -> None:
    for m, (df, uniform) in inp.attention.items():
        r = attention_early_late(df, uniform)
        thr = f"local = mean distance < {LOCAL_FRACTION:g} × uniform ({LOCAL_FRACTION * uniform:.1f} px)"
        c1 = "lower layers mix local and global heads"
        out.add(
            "3-4", c1, m, "uniform_attention_px", uniform, note="uniform attention over the grid"
        )
        out.add(
            "3-4",
            c1,
            m,
            "early_global_heads",
            r["early_global_heads"],
            note="blocks 0, 1; not local",
        )
        out.add(
            "3-4", c1, m, "early_local_heads", r["early_local_heads"],
            seen=r["early_local_heads"] > 0 and r["early_global_heads"] > 0,
            note=f"blocks 0, 1; {thr}; seen: local and global heads both present",
        )  # fmt: skip
        out.add(
            "3-4", "higher layers: all heads global", m, "late_local_heads", r["late_local_heads"],
            seen=r["late_local_heads"] == 0,
            note=f"last two blocks, {int(r['late_heads'])} heads; seen: 0",
        )  # fmt: skip
        c3 = "head distances spread more in lower than in higher layers"
        out.add(
            "3-4", c3, m, "early_spread_px", r["early_spread_px"], note="max - min, blocks 0, 1"
        )
        out.add(
            "3-4", c3, m, "late_spread_px", r["late_spread_px"],
            seen=r["late_spread_px"] < r["early_spread_px"], note="last two blocks; seen: < early",
        )  # fmt: skip
    cnns = [m for m in inp.families if inp.is_cnn(m)]
    for m, df in inp.head_subsets.items():
        r = head_subset_trend(df)
        cnn = inp.head_subset_cnn.get(m) or (cnns[0] if len(cnns) == 1 else None)
        cnn_name = inp.cnn_name(cnn) if cnn else "CNN"
        claim = f"CKA with lower {cnn_name} units falls as head subsets get more global"
        n = int(r["n_subsets"])
        out.add("5", claim, m, "most_local_subset_cka", r["most_local_subset_cka"])
        out.add("5", claim, m, "most_global_subset_cka", r["most_global_subset_cka"])
        out.add(
            "5", claim, m, "spearman_distance_vs_cka", r["spearman_distance_vs_cka"],
            seen=(r["spearman_distance_vs_cka"] < 0) if n >= 3 else None,
            note=f"{n} subsets; CKA averaged over CNN taps; seen: < 0 (needs >= 3 subsets)",
        )  # fmt: skip


def _erf_sizes(df: pd.DataFrame) -> list[str]:
    """The ERF size columns of a table (`r50_px`, `r90_px`, … from `erf.quantiles`), by quantile."""
    return sorted(
        (c for c in df.columns if re.fullmatch(r"r\d+_px", c)), key=lambda c: int(c[1:-3])
    )


def _fig6(inp: ClaimInputs, out: Rows) -> None:
    sizes = {m: _erf_sizes(df) for m, df in inp.erf.items()}
    # per model: the first quantile (r50 by default, the one Fig 6 prints); across models: every quantile, as a
    # ViT's post-residual map puts much of its mass on the centre patch (the skip) and the rest far away
    growth = {m: erf_growth(df, sizes[m][0]) for m, df in inp.erf.items() if sizes[m]}
    for m, by_res in growth.items():
        q = sizes[m][0][:-3]
        for res, g in by_res.items():
            grows = inp.is_cnn(m)
            claim = (
                f"{inp.cnn_name(m)} ERFs grow with depth" if grows else f"ERF size ({q}) by depth"
            )
            out.add("6", claim, m, f"{q}_px_first_{res}", g["first"], note="first tap")
            out.add("6", claim, m, f"{q}_px_last_{res}", g["last"], note="last tap")
            out.add(
                "6", claim, m, f"{q}_last_over_first_{res}", g["last_over_first"],
                seen=(g["last_over_first"] > 1) if grows else None,
                note=f"Spearman(depth, {q}) = {g['spearman_depth']:.2f}" + ("; seen: > 1" if grows else ""),
            )  # fmt: skip
    for v, c in _vit_cnn_pairs(inp, list(growth)):
        for size in (s for s in sizes[v] if s in sizes[c]):
            gv = erf_growth(inp.erf[v], size).get("post")
            gc = erf_growth(inp.erf[c], size).get("post")
            if gv is None or gc is None:
                continue
            ratio = gv["first"] / gc["first_non_stem"] if gc["first_non_stem"] > 0 else math.nan
            out.add(
                "6", f"ViT ERFs are larger than {inp.cnn_name(c)} ERFs in early layers", f"{v} vs {c}",
                f"{size[:-3]}_vit_first_over_cnn_first_stage_post", ratio, seen=ratio > 1,
                note="ViT block 0 post-attention residual over the CNN's first stage output; seen: > 1",
            )  # fmt: skip


def _fig7(inp: ClaimInputs, out: Rows) -> None:
    summ = {m: skip_ratio_summary(df) for m, df in inp.skip.items()}
    for m, s in summ.items():
        inf = f"{int(s['n_inf'])} infinite ratios left out" if s["n_inf"] else ""
        if "patch_mean" in s:
            out.add(
                "7", "‖z‖/‖f(z)‖ by token type", m, "ratio_patch_mean", s["patch_mean"], note=inf
            )
            out.add(
                "7", "ViT skip ratio rises in later blocks (patch tokens)", m, "ratio_patch_late_over_early",
                s["patch_late"] / s["patch_early"], seen=s["patch_late"] > s["patch_early"],
                note=f"early {s['patch_early']:.3g}, late {s['patch_late']:.3g} (first/last half of blocks)"
                + "; seen: > 1",
            )  # fmt: skip
        if "cls_mean" in s and "patch_mean" in s:
            seen = s["cls_early"] > s["patch_early"] and s["cls_late"] < s["cls_early"]
            out.add(
                "7", "CLS token differs: high ratio in lower blocks, falling later", m,
                "ratio_cls_over_patch_early", s["cls_early"] / s["patch_early"], seen=seen,
                note=f"CLS early {s['cls_early']:.3g}, late {s['cls_late']:.3g}; seen: > 1 and CLS late < early",
            )  # fmt: skip
        if "spatial_mean" in s:
            out.add(
                "7",
                "‖z‖/‖f(z)‖ by token type",
                m,
                "ratio_spatial_mean",
                s["spatial_mean"],
                note=inf,
            )
    for v, c in _vit_cnn_pairs(inp, list(summ)):
        if "patch_mean" not in summ[v] or "spatial_mean" not in summ[c]:
            continue
        ratio = summ[v]["patch_mean"] / summ[c]["spatial_mean"]
        out.add(
            "7", f"skip ratio is higher in ViT than in {inp.cnn_name(c)}", f"{v} vs {c}",
            "ratio_vit_patch_over_cnn", ratio, seen=ratio > 1,
            note="mean over blocks; seen: > 1",
        )  # fmt: skip


def _fig8(inp: ClaimInputs, out: Rows) -> None:
    claim = "no skip in block i: representations split at block i"
    for m, (block, ref) in inp.no_skip.items():
        if m not in inp.self_cka:
            continue
        p = no_skip_partition(inp.self_cka[m], block)
        note = "within-side minus across-boundary mean CKA"
        out.add("8", claim, m, f"partition_at_block_{block}", p["partition"], note=note)
        if ref is None or ref not in inp.self_cka:
            out.add(
                "8", claim, m, "partition_minus_reference", math.nan,
                note="no reference model of the same arch without remove_skip",
            )  # fmt: skip
            continue
        pr = no_skip_partition(inp.self_cka[ref], block)
        diff = p["partition"] - pr["partition"]
        out.add(
            "8", claim, f"{m} vs {ref}", "partition_minus_reference", diff, seen=diff > 0,
            note=f"reference {ref} partition {pr['partition']:.3g} at the same block; seen: > 0",
        )  # fmt: skip


def _less_local(cnn: str) -> str:
    return f"{cnn} positions localise much less than ViT tokens"


def _fig9_10(inp: ClaimInputs, out: Rows) -> None:
    stats = {m: localisation_stats(df) for m, df in inp.localisation.items()}
    for m, s in stats.items():
        vit = inp.is_vit(m)
        claim = (
            "ViT interior tokens match their own input patch"
            if vit
            else _less_local(inp.cnn_name(m))
        )
        n = f"{int(s['n_interior'])} interior positions"
        out.add("9-10", claim, m, "own_patch_cka", s["own"], note=n)
        out.add("9-10", claim, m, "other_patch_cka", s["other"], note="mean over the other patches")
        out.add(
            "9-10", claim, m, "own_is_argmax_rate", s["own_is_argmax"],
            seen=(s["own_is_argmax"] > 0.5) if vit else None,
            note="fraction whose best patch is their own" + ("; seen: > 0.5" if vit else ""),
        )  # fmt: skip
    for v, c in _vit_cnn_pairs(inp, list(stats)):
        claim = _less_local(inp.cnn_name(c))
        d = stats[v]["own_is_argmax"] - stats[c]["own_is_argmax"]
        out.add(
            "9-10", claim, f"{v} vs {c}", "own_is_argmax_vit_minus_cnn", d, seen=d > 0,
            note="seen: > 0",
        )  # fmt: skip
        mv = stats[v]["own"] - stats[v]["other"]
        mc = stats[c]["own"] - stats[c]["other"]
        out.add(
            "9-10", claim, f"{v} vs {c}", "own_minus_other_vit_minus_cnn", mv - mc, seen=mv > mc,
            note="(own - other patch CKA) of the ViT minus the CNN's; seen: > 0",
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
        claim = "probe accuracy rises with depth"
        note = f"{shots}-shot, {agg}"
        out.add("11-13", claim, m, "accuracy_first_tap", r["first"], note=note)
        out.add("11-13", claim, m, "accuracy_middle_tap", r["middle"], note=note)
        out.add(
            "11-13", claim, m, "accuracy_last_tap", r["last"], seen=r["last"] > r["first"],
            note=note + "; seen: last > first",
        )  # fmt: skip
        if not inp.is_vit(m) or "cls" not in present:
            continue
        mean_agg = "mean_spatial" if "mean_spatial" in present else "mean_all"
        rm = probe_depth(df, mean_agg, shots)
        rc = probe_depth(df, "cls", shots)
        if rm is None or rc is None:
            continue
        claim = "ViT CLS token lags the token mean until the last layers"
        mid, last = rc["middle"] - rm["middle"], rc["last"] - rm["last"]
        out.add(
            "11-13", claim, m, "cls_minus_mean_middle_tap", mid, seen=mid < 0,
            note=f"{shots}-shot, CLS - {mean_agg}; seen: < 0",
        )  # fmt: skip
        out.add(
            "11-13", claim, m, "cls_minus_mean_last_tap", last, seen=last > mid,
            note="seen: gap closes (last > middle)",
        )  # fmt: skip


def _fig12(inp: ClaimInputs, out: Rows) -> None:
    claim = "lower layers alike across checkpoints, higher layers diverge"
    for (a, b), df in inp.per_block.items():
        r = per_block_thirds(df)
        pair = f"{a} vs {b}"
        se_lo, se_hi = mean_se(per_block_thirds, df, "lowest_third", "highest_third")
        out.add(
            "12", claim, pair, "cka_lowest_third_blocks", r["lowest_third"], note="by depth",
            se=se_lo,
        )  # fmt: skip
        out.add(
            "12", claim, pair, "cka_highest_third_blocks", r["highest_third"], se=se_hi,
            seen=exceeds(r["lowest_third"] - r["highest_third"], combined_se(se_lo, se_hi)),
            note=f"seen: below the lowest third by {SEEN_SE:g} combined SE",
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
