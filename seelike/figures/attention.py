"""Attention-distance figures: Fig 3 (chosen blocks), Fig 4 (all blocks), Fig 5 (head-subset CKA with a CNN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import seaborn as sns

from seelike.figures.common import panel_grid, save_figure


def resolve_blocks(blocks: Sequence[int], n_blocks: int) -> list[int]:
    """Block indices with negatives counted from the end, out-of-range ones dropped, duplicates removed."""
    out: list[int] = []
    for b in blocks:
        i = b + n_blocks if b < 0 else b
        if 0 <= i < n_blocks and i not in out:
            out.append(i)
    return out


def plot_attention_distance(
    tables: Mapping[str, pd.DataFrame],
    blocks: Sequence[int],
    png: str | Path,
    pdf: str | Path | None = None,
) -> None:
    """Fig 3/4 style: per model, the heads of the chosen blocks sorted by mean distance (0 = most local)."""
    fig, axes = panel_grid(len(tables))
    for ax, (model, df) in zip(axes, tables.items()):
        n_blocks = int(df["block"].max()) + 1
        chosen = resolve_blocks(blocks, n_blocks)
        sub = df[df["block"].isin(chosen)].copy()
        sub["block_label"] = "block " + sub["block"].astype(str)
        sns.scatterplot(
            data=sub, x="rank", y="mean_distance_px", hue="block_label", style="block_label",
            hue_order=[f"block {b}" for b in chosen], style_order=[f"block {b}" for b in chosen], ax=ax, s=40,
        )  # fmt: skip
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.set_xlabel("sorted attention head")
        ax.set_ylabel("mean distance (px)")
        ax.set_title(model)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, title=None)
    fig.suptitle("Mean attention distance per head (heads sorted within each block)")
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_attention_all_blocks(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """Every block: one dot per head at its mean distance, x = block; shows where local heads disappear."""
    fig, axes = panel_grid(len(tables))
    for ax, (model, df) in zip(axes, tables.items()):
        sns.stripplot(
            data=df, x="block", y="mean_distance_px", hue="rank", palette="viridis", ax=ax, size=4, jitter=0.15,
            legend=False,
        )  # fmt: skip
        ax.set_xlabel("block")
        ax.set_ylabel("mean distance (px)")
        ax.set_title(model)
        ax.set_ylim(bottom=0)
    fig.suptitle(
        "Mean attention distance of every head, all blocks (colour: rank within block, dark = local)"
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_head_subsets(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """Fig 5: CKA of each head subset with each CNN unit against the subset's mean distance."""
    fig, axes = panel_grid(len(tables))
    for ax, (model, df) in zip(axes, tables.items()):
        order = df.sort_values("cnn_tap_order")["cnn_tap"].unique().tolist()
        d = df.sort_values("subset_mean_distance_px")
        sns.lineplot(
            data=d, x="subset_mean_distance_px", y="cka",
            hue="cnn_tap", hue_order=order, marker="o", ax=ax, palette="rocket",
        )  # fmt: skip
        if (
            "cka_se" in d and d["cka_se"].notna().any()
        ):  # ±1 standard error (jackknife over minibatches)
            colours = dict(zip(order, sns.color_palette("rocket", len(order))))
            for tap, g in d.groupby("cnn_tap", sort=False):
                ax.errorbar(
                    g["subset_mean_distance_px"], g["cka"], yerr=g["cka_se"], fmt="none",
                    ecolor=colours[tap], capsize=2, lw=1,
                )  # fmt: skip
        # near-equal distances: no "+1.65e1" offset label
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.set_xlabel("mean distance of head subset (px)")
        ax.set_ylabel("CKA with CNN unit")
        ax.set_title(model)
        ax.legend(fontsize=7, title=None)
    fig.suptitle("First-block attention-head subsets (local → global) vs lower CNN units")
    fig.tight_layout()
    save_figure(fig, png, pdf)
