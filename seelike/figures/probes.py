"""Figs 11 and 13: linear-probe accuracy against depth, per aggregation and across models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures.common import legend_outside, save_figure, with_dataset
from seelike.tables import primary_aggregation, probe_shots

AGG_LABELS = {
    "cls": "CLS token",
    "mean_spatial": "mean of spatial tokens / positions",
    "mean_all": "mean of all tokens",
    "pool_final": "pooled to final-stage grid",
    "flat": "flattened",
    "token": "single tokens (mean over positions)",
}


def _chance(ax, df: pd.DataFrame) -> None:
    if "chance" in df and len(df):
        ax.axhline(float(df["chance"].iloc[0]), color="0.5", ls=":", lw=1, label="chance")


def plot_probe_models(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    shots: str | None = None,
    dataset: str | None = None,
) -> None:
    """Fig 13: probe accuracy against normalised layer index, models overlaid. Left: each model's own read-out
    (CLS for CLS ViTs, final-grid pooling for CNNs); right: the mean over spatial positions for every model."""
    frames = []
    for model, df in tables.items():
        d = df[
            (df["shots"].astype(str) == probe_shots(df, shots)) & (df["aggregation"] != "token")
        ].copy()
        d["model"] = model
        d["primary"] = d["aggregation"] == primary_aggregation(d)
        frames.append(d)
    data = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    left = data[data["primary"]].copy()
    left["label"] = (
        left["model"] + " (" + left["aggregation"].map(lambda a: AGG_LABELS.get(a, a)) + ")"
    )
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
        ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        legend_outside(ax)
    k = probe_shots(frames[0], shots) if frames else ""
    fig.suptitle(with_dataset(f"Linear probes per layer ({k}-shot, test accuracy)", dataset))
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
    dataset: str | None = None,
) -> None:
    """Fig 11: per model, accuracy against normalised layer index for every aggregation (CLS, means, pooled)
    and for single tokens (mean over positions, min–max band) at the taps with per-token probes; below, the
    per-token accuracy map of the last such tap."""
    n = len(tables)
    fig, axes = plt.subplots(
        2, n, figsize=(4.6 * n, 7.2), squeeze=False, gridspec_kw={"height_ratios": [3, 2]}
    )
    for j, (model, df) in enumerate(tables.items()):
        k = probe_shots(df, shots)
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
            # drawn just right of its depth, so it does not hide the read-out lines' markers there
            ax.errorbar(
                s["depth"] + 0.03, s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], fmt="D", color="k",
                capsize=3, label="token (mean, min–max)",
            )  # fmt: skip
        _chance(ax, d)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("normalised layer index")
        ax.set_ylabel("linear probe accuracy")
        ax.set_title(f"{model} ({k}-shot)")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(
            handles, [AGG_LABELS.get(lab, lab) for lab in labels], fontsize=6, loc="upper center",
            bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
        )  # fmt: skip
        ax2 = axes[1, j]
        if len(tok):
            last = tok.sort_values("tap_index")["tap"].iloc[-1]
            m = token_map(d, last, k)
            im = ax2.imshow(m, cmap="viridis", vmin=0, vmax=1)
            fig.colorbar(im, ax=ax2, fraction=0.046, label="linear probe accuracy")
            ax2.set_title(f"per-token accuracy, {last}", fontsize=8)
            ax2.set_xticks(range(0, m.shape[1], max(1, m.shape[1] // 8)))
            ax2.set_yticks(range(0, m.shape[0], max(1, m.shape[0] // 8)))
            ax2.set_xlabel("token column")
            ax2.set_ylabel("token row")
        else:
            ax2.set_axis_off()
            ax2.text(
                0.5, 0.5, "no per-token probes", ha="center", va="center", transform=ax2.transAxes
            )
    fig.suptitle(
        with_dataset("Linear probes: CLS, pooled and single-token read-outs per layer", dataset)
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)
