"""Attention-distance figures: Fig 3 (chosen blocks), Fig 4 (all blocks), Fig 5 (head-subset CKA with a CNN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize

from seelike.figures.common import (
    integer_ticks,
    legend_outside,
    panel_grid,
    save_figure,
    with_dataset,
)

# one marker per chosen block, so blocks stay apart in print and for colour-blind readers
MARKERS = ("o", "X", "s", "P", "D", "^", "v", "*", "<", ">")
DISTANCE_LABEL = "mean attention distance (px)"


def resolve_blocks(blocks: Sequence[int], n_blocks: int) -> list[int]:
    """Block indices with negatives counted from the end, out-of-range ones dropped, duplicates removed."""
    out: list[int] = []
    for b in blocks:
        i = b + n_blocks if b < 0 else b
        if 0 <= i < n_blocks and i not in out:
            out.append(i)
    return out


def dodge(n: int, width: float = 0.5) -> np.ndarray:
    """x offsets of `n` groups drawn side by side around each integer position (0 for a single group)."""
    if n <= 1:
        return np.zeros(max(n, 0))
    w = min(width, 0.12 * n)
    return np.linspace(-w / 2, w / 2, n)


def _distance_ylim(ax, values: np.ndarray) -> None:
    """y from 0 to just above the largest distance, so no marker sits on (and is cut by) the top edge."""
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)


def plot_attention_distance(
    tables: Mapping[str, pd.DataFrame],
    blocks: Sequence[int],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """Fig 3/4 style: per model, the heads of the chosen blocks sorted by mean distance (0 = most local). Each
    block has its own colour and marker and is set slightly apart on x (dodged), so none hides another; the
    first block is drawn on top."""
    fig, axes = panel_grid(len(tables), width=5.0)
    for ax, (model, df) in zip(axes, tables.items(), strict=False):
        n_blocks = int(df["block"].max()) + 1
        chosen = resolve_blocks(blocks, n_blocks)
        colours = sns.color_palette("tab10", max(len(chosen), 1))
        offsets = dodge(len(chosen))
        for k, b in enumerate(chosen):
            g = df[df["block"] == b].sort_values("rank")
            ax.scatter(
                g["rank"].to_numpy() + offsets[k], g["mean_distance_px"], s=36, marker=MARKERS[k % len(MARKERS)],
                color=colours[k], edgecolors="white", linewidths=0.5, zorder=3 + len(chosen) - k,
                label=f"block {b}",
            )  # fmt: skip
            if "se_distance_px" in g:  # ±1 SE over images
                ax.errorbar(
                    g["rank"].to_numpy() + offsets[k], g["mean_distance_px"], yerr=g["se_distance_px"],
                    fmt="none", ecolor=colours[k], elinewidth=0.8, zorder=2 + len(chosen) - k,
                )  # fmt: skip
        n_heads = int(df["rank"].max()) + 1
        ax.set_xlim(-0.5, n_heads - 0.5)
        integer_ticks(ax, "x", max_ticks=16)
        _distance_ylim(ax, df[df["block"].isin(chosen)]["mean_distance_px"].to_numpy(np.float64))
        ax.set_xlabel("sorted attention head (0 = most local)")
        ax.set_ylabel(DISTANCE_LABEL)
        ax.set_title(model)
        ax.grid(axis="y", alpha=0.3)
        legend_outside(ax)
    fig.suptitle(
        with_dataset("Mean attention distance per head (heads sorted within each block)", dataset)
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_attention_all_blocks(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """Every block: one dot per head at its mean distance, x = block (heads side by side in rank order, colour
    = rank, with a colour bar); shows where local heads disappear."""
    fig, axes = panel_grid(len(tables), width=5.2)
    for ax, (model, df) in zip(axes, tables.items(), strict=False):
        n_heads = int(df["rank"].max()) + 1
        norm = Normalize(0, max(n_heads - 1, 1))
        cmap = plt.get_cmap("viridis")
        offsets = dodge(n_heads, width=0.7)
        ranks = df["rank"].to_numpy(int)
        ax.scatter(
            df["block"].to_numpy() + offsets[ranks], df["mean_distance_px"], c=cmap(norm(ranks)), s=14,
            edgecolors="none", zorder=3,
        )  # fmt: skip
        n_blocks = int(df["block"].max()) + 1
        ax.set_xlim(-0.6, n_blocks - 0.4)
        integer_ticks(ax, "x", max_ticks=16)
        _distance_ylim(ax, df["mean_distance_px"].to_numpy(np.float64))
        ax.set_xlabel("block")
        ax.set_ylabel(DISTANCE_LABEL)
        ax.set_title(model)
        ax.grid(axis="y", alpha=0.3)
        cbar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
        cbar.set_label("head rank in block (0 = most local)", fontsize=8)
        cbar.locator = plt.MaxNLocator(integer=True)
        cbar.update_ticks()
    fig.suptitle(with_dataset("Mean attention distance of every head, all blocks", dataset))
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_head_subsets(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
    cnn: str | None = None,
) -> None:
    """Fig 5: CKA of each head subset with each CNN unit against the subset's mean distance (±1 SE bars where
    the table has them). `cnn` names the CNN in the legend's title."""
    fig, axes = panel_grid(len(tables), width=5.2)
    for ax, (model, df) in zip(axes, tables.items(), strict=False):
        order = df.sort_values("cnn_tap_order")["cnn_tap"].unique().tolist()
        colours = dict(zip(order, sns.color_palette("rocket", len(order)), strict=True))
        d = df.sort_values("subset_mean_distance_px")
        has_se = "cka_se" in d and d["cka_se"].notna().any()
        # ±1 standard error (jackknife over minibatches); open markers of one shape per unit, so units with
        # (near) equal CKA stay visible on top of each other
        for k, tap in enumerate(order):
            g = d[d["cnn_tap"] == tap]
            ax.errorbar(
                g["subset_mean_distance_px"], g["cka"], yerr=g["cka_se"] if has_se else None, color=colours[tap],
                marker=MARKERS[k % len(MARKERS)], ms=6, mfc="none", mew=1.2, capsize=2, lw=1.2, label=tap,
            )  # fmt: skip
        # near-equal distances: no "+1.65e1" offset label
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.margins(x=0.08, y=0.1)
        ax.set_xlabel("mean attention distance of head subset (px)")
        ax.set_ylabel("CKA with CNN unit")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        legend_outside(ax, title=f"{cnn} unit" if cnn else "CNN unit")
    fig.suptitle(
        with_dataset(
            "First-block attention-head subsets (local → global) vs lower CNN units", dataset
        )
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)
