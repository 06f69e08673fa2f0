"""Fig 6: effective receptive field maps per tap, and their sizes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from seelike.figures.common import save_figure


def erf_size_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """All models' ERF size rows in one table (model, residual, tap, r50_px, r90_px, ...)."""
    return pd.concat(list(tables.values()), ignore_index=True)


def plot_erf_grid(
    maps: Mapping[str, Mapping[str, np.ndarray]],
    sizes: pd.DataFrame,
    png: str | Path,
    pdf: str | Path | None = None,
) -> None:
    """Fig 6: one row per model × residual setting, one column per tap; each map scaled to its own maximum."""
    rows = [
        (m, r, g.sort_values("order"))
        for (m, r), g in sizes.groupby(["model", "residual"], sort=False)
    ]
    n_cols = max((len(g) for _, _, g in rows), default=1)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(2.1 * n_cols, 2.3 * len(rows)), squeeze=False
    )
    for i, (model, residual, g) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(g):
                ax.set_visible(False)
                continue
            row = g.iloc[j]
            m = np.asarray(maps[model][row["tap"]], dtype=np.float64)
            peak = m.max()
            ax.imshow(m / peak if peak > 0 else m, cmap="magma", vmin=0, vmax=1)
            r50 = row.get("r50_px", np.nan)
            ax.set_title(f"{row['tap']}\nr50={r50:.1f}px", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{model}\n({residual})", fontsize=8)
    fig.suptitle("Effective receptive fields |d centre / d input| (each map scaled to its maximum)")
    fig.tight_layout()
    save_figure(fig, png, pdf)
