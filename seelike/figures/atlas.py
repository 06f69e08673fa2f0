"""The model-zoo atlas at a glance, for papers: the clustered model × model matrix of pair scores under its
dendrogram, and the 2-D embedding of every block output of every model coloured by family. Drawn from the atlas
`data` dict (the contract of `seelike.atlas.data`), arranged by `seelike.atlas.layout`."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from seelike.atlas import layout
from seelike.figures.common import legend_outside, save_figure, with_dataset

ALPHA = 0.05  # pairs whose corrected p is above it carry a grey dot
CLASS_MARKERS = {"vit": "o", "cnn": "s", "other": "D"}
CLASS_NAMES = {"vit": "ViT-like", "cnn": "CNN-like", "other": "other"}


def _dendrogram(ax, clustering: layout.Clustering) -> None:
    """The merges over the matrix's columns (leaf k at x = k), heights 1 − score."""
    for xs, ys in zip(clustering.icoord, clustering.dcoord, strict=True):
        ax.plot(xs, ys, color="0.3", lw=1)
    ax.set_ylabel("1 − score", fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    ax.tick_params(axis="x", bottom=False, labelbottom=False)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_ylim(bottom=0)


def _score_matrix(fig, ax, data: dict, order: list[str]) -> None:
    """Pair scores in clustered order, values written in the cells of small matrices, grey dots where the
    corrected p exceeds ALPHA."""
    names, score = layout.pair_matrix(data, "score")
    _, p = layout.pair_matrix(data, "score_p")
    idx = [names.index(n) for n in order]
    score, p = score[np.ix_(idx, idx)], p[np.ix_(idx, idx)]
    m = len(order)
    im = ax.imshow(score, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xlim(-0.5, m - 0.5)
    if m <= 12:
        for (i, j), v in np.ndenumerate(score):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 else "white")  # fmt: skip
    rows, cols = np.nonzero(np.nan_to_num(p, nan=0.0) > ALPHA)
    ax.scatter(cols, rows + 0.3, s=8, c="0.6", marker="o", lw=0)
    ax.set_xticks(range(m), order, rotation=90, fontsize=7)
    ax.set_yticks(range(m), order, fontsize=7)
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    cbar.set_label(f"pair score (max {data.get('measure', 'CKA')} over block outputs)", fontsize=7)
    cbar.ax.tick_params(labelsize=6)


def _embedding(ax, data: dict) -> None:
    """Every block output, one line per model in forward order, family colour, class marker, size by depth."""
    rows = layout.block_embedding(data)
    colors = layout.family_colors(data)
    for model in data["models"]:
        pts = [r for r in rows if r["model"] == model["name"]]
        x, y = [r["x"] for r in pts], [r["y"] for r in pts]
        color = colors[model["family"]]
        ax.plot(x, y, color=color, lw=0.7, alpha=0.6, zorder=1)
        ax.scatter(x, y, s=[8 + 40 * r["depth"] for r in pts], color=color,
                   marker=CLASS_MARKERS.get(model["class"], "o"), edgecolor="white", lw=0.4,
                   zorder=2)  # fmt: skip
    ax.set_xlabel("MDS 1", fontsize=8)
    ax.set_ylabel("MDS 2", fontsize=8)
    ax.tick_params(labelsize=6)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.08)
    handles = [
        Line2D([], [], color=c, marker="o", lw=0.7, ms=5, label=f) for f, c in colors.items()
    ]
    classes = dict.fromkeys(m["class"] for m in data["models"])
    handles += [
        Line2D([], [], color="0.4", marker=CLASS_MARKERS.get(c, "o"), lw=0, ms=5,
               label=CLASS_NAMES.get(c, c))
        for c in classes
    ]  # fmt: skip
    handles.append(Line2D([], [], color="0.4", marker="o", lw=0, ms=2, label="small: shallow"))
    handles.append(Line2D([], [], color="0.4", marker="o", lw=0, ms=7, label="large: deep"))
    legend_outside(ax, title="family / class / depth", handles=handles)


def plot_atlas_overview(data: dict, png: str | Path, pdf: str | Path | None = None) -> None:
    """Left: pair scores of every model pair in average-linkage order of 1 − score, the dendrogram above.
    Right: classical MDS of 1 − CKA over every block output of every model. Titles name the dataset."""
    dataset = data.get("dataset")
    clustering = layout.cluster_order(data)
    m = len(clustering.order)
    side = min(5.5, max(2.8, 0.32 * m + 1.6))
    fig = plt.figure(figsize=(side + 5.8, side + 0.9))
    grid = fig.add_gridspec(2, 2, height_ratios=[0.9, side], width_ratios=[side, 5.2], hspace=0.04,
                            wspace=0.45)  # fmt: skip
    ax_mat = fig.add_subplot(grid[1, 0])
    ax_tree = fig.add_subplot(grid[0, 0], sharex=ax_mat)
    ax_emb = fig.add_subplot(grid[:, 1])
    _score_matrix(fig, ax_mat, data, clustering.order)
    _dendrogram(ax_tree, clustering)
    # the colour bar narrows the matrix: keep the dendrogram over the columns
    fig.canvas.draw()
    box, tree = ax_mat.get_position(), ax_tree.get_position()
    ax_tree.set_position([box.x0, tree.y0, box.width, tree.height])
    title = with_dataset("pair scores, clustered", dataset)
    if any(v is not None and v > ALPHA for v in (p.get("score_p") for p in data["pairs"])):
        title += f"\ngrey dot: corrected p > {ALPHA}"
    ax_tree.set_title(title, fontsize=9)
    ax_emb.set_title(
        with_dataset(f"block outputs: classical MDS of 1 − {data.get('measure', 'CKA')}", dataset),
        fontsize=9,
    )
    _embedding(ax_emb, data)
    save_figure(fig, png, pdf)


def plot_atlas_shift(shift, png: str | Path, pdf: str | Path | None = None) -> None:
    """How each pair's scores move between datasets: the depth-aligned diagonal and the pair score of every pair
    on each dataset (± SE), one line per pair; the Spearman correlation of the diagonals across datasets in the
    title (1: the same pairs look alike on every dataset)."""
    from seelike.atlas.data import rank_agreement

    datasets = list(dict.fromkeys(shift["dataset"]))
    pairs = list(dict.fromkeys(shift["pair"]))
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(pairs), 2)))
    x = np.arange(len(datasets))
    for ax, col, label in (
        (axes[0], "diagonal", "depth-aligned diagonal"),
        (axes[1], "score", "pair score (max)"),
    ):
        for k, pair in enumerate(pairs):
            d = shift[shift["pair"] == pair].set_index("dataset").reindex(datasets)
            offset = (k - (len(pairs) - 1) / 2) * 0.015
            ax.errorbar(x + offset, d[col], yerr=d[f"{col}_se"], color=colors[k], marker="o", ms=3, lw=1,
                        capsize=2, label=pair)  # fmt: skip
        ax.set_xticks(x, datasets)
        ax.set_xlim(-0.4, len(datasets) - 0.6)
        ax.set_ylabel(f"{label} (± SE)")
        ax.set_title(label, fontsize=9)
    rho = rank_agreement(shift)
    iu = np.triu_indices(len(rho), 1)
    agreement = ", ".join(
        f"{rho.index[i]}–{rho.columns[j]} {rho.iloc[i, j]:.2f}" for i, j in zip(*iu, strict=True)
    )
    fig.suptitle(
        f"pair scores across datasets; Spearman ρ of the pairs' diagonals: {agreement or 'n/a'}",
        fontsize=9,
    )
    if len(pairs) <= 15:
        legend_outside(axes[1], title="pair")
    save_figure(fig, png, pdf)
