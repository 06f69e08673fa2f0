"""Fig 6: effective receptive field maps per tap, and their sizes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Circle

from seelike.figures.common import save_figure, with_dataset

ERF_LABEL = "|∂ centre / ∂ input|, mean over channels and images\n(each map ÷ its maximum)"


def erf_size_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """All models' ERF size rows in one table (model, residual, tap, r50_px, r90_px, their `_se`, ...); the
    per-group jackknife replicates (`r50_px_jk`, arrays) stay in the analysis tables, out of this CSV."""
    df = pd.concat(list(tables.values()), ignore_index=True)
    return df.drop(columns=[c for c in df.columns if c.endswith("_jk")])


def _pixel_ticks(ax, h: int, w: int) -> None:
    """Ticks at the input image's edges and middle, in pixels."""
    ax.set_xticks([0, w // 2, w])
    ax.set_yticks([0, h // 2, h])
    ax.tick_params(labelsize=6, length=2, pad=1)


def plot_erf_grid(
    maps: Mapping[str, Mapping[str, np.ndarray]],
    sizes: pd.DataFrame,
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """Fig 6: one row per model × residual setting, one column per tap; each map scaled to its own maximum
    (one shared colour bar, 0..1), axes in input pixels, the dashed circle the radius holding half the map's
    mass (r50) around its centroid where the table has them."""
    rows = [
        (m, r, g.sort_values("order"))
        for (m, r), g in sizes.groupby(["model", "residual"], sort=False)
    ]
    n_cols = max((len(g) for _, _, g in rows), default=1)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(2.1 * n_cols + 1.0, 2.4 * len(rows) + 0.4), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    im = None
    for i, (model, residual, g) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(g):
                ax.set_visible(False)
                continue
            row = g.iloc[j]
            m = np.asarray(maps[model][row["tap"]], dtype=np.float64)
            peak = m.max()
            h, w = m.shape
            im = ax.imshow(
                m / peak if peak > 0 else m, cmap="magma", vmin=0, vmax=1, extent=(0, w, h, 0),
                interpolation="nearest",
            )  # fmt: skip
            _pixel_ticks(ax, h, w)
            r50 = float(row.get("r50_px", np.nan))
            cy, cx = row.get("centroid_row", np.nan), row.get("centroid_col", np.nan)
            if np.isfinite([r50, cy, cx]).all() and r50 > 0:
                ax.add_patch(
                    Circle((cx, cy), r50, fill=False, ec="cyan", lw=0.6, ls="--", alpha=0.8)
                )
            ax.set_title(f"{row['tap']}\nr50 = {r50:.1f} px", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{model} ({residual})\ny (px)", fontsize=8)
            if i == len(rows) - 1 or j >= len(rows[i + 1][2]):  # the lowest panel of its column
                ax.set_xlabel("x (px)", fontsize=7)
    if im is not None:
        cbar = fig.colorbar(im, ax=list(axes.ravel()), shrink=0.6, aspect=25)
        cbar.set_label(ERF_LABEL, fontsize=8)
    fig.suptitle(
        with_dataset(
            "Effective receptive fields of the centre position (dashed circle: r50, the radius holding half "
            "the map's mass)",
            dataset,
        )
    )
    save_figure(fig, png, pdf)
