"""Figures 9–11 and 13 (localisation maps, linear probes), drawn from the tidy tables only (Agg backend,
PNG + PDF), so each reruns in seconds without a GPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures import save_figure

__all__ = [
    "AGG_LABELS",
    "localisation_summary",
    "plot_localisation",
    "plot_localisation_summary",
    "plot_probe_aggregations",
    "plot_probe_models",
    "primary_aggregation",
    "token_map",
]

AGG_LABELS = {
    "cls": "CLS token",
    "mean_spatial": "mean of spatial tokens / positions",
    "mean_all": "mean of all tokens",
    "pool_final": "pooled to final-stage grid",
    "flat": "flattened",
    "token": "single tokens (mean over positions)",
}
# the aggregation each family is read by in the paper's Fig 13: CLS for CLS ViTs, final-grid pooling for CNNs
_PRIMARY = ("cls", "pool_final", "mean_spatial", "flat")


def primary_aggregation(df: pd.DataFrame) -> str:
    present = set(df["aggregation"])
    return next(a for a in _PRIMARY if a in present)


def _shots(df: pd.DataFrame, shots: str | None) -> str:
    levels = list(dict.fromkeys(df["shots"].astype(str)))
    if shots is None:
        return levels[0]
    if str(shots) not in levels:
        raise ValueError(f"no probes with shots={shots!r} in the table (it has {levels})")
    return str(shots)


def _chance(ax, df: pd.DataFrame) -> None:
    if "chance" in df and len(df):
        ax.axhline(float(df["chance"].iloc[0]), color="0.5", ls=":", lw=1, label="chance")


def plot_probe_models(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    shots: str | None = None,
) -> None:
    """Fig 13: probe accuracy against normalised layer index, models overlaid. Left: each model's own read-out
    (CLS for CLS ViTs, final-grid pooling for CNNs); right: the mean over spatial positions for every model."""
    frames = []
    for model, df in tables.items():
        d = df[
            (df["shots"].astype(str) == _shots(df, shots)) & (df["aggregation"] != "token")
        ].copy()
        d["model"] = model
        d["primary"] = d["aggregation"] == primary_aggregation(d)
        frames.append(d)
    data = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    left = data[data["primary"]].copy()
    left["label"] = left["model"] + " (" + left["aggregation"] + ")"
    panels = (
        (axes[0], left, "label", "each model's read-out"),
        (
            axes[1],
            data[data["aggregation"] == "mean_spatial"],
            "model",
            "mean over spatial positions",
        ),
    )
    for ax, d, hue, title in panels:
        sns.lineplot(
            data=d.sort_values("depth"), x="depth", y="accuracy", hue=hue, marker="o", ax=ax
        )
        _chance(ax, data)
        ax.set_xlabel("normalised layer index")
        ax.set_ylabel("linear probe accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.legend(fontsize=7, title=None)
    k = _shots(frames[0], shots) if frames else ""
    fig.suptitle(f"Linear probes per layer ({k}-shot, test accuracy)")
    fig.tight_layout()
    save_figure(fig, png, pdf)


def token_map(df: pd.DataFrame, tap: str, shots: str) -> np.ndarray:
    """Per-token accuracy of one tap as a (rows, cols) grid."""
    d = df[(df["aggregation"] == "token") & (df["tap"] == tap) & (df["shots"].astype(str) == shots)]
    h, w = int(d["token_row"].max()) + 1, int(d["token_col"].max()) + 1
    m = np.full((h, w), np.nan)
    m[d["token_row"].to_numpy(), d["token_col"].to_numpy()] = d["accuracy"].to_numpy()
    return m


def plot_probe_aggregations(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    shots: str | None = None,
) -> None:
    """Fig 11: per model, accuracy against normalised layer index for every aggregation (CLS, means, pooled)
    and for single tokens (mean over positions, min–max band) at the taps with per-token probes; below, the
    per-token accuracy map of the last such tap."""
    n = len(tables)
    fig, axes = plt.subplots(
        2, n, figsize=(4.6 * n, 7.2), squeeze=False, gridspec_kw={"height_ratios": [3, 2]}
    )
    for j, (model, df) in enumerate(tables.items()):
        k = _shots(df, shots)
        d = df[df["shots"].astype(str) == k]
        ax = axes[0, j]
        agg = d[d["aggregation"] != "token"].sort_values("depth")
        order = [a for a in AGG_LABELS if a in set(agg["aggregation"])]
        sns.lineplot(
            data=agg, x="depth", y="accuracy", hue="aggregation", hue_order=order, marker="o", ax=ax
        )
        tok = d[d["aggregation"] == "token"]
        if len(tok):
            s = tok.groupby("depth")["accuracy"].agg(["mean", "min", "max"]).reset_index()
            ax.errorbar(
                s["depth"], s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], fmt="D", color="k",
                capsize=3, label="token (mean, min–max)",
            )  # fmt: skip
        _chance(ax, d)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("normalised layer index")
        ax.set_ylabel("linear probe accuracy")
        ax.set_title(f"{model} ({k}-shot)")
        ax.legend(fontsize=6, title=None)
        ax2 = axes[1, j]
        if len(tok):
            last = tok.sort_values("tap_index")["tap"].iloc[-1]
            m = token_map(d, last, k)
            im = ax2.imshow(m, cmap="viridis", vmin=0, vmax=1)
            fig.colorbar(im, ax=ax2, fraction=0.046, label="accuracy")
            ax2.set_title(f"per-token accuracy, {last}", fontsize=8)
            ax2.set_xticks(range(0, m.shape[1], max(1, m.shape[1] // 8)))
            ax2.set_yticks(range(0, m.shape[0], max(1, m.shape[0] // 8)))
            ax2.set_xlabel("column")
            ax2.set_ylabel("row")
        else:
            ax2.set_axis_off()
            ax2.text(
                0.5, 0.5, "no per-token probes", ha="center", va="center", transform=ax2.transAxes
            )
    fig.suptitle("Linear probes: CLS, pooled and single-token read-outs per layer")
    fig.tight_layout()
    save_figure(fig, png, pdf)


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
) -> None:
    """Figs 9/10: for chosen tokens, the CKA between the token's representation and the input patch at every
    grid position (the token's own position outlined); last panel: each token's CKA with its own patch."""
    from matplotlib.patches import Rectangle

    from seelike.localisation import default_plot_tokens

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
    for ax, t in zip(axes[0], tokens):
        ax.imshow(_heat(df, t, hw), cmap=cmap, vmin=0, vmax=vmax)
        r, c = divmod(t, hw[1])
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="cyan", lw=1.5))
        ax.set_title(f"token ({r}, {c})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
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
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02, label="CKA with input patch")
    model, tap = meta.get("model", ""), meta.get("tap", "")
    fig.suptitle(
        f"{model}: token representation at {tap} vs input patches ({meta.get('n_images', '?')} images)"
    )
    save_figure(fig, png, pdf)


def plot_localisation_summary(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """Fig 10-style comparison across models: each token's CKA with its own patch vs the best other patch."""
    rows = []
    for model, df in tables.items():
        s = localisation_summary(df)
        for which in ("own", "best_other"):
            rows.append(pd.DataFrame({"model": model, "patch": which, "cka": s[which]}))
    data = pd.concat(rows, ignore_index=True)
    fig, ax = plt.subplots(figsize=(1.8 * len(tables) + 2.5, 3.6))
    sns.stripplot(data=data, x="model", y="cka", hue="patch", dodge=True, ax=ax, size=3, alpha=0.7)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylabel("CKA of token with input patch")
    ax.set_title("Localisation: own patch vs best other patch (one point per token)")
    ax.legend(fontsize=7, title=None)
    fig.tight_layout()
    save_figure(fig, png, pdf)
