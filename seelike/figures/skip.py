"""Fig 7: skip-connection norm ratios per block and token type, and the cosines of App. E.2."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from seelike.figures.common import panel_grid, save_figure


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


def plot_skip_ratio(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """Fig 7: per ViT, a heatmap of log10 ‖z‖/‖f(z)‖ per token × sublayer and lines for CLS vs patch tokens;
    one panel with every CNN's units. Infinite ratios (zero branches) are left blank and counted in the title."""
    # per-token tables (ViT, XCiT, MLP-Mixer: token sequences) get heatmaps; pooled ones (CNNs, Swin) one panel
    vits = {m: df for m, df in tables.items() if (df["token_type"] != "spatial").any()}
    cnns = {m: df for m, df in tables.items() if m not in vits}
    n_rows = len(vits) + (1 if cnns else 0)
    fig, axes = plt.subplots(n_rows, 2, figsize=(11, 3.4 * n_rows), squeeze=False)
    for i, (model, df) in enumerate(vits.items()):
        d = _with_sublayer(df)
        mat = d.pivot_table(index="sublayer", columns="token", values="ratio_mean", aggfunc="first")
        with np.errstate(divide="ignore"):
            logm = np.log10(np.where(np.isfinite(mat.to_numpy()), mat.to_numpy(), np.nan))
        n_inf = int(np.isinf(mat.to_numpy()).sum())
        ax = axes[i, 0]
        sns.heatmap(logm, ax=ax, cmap="viridis", cbar_kws={"label": "log10 ‖z‖/‖f(z)‖"})
        ax.invert_yaxis()
        ax.set_xlabel("token (prefix tokens first)")
        ax.set_ylabel("residual sublayer (forward order)")
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
            ax.plot(s["sublayer"], _finite(s["ratio"]), marker="o", label=model)
        ax.set_yscale("log")
        ax.set_xlabel("residual sublayer (forward order)")
        ax.set_ylabel("‖shortcut‖/‖branch‖")
        ax.set_title("pooled over positions (CNNs, maps)")
        ax.legend(fontsize=7)
        axes[-1, 1].set_visible(False)
    fig.suptitle("Skip-connection norm ratio ‖z‖/‖f(z)‖ (z = identity path, f = branch)")
    fig.tight_layout()
    save_figure(fig, png, pdf)


def plot_skip_cosine(
    tables: Mapping[str, pd.DataFrame], png: str | Path, pdf: str | Path | None = None
) -> None:
    """App. E.2: cosine between a sublayer's output (z + f) and its branch f, per block (CLS vs patch tokens)."""
    fig, axes = panel_grid(len(tables))
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
