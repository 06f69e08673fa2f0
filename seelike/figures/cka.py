"""CKA figures from the tidy CKA tables: heatmaps (Figs 1, 2) and per-block CKA of checkpoints (Fig 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures.common import legend_outside, save_figure, tick_labels, with_dataset
from seelike.tables import cka_frame


def plot_cka_heatmap(
    df: pd.DataFrame,
    meta: dict[str, Any],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
):
    """Heatmap of a long CKA table: rows = model a's taps (bottom = first), columns = model b's taps. Cells
    that cannot be told from the permutation null (`null_z` below the table's threshold) carry a grey dot,
    and the subtitle gives the protocol's null floor and median standard error, when the table has them."""

    mat = cka_frame(df)
    n_a, n_b = mat.shape
    size = min(12, max(5.5, 0.08 * max(n_a, n_b) + 3))
    fig, ax = plt.subplots(figsize=(size * 1.1, size))
    sns.heatmap(
        mat.to_numpy(),
        ax=ax,
        vmin=0,
        vmax=1,
        cmap="magma",
        square=n_a == n_b,
        cbar_kws={"label": "minibatch CKA"},
    )
    unc = meta.get("uncertainty") or {}
    if "null_z" in df and df["null_z"].notna().any():
        z = cka_frame(df, "null_z").to_numpy()
        rows, cols = np.nonzero(np.nan_to_num(z, nan=np.inf) < unc.get("null_z_threshold", 3.0))
        ax.scatter(
            cols + 0.5, rows + 0.5, s=max(1.0, 60.0 / max(n_a, n_b)), c="0.6", marker=".", lw=0
        )
    ax.invert_yaxis()  # lowest layers at the origin, as in the paper
    ya, la = tick_labels(list(mat.index))
    yb, lb = tick_labels(list(mat.columns))
    ax.set_yticks([i + 0.5 for i in ya], la, fontsize=6, rotation=0)
    ax.set_xticks([i + 0.5 for i in yb], lb, fontsize=6, rotation=90)
    a, b = meta.get("model_a", "a"), meta.get("model_b", "b")
    ax.set_ylabel(f"{a} taps")
    ax.set_xlabel(f"{b} taps")
    plan = meta.get("plan", {})
    title = f"{a}: self-similarity" if a == b else f"{a} vs {b}"
    precision = []  # title lines short enough to stay clear of the colour bar
    if "cka_se" in df and df["cka_se"].notna().any():
        precision.append(f"median SE {np.nanmedian(df['cka_se']):.3g}")
    if unc.get("null_floor") is not None:
        precision.append(f"null floor {unc['null_floor']:.3g} ({unc['permutations']} permutations)")
    lines = [
        with_dataset(title, dataset),
        (
            f"{plan.get('n_images')} images × {plan.get('repeats')} repeat(s), "
            f"batch {plan.get('batch_size')}, samples {str(plan.get('samples_hash'))[:8]}"
        ),
    ]
    if precision:
        lines.append("; ".join(precision))
    if unc.get("null_floor") is not None:
        lines.append("grey dot: indistinguishable from the null")
    ax.set_title("\n".join(lines), fontsize=9)
    save_figure(fig, png, pdf)


def plot_per_block_cka(
    tables: list[tuple[pd.DataFrame, dict[str, Any]]],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """Fig 12: per-block CKA against depth, one line per (reference, other) pair, one panel per reference."""
    refs = list(dict.fromkeys(meta["model_a"] for _, meta in tables))
    fig, axes = plt.subplots(1, len(refs), figsize=(6.0 * len(refs), 3.6), squeeze=False)
    for ax, ref in zip(axes[0], refs, strict=False):
        bars = set()
        for df, meta in tables:
            if meta["model_a"] != ref:
                continue
            # the standard error of the mean where the table has it, else the spread over repeats
            has_se = "se" in df and df["se"].notna().all()
            bars.add("±1 SE" if has_se else "±1 SD over repeats")
            ax.errorbar(
                df["depth"],
                df["cka"],
                yerr=df["se"] if has_se else df["std"],
                marker="o",
                ms=3,
                capsize=2,
                label=meta["model_b"],
            )
        ax.set(
            title=with_dataset(f"per-block CKA with {ref}", dataset),
            xlabel="relative depth of block (0 = first, 1 = last)",
            ylabel=f"minibatch CKA (bars: {', '.join(sorted(bars))})",
            ylim=(min(0.0, ax.get_ylim()[0]), 1.05),
        )
        ax.grid(alpha=0.3)
        legend_outside(ax, title="model", fontsize=8)
    save_figure(fig, png, pdf)
