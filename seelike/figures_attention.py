"""Figures 3–7 (attention distance, head-subset CKA, effective receptive fields, skip connections), drawn from
the tidy tables only (Agg backend, PNG + PDF), so each reruns in seconds without a GPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures import save_figure

__all__ = [
    "erf_size_summary",
    "plot_attention_all_blocks",
    "plot_attention_distance",
    "plot_erf_grid",
    "plot_head_subsets",
    "plot_skip_cosine",
    "plot_skip_ratio",
    "resolve_blocks",
    "sublayer_frame",
]


def resolve_blocks(blocks: Sequence[int], n_blocks: int) -> list[int]:
    """Block indices with negatives counted from the end, out-of-range ones dropped, duplicates removed."""
    out: list[int] = []
    for b in blocks:
        i = b + n_blocks if b < 0 else b
        if 0 <= i < n_blocks and i not in out:
            out.append(i)
    return out


def _panels(n: int, width: float = 4.2, height: float = 3.4, rows: int = 1):
    cols = -(-n // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_attention_distance(
    tables: Mapping[str, pd.DataFrame],
    blocks: Sequence[int],
    png: str | Path,
    pdf: str | Path | None = None,
) -> None:
    """Fig 3/4 style: per model, the heads of the chosen blocks sorted by mean distance (0 = most local)."""
    fig, axes = _panels(len(tables))
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
    fig, axes = _panels(len(tables))
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
    fig, axes = _panels(len(tables))
    for ax, (model, df) in zip(axes, tables.items()):
        order = df.sort_values("cnn_tap_order")["cnn_tap"].unique().tolist()
        sns.lineplot(
            data=df.sort_values("subset_mean_distance_px"), x="subset_mean_distance_px", y="cka",
            hue="cnn_tap", hue_order=order, marker="o", ax=ax, palette="rocket",
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


def sublayer_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Skip-table rows aggregated per sublayer and token type (cls / register / patch / spatial).

    The ratio of a group is the mean of its tokens' mean ratios, inf when any token's is inf. `sublayer` counts
    sublayers in forward order (ViT: 2·block + 0 attention / 1 MLP; CNN: the unit index).
    """
    d = df.copy()
    d["sublayer"] = d["block"] * 2 + (d["branch"] == "mlp").astype(int)
    d.loc[d["branch"] == "residual", "sublayer"] = d["block"]

    def agg(g: pd.DataFrame) -> pd.Series:
        r = g["ratio_mean"].to_numpy()
        return pd.Series(
            {
                "ratio": np.inf
                if np.isinf(r).any()
                else float(np.nanmean(r))
                if np.isfinite(r).any()
                else np.nan,
                "cosine": float(g["cosine_mean"].mean()),
                "n_inf": int(g["n_inf"].sum()),
            }
        )

    keys = ["model", "family", "sublayer", "block", "branch", "token_type"]
    return (
        d.groupby(keys, sort=True)[["ratio_mean", "cosine_mean", "n_inf"]].apply(agg).reset_index()
    )


def _finite(y: pd.Series) -> np.ndarray:
    v = y.to_numpy(dtype=np.float64)
    return np.where(np.isfinite(v), v, np.nan)


def plot_skip_ratio(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """Fig 7: per ViT, a heatmap of log10 ‖z‖/‖f(z)‖ per token × sublayer and lines for CLS vs patch tokens;
    one panel with every CNN's units. Infinite ratios (zero branches) are left blank and counted in the title."""
    vits = {m: df for m, df in tables.items() if (df["family"] == "vit").all()}
    cnns = {m: df for m, df in tables.items() if m not in vits}
    n_rows = len(vits) + (1 if cnns else 0)
    fig, axes = plt.subplots(n_rows, 2, figsize=(11, 3.4 * n_rows), squeeze=False)
    for i, (model, df) in enumerate(vits.items()):
        d = df.copy()
        d["sublayer"] = d["block"] * 2 + (d["branch"] == "mlp").astype(int)
        mat = d.pivot_table(index="sublayer", columns="token", values="ratio_mean", aggfunc="first")
        with np.errstate(divide="ignore"):
            logm = np.log10(np.where(np.isfinite(mat.to_numpy()), mat.to_numpy(), np.nan))
        n_inf = int(np.isinf(mat.to_numpy()).sum())
        ax = axes[i, 0]
        sns.heatmap(logm, ax=ax, cmap="viridis", cbar_kws={"label": "log10 ‖z‖/‖f(z)‖"})
        ax.invert_yaxis()
        ax.set_xlabel("token (prefix tokens first)")
        ax.set_ylabel("sublayer (2·block + MLP)")
        ax.set_title(f"{model}: per token" + (f" ({n_inf} infinite)" if n_inf else ""))
        ax.set_xticks([])
        s = sublayer_frame(df)
        ax = axes[i, 1]
        for (branch, ttype), g in s.groupby(["branch", "token_type"]):
            ax.plot(g["block"], _finite(g["ratio"]), marker="o" if branch == "attn" else "s",
                    label=f"{branch} · {ttype}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("block")
        ax.set_ylabel("‖z‖/‖f(z)‖")
        ax.set_title(f"{model}: CLS vs patch tokens")
        ax.legend(fontsize=7)
    if cnns:
        ax = axes[-1, 0]
        for model, df in cnns.items():
            s = sublayer_frame(df)
            ax.plot(s["block"], _finite(s["ratio"]), marker="o", label=model)
        ax.set_yscale("log")
        ax.set_xlabel("residual unit")
        ax.set_ylabel("‖shortcut‖/‖branch‖")
        ax.set_title("CNNs (mean over positions)")
        ax.legend(fontsize=7)
        axes[-1, 1].set_visible(False)
    fig.suptitle("Skip-connection norm ratio ‖z‖/‖f(z)‖ (z = identity path, f = branch)")
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_skip_cosine(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """App. E.2: cosine between a sublayer's output (z + f) and its branch f, per block (CLS vs patch tokens)."""
    fig, axes = _panels(len(tables))
    for ax, (model, df) in zip(axes, tables.items()):
        s = sublayer_frame(df)
        for (branch, ttype), g in s.groupby(["branch", "token_type"]):
            ax.plot(g["block"], g["cosine"], marker="o", label=f"{branch} · {ttype}")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("block / unit")
        ax.set_ylabel("cos(z + f(z), f(z))")
        ax.set_title(model)
        ax.legend(fontsize=7)
    fig.suptitle("Cosine between sublayer output and branch output")
    fig.tight_layout()
    save_figure(fig, png, pdf)
