"""Fig 7: skip-connection norm ratios per block and token type, and the cosines of App. E.2."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures.common import (
    integer_ticks,
    legend_outside,
    panel_grid,
    plain_log_axis,
    save_figure,
    with_dataset,
)


def _with_sublayer(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its `sublayer` column (residual sublayers in forward order), derived for tables written before
    the column existed (ViT: 2·block + MLP; CNN: the unit index)."""
    d = df.copy()
    if "sublayer" not in d:
        d["sublayer"] = d["block"] * 2 + (d["branch"] == "mlp").astype(int)
        d.loc[d["branch"] == "residual", "sublayer"] = d["block"]
    return d


def sublayer_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Skip-table rows aggregated per sublayer and token type (cls / register / patch / spatial).

    The ratio of a group is the mean of its tokens' mean ratios, inf when any token's is inf. `sublayer` counts
    sublayers in forward order (the table's `sublayer` column: ViT 2·block + 0 attention / 1 MLP, XCiT three per
    block, a CNN one per unit).
    """
    d = _with_sublayer(df)

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


def _sublayer_ticks(ax, d: pd.DataFrame, sublayers: list, max_ticks: int = 24) -> None:
    """y ticks of the per-token heatmap: each sublayer as 'block branch' (e.g. '3 mlp'), thinned."""
    names = d.groupby("sublayer")[["block", "branch"]].first()
    step = max(1, -(-len(sublayers) // max_ticks))
    idx = list(range(0, len(sublayers), step))
    labels = [
        f"{names.loc[sublayers[i], 'block']} {names.loc[sublayers[i], 'branch']}" for i in idx
    ]
    ax.set_yticks([i + 0.5 for i in idx], labels, fontsize=6, rotation=0)


def _token_ticks(ax, d: pd.DataFrame, tokens: list, n_patch_ticks: int = 8) -> None:
    """x ticks of the per-token heatmap: every prefix token by name (CLS, reg), patches by patch index."""
    types = d.groupby("token")["token_type"].first()
    prefix = [i for i, t in enumerate(tokens) if types[t] not in ("patch", "spatial")]
    patches = [i for i, t in enumerate(tokens) if types[t] in ("patch", "spatial")]
    ticks = [(i, "CLS" if types[tokens[i]] == "cls" else "reg") for i in prefix]
    if patches:
        step = max(1, -(-len(patches) // n_patch_ticks))
        first = step if prefix else 0  # patch 0 would sit on the last prefix token's label
        ticks += [(patches[k], str(k)) for k in range(first, len(patches), step)]
    ax.set_xticks([i + 0.5 for i, _ in ticks], [lab for _, lab in ticks], fontsize=6, rotation=0)


def plot_skip_ratio(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """Fig 7: per ViT, a heatmap of log10 ‖z‖/‖f(z)‖ per token × sublayer (diverging around 0: red = the skip
    path is the larger) and lines for CLS vs patch tokens; one panel with every CNN's units. Infinite ratios
    (zero branches) are left blank and counted in the title."""
    # per-token tables (ViT, XCiT, MLP-Mixer: token sequences) get heatmaps; pooled ones (CNNs, Swin) one panel
    vits = {m: df for m, df in tables.items() if (df["token_type"] != "spatial").any()}
    cnns = {m: df for m, df in tables.items() if m not in vits}
    n_rows = len(vits) + (1 if cnns else 0)
    fig, axes = plt.subplots(n_rows, 2, figsize=(12, 3.8 * n_rows), squeeze=False)
    for i, (model, df) in enumerate(vits.items()):
        d = _with_sublayer(df)
        mat = d.pivot_table(index="sublayer", columns="token", values="ratio_mean", aggfunc="first")
        with np.errstate(divide="ignore"):
            logm = np.log10(np.where(np.isfinite(mat.to_numpy()), mat.to_numpy(), np.nan))
        n_inf = int(np.isinf(mat.to_numpy()).sum())
        ax = axes[i, 0]
        span = float(np.nanmax(np.abs(logm))) if np.isfinite(logm).any() else 1.0
        sns.heatmap(
            logm, ax=ax, cmap="RdBu_r", center=0, vmin=-span, vmax=span,
            cbar_kws={"label": "log10 ‖z‖/‖f(z)‖  (> 0: skip larger)"},
        )  # fmt: skip
        ax.invert_yaxis()
        _sublayer_ticks(ax, d, list(mat.index))
        _token_ticks(ax, d, list(mat.columns))
        ax.set_xlabel("token (prefix tokens, then patch index, row-major)")
        ax.set_ylabel("residual sublayer (block, branch)")
        ax.set_title(f"{model}: per token" + (f" ({n_inf} infinite)" if n_inf else ""))
        s = sublayer_frame(df)
        ax = axes[i, 1]
        for (branch, ttype), g in s.groupby(["branch", "token_type"]):
            ax.plot(g["block"], _finite(g["ratio"]), marker="o" if branch == "attn" else "s",
                    label=f"{branch} · {ttype}")  # fmt: skip
        ax.axhline(1, color="0.6", lw=0.8, ls=":")
        ax.set_yscale("log")
        plain_log_axis(ax)
        integer_ticks(ax)
        ax.set_xlabel("block")
        ax.set_ylabel("‖z‖/‖f(z)‖ (log scale)")
        ax.set_title(f"{model}: CLS vs patch tokens (mean over tokens)")
        ax.grid(alpha=0.3)
        legend_outside(ax, title="branch · token")
    if cnns:
        ax = axes[-1, 0]
        for model, df in cnns.items():
            s = sublayer_frame(df)
            ax.plot(s["sublayer"], _finite(s["ratio"]), marker="o", label=model)
        ax.axhline(1, color="0.6", lw=0.8, ls=":")
        ax.set_yscale("log")
        plain_log_axis(ax)
        integer_ticks(ax)
        ax.set_xlabel("residual unit (forward order)")
        ax.set_ylabel("‖shortcut‖/‖branch‖ (log scale)")
        ax.set_title("CNNs (mean over positions)")
        ax.grid(alpha=0.3)
        legend_outside(ax)
        axes[-1, 1].set_visible(False)
    fig.suptitle(
        with_dataset(
            "Skip-connection norm ratio ‖z‖/‖f(z)‖ (z = identity path, f = branch)", dataset
        )
    )
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_skip_cosine(
    tables: Mapping[str, pd.DataFrame],
    png: str | Path,
    pdf: str | Path | None = None,
    dataset: str | None = None,
) -> None:
    """App. E.2: cosine between a sublayer's output (z + f) and its branch f, per block (CLS vs patch tokens)."""
    fig, axes = panel_grid(len(tables), width=5.2)
    for ax, (model, df) in zip(axes, tables.items(), strict=False):
        s = sublayer_frame(df)
        for (branch, ttype), g in s.groupby(["branch", "token_type"]):
            ax.plot(g["block"], g["cosine"], marker="o", label=f"{branch} · {ttype}")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        integer_ticks(ax)
        ax.set_xlabel("block / unit")
        ax.set_ylabel("cos(z + f(z), f(z))")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        legend_outside(ax, title="branch · token")
    fig.suptitle(with_dataset("Cosine between sublayer output and branch output", dataset))
    fig.tight_layout()
    save_figure(fig, png, pdf)
