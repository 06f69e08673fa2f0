"""Figs 1 and 2 under every similarity measure: one heatmap panel per measure of a model pair's long similarity
table (`results/similarity/{dataset}/{a}__{b}.parquet`), and how far the measures rank the tap pairs alike
(`seelike.analyses.agreement`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures.common import panel_grid, save_figure, tick_labels, with_dataset
from seelike.tables import cka_array

# Measures whose estimator can go below 0 (unbiased HSIC, U-centred distances, correlations of RDMs): their
# panels clip at 0 like the CKA heatmap, and the colourbar says so. Biased CKA and Bures are ≥ 0.
CAN_BE_NEGATIVE = frozenset(
    {"linear_cka", "rbf_cka", "dcor", "rsa", "linear_cka_minus_pc", "cknna"}
)


def _measures(df: pd.DataFrame) -> list[str]:
    """The table's measures in the order it lists them (the workflow writes its configured order). Not
    `seelike.similarity.MEASURES`: that module imports torch, which figures never need."""
    return list(dict.fromkeys(df["measure"].astype(str)))


def plot_measure_heatmaps(
    df: pd.DataFrame,
    meta: dict[str, Any],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """One heatmap per measure of a long similarity table (magma, 0..1): rows = model a's taps (first at the
    bottom), columns = model b's taps. Constant cells and cells a measure does not compute (bures off its
    listed taps) are blank; cells indistinguishable from the measure's permutation null (`null_z` below the
    table's threshold) carry a grey dot, as in `seelike.figures.cka.plot_cka_heatmap`. Panel title: the
    measure, its median SE and its null floor where known."""
    measures = _measures(df)
    unc = meta.get("uncertainty") or {}
    threshold = unc.get("null_z_threshold", 3.0)
    floors = unc.get("null_floor_by_measure") or {}
    n_a, n_b = df["index_a"].nunique(), df["index_b"].nunique()
    side = min(6.0, max(3.2, 0.04 * max(n_a, n_b) + 2.6))
    rows = 1 if len(measures) <= 3 else 2
    fig, axes = panel_grid(max(len(measures), 1), width=side * 1.25, height=side, rows=rows)
    for ax, measure in zip(axes, measures, strict=False):
        d = df[df["measure"].astype(str) == measure]
        # cka_array, not cka_frame: its pivot would drop taps whose cells are all NaN (bures off block
        # outputs) and shift the others; it also blanks constant cells (undefined, stored 0)
        mat, names_a, names_b = cka_array(d, "value")
        label = measure
        if measure in CAN_BE_NEGATIVE:
            low = np.nanmin(mat) if np.isfinite(mat).any() else np.nan
            label += "\n< 0 shown as 0" + (f" (min {low:.2g})" if low < 0 else "")
        sns.heatmap(
            mat, ax=ax, vmin=0, vmax=1, cmap="magma", square=len(names_a) == len(names_b),
            cbar_kws={"label": label},
        )  # fmt: skip
        if "null_z" in d and d["null_z"].notna().any():  # (bures has no null: never dotted)
            z, _, _ = cka_array(d, "null_z")
            z[~np.isfinite(mat)] = np.nan  # no dot on a blank cell
            r, c = np.nonzero(np.nan_to_num(z, nan=np.inf) < threshold)
            size = max(2.0, 40.0 / max(len(names_a), len(names_b)))
            if r.size:
                ax.scatter(c + 0.5, r + 0.5, s=size, c="0.6", marker=".", lw=0)
        ax.invert_yaxis()  # lowest layers at the origin, as in the paper
        ya, la = tick_labels(names_a, max_ticks=24)
        xb, lb = tick_labels(names_b, max_ticks=24)
        ax.set_yticks([i + 0.5 for i in ya], la, fontsize=6, rotation=0)
        ax.set_xticks([i + 0.5 for i in xb], lb, fontsize=6, rotation=90)
        se = d["se"].to_numpy(dtype=np.float64) if "se" in d else np.array([])
        if "constant" in d:
            se = se[~d["constant"].to_numpy(bool)] if se.size else se
        title = measure
        if np.isfinite(se).any():
            title += f"\nmedian SE {np.nanmedian(se):.2g}"
        if floors.get(measure) is not None:
            title += f"; null floor {floors[measure]:.2g}"
        ax.set_title(title, fontsize=8)
    a, b = meta.get("model_a", "a"), meta.get("model_b", "b")
    for ax in axes[: len(measures)]:
        ax.set_ylabel(f"{a} taps", fontsize=7)
        ax.set_xlabel(f"{b} taps", fontsize=7)
    plan = meta.get("plan", {})
    head = f"{a}: self-similarity" if a == b else f"{a} vs {b}"
    dotted = (
        f"; grey dot: within {threshold:g} null SD ({unc['permutations']} permutations)"
        if unc.get("permutations")
        else ""
    )
    first = with_dataset(f"{head} under {len(measures)} similarity measure(s)", dataset)
    fig.suptitle(
        f"{first}\n{plan.get('n_images')} images × "
        f"{plan.get('repeats')} repeat(s), batch {plan.get('batch_size')}, samples "
        f"{str(plan.get('samples_hash'))[:8]}{dotted}; blank: not computed, or constant",
        fontsize=11,
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_measure_agreement(
    agreement: pd.DataFrame,
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """One measure × measure heatmap per model pair of an `agreement_table`: the Spearman rank correlation of
    two measures over the tap pairs both define (annotated; RdBu, −1..1). The diagonal is blank (not computed:
    trivially 1); each panel's title gives the pair and the range of cell counts."""
    pairs = list(dict.fromkeys(zip(agreement["model_a"], agreement["model_b"], strict=True)))
    cols = min(len(pairs), 3) or 1
    rows = -(-len(pairs) // cols) if pairs else 1
    fig, axes = panel_grid(max(len(pairs), 1), width=4.4, height=3.8, rows=rows)
    if not pairs:
        axes[0].text(0.5, 0.5, "fewer than two measures: nothing to compare", ha="center")
        axes[0].set_axis_off()
    for ax, (a, b) in zip(axes, pairs, strict=False):
        g = agreement[(agreement["model_a"] == a) & (agreement["model_b"] == b)]
        names = list(dict.fromkeys([*g["measure_1"], *g["measure_2"]]))
        pos = {m: i for i, m in enumerate(names)}
        mat = np.full((len(names), len(names)), np.nan)
        for m1, m2, r in zip(g["measure_1"], g["measure_2"], g["spearman"], strict=True):
            mat[pos[m1], pos[m2]] = mat[pos[m2], pos[m1]] = r  # symmetric
        sns.heatmap(
            mat, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f",
            annot_kws={"fontsize": 7}, square=True, xticklabels=names, yticklabels=names,
            cbar_kws={"label": "Spearman ρ over tap pairs"},
        )  # fmt: skip
        ax.tick_params(labelsize=7)
        n = g["n_cells"]
        cells = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
        head = f"{a}: self (i < j)" if a == b else f"{a} vs {b}"
        ax.set_title(f"{head}\n{cells} tap pairs", fontsize=8)
    fig.suptitle(
        with_dataset(
            "Agreement of similarity measures: Spearman ρ of their values over tap pairs", dataset
        ),
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)
