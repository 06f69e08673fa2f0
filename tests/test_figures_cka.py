"""CKA figures say how sure each cell is: dotted cells indistinguishable from the null, the null floor and
median SE in the subtitle, error bars from the standard error on per-block plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.collections import PathCollection

import seelike.figures.cka as fig_cka


def _table(n=4, seed=0):
    rng = np.random.default_rng(seed)
    ia, ib = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    z = rng.normal(5, 3, size=(n, n))
    z[0, 1] = z[2, 3] = 0.5  # two cells within the null
    return pd.DataFrame(
        {
            "tap_a": [f"t{i}" for i in ia.ravel()], "index_a": ia.ravel(), "kind_a": "x",
            "tap_b": [f"u{j}" for j in ib.ravel()], "index_b": ib.ravel(), "kind_b": "x",
            "cka": rng.uniform(0, 1, n * n), "cka_se": 0.01, "null_z": z.ravel(),
        }
    )  # fmt: skip


def _capture(monkeypatch):
    figs = []
    monkeypatch.setattr(fig_cka, "save_figure", lambda fig, png, pdf=None: figs.append(fig))
    return figs


def test_heatmap_marks_cells_within_the_null_and_states_the_floor(monkeypatch):
    figs = _capture(monkeypatch)
    df = _table()
    meta = {"model_a": "a", "model_b": "b", "plan": {"n_images": 96, "repeats": 2, "batch_size": 32},
            "uncertainty": {"null_floor": 0.031, "permutations": 20, "null_z_threshold": 3.0}}  # fmt: skip
    fig_cka.plot_cka_heatmap(df, meta, "x.png")
    ax = figs[0].axes[0]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]  # the heatmap is a QuadMesh
    marked = np.concatenate([c.get_offsets() for c in dots])
    expected = {
        (i, j) for i, j, z in zip(df.index_a, df.index_b, df.null_z, strict=True) if z < 3.0
    }
    assert {(int(r - 0.5), int(c - 0.5)) for c, r in marked} == expected
    assert "null floor 0.031" in ax.get_title() and "median SE 0.01" in ax.get_title()


def test_heatmap_without_uncertainty_columns_still_draws(monkeypatch):
    figs = _capture(monkeypatch)
    df = _table().drop(columns=["cka_se", "null_z"])
    fig_cka.plot_cka_heatmap(df, {"model_a": "a", "model_b": "a"}, "x.png")
    assert "null floor" not in figs[0].axes[0].get_title()


def test_per_block_error_bars_are_the_standard_errors(monkeypatch):
    figs = _capture(monkeypatch)
    df = pd.DataFrame(
        {"depth": [0, 0.5, 1], "cka": [0.9, 0.7, 0.5], "std": [0.2] * 3, "se": [0.01, 0.02, 0.03]}
    )
    fig_cka.plot_per_block_cka([(df, {"model_a": "r", "model_b": "o"})], "x.png")
    bars = next(c for c in figs[0].axes[0].collections if hasattr(c, "get_segments")).get_segments()
    np.testing.assert_allclose([s[1][1] - s[0][1] for s in bars], 2 * df["se"])
