"""Figs 9 and 10: localisation maps (token vs input-patch CKA at every position) and their summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures.common import integer_ticks, legend_outside, save_figure, with_dataset

PATCH_LABELS = {"own": "own patch", "best_other": "best other patch"}


def _grid(meta: Mapping[str, Any], df: pd.DataFrame) -> tuple[int, int]:
    if meta.get("grid_hw"):
        return tuple(int(v) for v in meta["grid_hw"])  # type: ignore[return-value]
    return int(df["patch_row"].max()) + 1, int(df["patch_col"].max()) + 1


def _valid(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose token and patch vary across the images (constant ones have undefined CKA, stored as 0)."""
    keep = np.ones(len(df), bool)
    for col in ("patch_constant", "token_constant"):
        if col in df:
            keep &= ~df[col].to_numpy(bool)
    return df[keep]


def _heat(df: pd.DataFrame, token: int, hw: tuple[int, int]) -> np.ndarray:
    d = _valid(df[df["token"] == token])
    m = np.full(hw, np.nan)
    m[d["patch_row"].to_numpy(), d["patch_col"].to_numpy()] = d["cka"].to_numpy()
    return m


def localisation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per token: CKA with its own patch, the best other position's CKA, and whether its own is the maximum.
    Tokens or patches constant across the images (undefined CKA) are left out."""
    d = _valid(df)
    own = d[d["token"] == d["patch"]].set_index("token")["cka"]
    other = d[d["token"] != d["patch"]].groupby("token")["cka"].max()
    arg = d.loc[d.groupby("token")["cka"].idxmax()].set_index("token")["patch"]
    out = pd.DataFrame(
        {"own": own, "best_other": other.reindex(own.index), "argmax": arg.reindex(own.index)}
    )
    out["own_is_max"] = out["argmax"] == out.index
    return out.rename_axis("token").reset_index()


def plot_localisation(
    df: pd.DataFrame,
    meta: Mapping[str, Any],
    png: str | Path,
    pdf: str | Path | None = None,
    tokens: Sequence[int] | None = None,
    dataset: str | None = None,
) -> None:
    """Figs 9/10: for chosen tokens, the CKA between the token's representation and the input patch at every
    grid position (the token's own position outlined); last panel: each token's CKA with its own patch."""
    from matplotlib.patches import Rectangle

    from seelike.analyses.localisation import default_plot_tokens

    hw = _grid(meta, df)
    present = set(df["token"])
    tokens = [
        t for t in (tokens if tokens is not None else default_plot_tokens(hw)) if t in present
    ]
    vmax = max(float(np.nanmax(df["cka"])), 1e-6)
    cmap = plt.get_cmap("magma").with_extremes(
        bad="0.75"
    )  # grey: a constant input patch (e.g. blank border), CKA undefined
    n = len(tokens) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    blank = False
    for ax, t in zip(axes[0], tokens, strict=False):
        heat = _heat(df, t, hw)
        blank |= bool(np.isnan(heat).any())
        ax.imshow(heat, cmap=cmap, vmin=0, vmax=vmax)
        r, c = divmod(t, hw[1])
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="cyan", lw=1.5))
        ax.set_title(f"token ({r}, {c})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    # the first map carries the grid's scale: patch rows and columns, as in the titles' (row, col)
    first = axes[0, 0]
    integer_ticks(first, "x", max_ticks=5)
    integer_ticks(first, "y", max_ticks=5)
    first.tick_params(labelsize=6, length=2, pad=1)
    first.set_xlabel("patch column", fontsize=7)
    first.set_ylabel("patch row", fontsize=7)
    summ = localisation_summary(df)
    own = np.full(hw, np.nan)
    own[summ["token"].to_numpy() // hw[1], summ["token"].to_numpy() % hw[1]] = summ[
        "own"
    ].to_numpy()
    ax = axes[0, -1]
    im = ax.imshow(own, cmap=cmap, vmin=0, vmax=vmax)
    ax.set_title(f"own-patch CKA\n(own = max for {summ['own_is_max'].mean():.0%})", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(
        im, ax=list(axes[0]), fraction=0.02, shrink=0.8, pad=0.02, label="CKA with input patch"
    )
    model, tap = meta.get("model", ""), meta.get("tap", "")
    key = "cyan square: the token's own position" + (
        "; grey: patch constant over the images (CKA undefined)" if blank else ""
    )
    fig.suptitle(
        with_dataset(
            f"{model}: token representation at {tap} vs input patches ({meta.get('n_images', '?')} images)",
            dataset,
        )
        + f"\n{key}"
    )
    save_figure(fig, png, pdf)


def plot_localisation_summary(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """Fig 10-style comparison across models: each token's CKA with its own patch vs the best other patch."""
    rows = []
    for model, df in tables.items():
        s = localisation_summary(df)
        for which in ("own", "best_other"):
            rows.append(
                pd.DataFrame({"model": model, "patch": PATCH_LABELS[which], "cka": s[which]})
            )
    data = pd.concat(rows, ignore_index=True)
    fig, ax = plt.subplots(figsize=(1.8 * len(tables) + 2.5, 3.6))
    sns.stripplot(
        data=data, x="model", y="cka", hue="patch", hue_order=list(PATCH_LABELS.values()), dodge=True, ax=ax,
        size=3, alpha=0.7,
    )  # fmt: skip
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(None)
    ax.set_ylabel("CKA of token with input patch")
    ax.set_title(
        with_dataset("Localisation: own patch vs best other patch (one point per token)", dataset)
    )
    ax.grid(axis="y", alpha=0.3)
    legend_outside(ax, markerscale=1.5)
    fig.tight_layout()
    save_figure(fig, png, pdf)
