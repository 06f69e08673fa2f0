"""Figures a reader can trust at a glance, checked on the matplotlib objects (no image comparison): whole-number
head and block ticks, no marker on an axes' edge, no block hidden behind another, colour bars naming their
quantity, pixel axes on ERF maps, plain numbers on log axes, legends off the data, the dataset in the title."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage
from test_e2e_attention import _att_table, _skip_table
from test_e2e_probes import _loc_table, _probe_table

import seelike.figures.attention as fig_att
import seelike.figures.cka as fig_cka
import seelike.figures.localisation as fig_loc
import seelike.figures.measures as fig_measures
import seelike.figures.probes as fig_probes
import seelike.figures.receptive_field as fig_erf
import seelike.figures.skip as fig_skip


@pytest.fixture
def figs(monkeypatch):
    """The figures the plotting functions would save, kept open for inspection."""
    out = []
    for mod in (fig_att, fig_cka, fig_loc, fig_measures, fig_probes, fig_erf, fig_skip):
        monkeypatch.setattr(mod, "save_figure", lambda fig, png, pdf=None: out.append(fig))
    return out


def _tick_texts(ax, axis="x"):
    ax.figure.canvas.draw()
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    return [
        t.get_text()
        for t in ticks
        if t.get_text() and lo <= t.get_position()[0 if axis == "x" else 1] <= hi
    ]


def _colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _attention_with_global_head(n_blocks=4, heads=4):
    df = _att_table(n_blocks, heads)
    df.loc[(df.block == 0) & (df["rank"] == heads - 1), "mean_distance_px"] = (
        df["mean_distance_px"].max() + 5
    )
    return df


def test_fig3_whole_head_ticks_markers_inside_block0_on_top(figs):
    df = _attention_with_global_head()
    fig_att.plot_attention_distance({"vit": df}, [0, 1, -2, -1], "x.png", dataset="digits")
    ax = figs[0].axes[0]
    labels = _tick_texts(ax, "x")
    assert labels and all(re.fullmatch(r"\d+", t) for t in labels), labels
    assert {int(t) for t in labels} <= set(range(4))
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [c.get_label() for c in dots] == ["block 0", "block 1", "block 2", "block 3"]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xy = np.concatenate([c.get_offsets() for c in dots])
    # every marker strictly inside, the largest clear of the top edge (not cut in half)
    assert (xy[:, 0] > x0).all() and (xy[:, 0] < x1).all() and (xy[:, 1] > y0).all()
    assert xy[:, 1].max() < y1 - 0.05 * (y1 - y0)
    assert y0 == 0
    # blocks dodged (never at the same x) and block 0 drawn on top of the others
    xs = [tuple(np.round(c.get_offsets()[:, 0], 6)) for c in dots]
    assert len(set(xs)) == len(xs)
    assert dots[0].get_zorder() > max(c.get_zorder() for c in dots[1:])
    assert len({c.get_paths()[0].vertices.tobytes() for c in dots}) == len(
        dots
    )  # one marker shape each
    # the legend sits beside the panel, not on its data
    figs[0].canvas.draw()
    leg = ax.get_legend().get_window_extent()
    assert leg.x0 >= ax.get_window_extent().x1
    assert "digits" in figs[0]._suptitle.get_text()


def test_fig4_whole_block_ticks_and_a_rank_colour_bar(figs):
    fig_att.plot_attention_all_blocks({"vit": _att_table(12, 6)}, "x.png")
    ax = figs[0].axes[0]
    assert all(re.fullmatch(r"\d+", t) for t in _tick_texts(ax, "x"))
    assert any("rank" in lab for lab in _colorbar_labels(figs[0]))
    xy = ax.collections[0].get_offsets()
    assert xy[:, 1].max() < ax.get_ylim()[1] and (xy[:, 0] > ax.get_xlim()[0]).all()


def test_fig5_legend_names_the_cnn_units(figs):
    hs = pd.DataFrame([{"subset": s, "subset_mean_distance_px": 3.0 * s, "cnn_tap": f"layer1.{t}.out", "cka_se": 0.01,
                        "cnn_tap_order": t, "cka": 0.8 - 0.1 * s} for s in range(3) for t in range(2)])  # fmt: skip
    fig_att.plot_head_subsets({"vit": hs}, "x.png", cnn="resnet", dataset="digits")
    leg = figs[0].axes[0].get_legend()
    assert leg.get_title().get_text() == "resnet unit"
    assert [t.get_text() for t in leg.get_texts()] == ["layer1.0.out", "layer1.1.out"]


def test_fig6_erf_maps_have_a_colour_bar_and_pixel_axes(figs):
    m = np.zeros((32, 24))
    m[15:17, 11:13] = 1
    sizes = pd.DataFrame([{"model": "a", "residual": r, "tap": t, "order": i, "r50_px": 1.5, "centroid_row": 16.0,
                           "centroid_col": 12.0} for r in ("post", "pre") for i, t in enumerate(("x", "y"))])  # fmt: skip
    fig_erf.plot_erf_grid({"a": {"x": m, "y": 2 * m}}, sizes, "x.png", dataset="digits")
    fig = figs[0]
    bars = _colorbar_labels(fig)
    assert len(bars) == 1 and "∂" in bars[0] and "maximum" in bars[0]
    maps = [ax for ax in fig.axes if any(isinstance(i, AxesImage) for i in ax.images)]
    assert len(maps) == 4
    for ax in maps:
        im = ax.images[0]
        assert tuple(im.get_extent()) == (0, 24, 32, 0)  # input pixels
        assert [int(t) for t in _tick_texts(ax, "x")] == [0, 12, 24]
        assert im.get_clim() == (0, 1)
        assert "r50 = 1.5 px" in ax.get_title()
    assert "px" in maps[0].get_ylabel() and "px" in maps[-1].get_xlabel()
    assert "digits" in fig._suptitle.get_text()


def test_fig7_log_axes_plain_numbers_and_labelled_heatmap(figs):
    skip = {"vit": _skip_table(), "resnet": _skip_table("resnet")}
    fig_skip.plot_skip_ratio(skip, "x.png", dataset="digits")
    fig = figs[0]
    heat, lines, cnn = fig.axes[0], fig.axes[1], fig.axes[2]
    for ax in (lines, cnn):
        assert ax.get_yscale() == "log"
        labels = _tick_texts(ax, "y")
        assert labels and all(re.fullmatch(r"[\d.]+", t) for t in labels), labels
        assert all(re.fullmatch(r"\d+", t) for t in _tick_texts(ax, "x"))
    assert _tick_texts(heat, "x")[0] == "CLS"
    assert _tick_texts(heat, "y")[:2] == ["0 attn", "0 mlp"]
    quad = heat.collections[0]
    lo, hi = quad.get_clim()
    assert lo == pytest.approx(-hi)  # diverging around a ratio of 1
    assert any("log10" in lab for lab in _colorbar_labels(fig))
    fig_skip.plot_skip_cosine(skip, "y.png", dataset="digits")
    assert "digits" in figs[1]._suptitle.get_text()


def test_fig11_legend_spells_out_the_read_outs(figs):
    tables = {"vit": _probe_table("vit", ["cls", "mean_spatial"])}
    fig_probes.plot_probe_aggregations(tables, "x.png", dataset="digits")
    texts = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert fig_probes.AGG_LABELS["cls"] in texts and "cls" not in texts
    assert "linear probe accuracy" in _colorbar_labels(figs[0])
    fig_probes.plot_probe_models(tables, "y.png", dataset="digits")
    texts = [t.get_text() for t in figs[1].axes[0].get_legend().get_texts()]
    assert texts[0] == "vit (CLS token)"


def test_fig10_legend_names_the_patches(figs):
    fig_loc.plot_localisation_summary({"vit": _loc_table()}, "x.png", dataset="digits")
    ax = figs[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["own patch", "best other patch"]
    assert "digits" in ax.get_title()


def test_every_figure_names_the_dataset_when_given(figs):
    fig_loc.plot_localisation(
        _loc_table(), {"grid_hw": [3, 3], "model": "vit", "tap": "b"}, "x.png", dataset="cifar10"
    )
    df = pd.DataFrame({"depth": [0, 1], "cka": [1.0, 0.8], "std": [0.1, 0.1], "se": [0.01, 0.02]})
    fig_cka.plot_per_block_cka([(df, {"model_a": "r", "model_b": "o"})], "x.png", dataset="cifar10")
    titles = [f._suptitle.get_text() if f._suptitle else f.axes[0].get_title() for f in figs]
    assert all("cifar10" in t for t in titles), titles
    assert "±1 SE" in figs[1].axes[0].get_ylabel()


def test_cka_heatmap_title_stays_clear_of_the_colour_bar(figs):
    n = 16
    ia, ib = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    df = pd.DataFrame({"tap_a": [f"blocks.{i}.attn" for i in ia.ravel()], "index_a": ia.ravel(), "kind_a": "x",
                       "tap_b": [f"blocks.{j}.attn" for j in ib.ravel()], "index_b": ib.ravel(), "kind_b": "x",
                       "cka": 0.5, "cka_se": 0.00432, "null_z": 5.0})  # fmt: skip
    meta = {"model_a": "vit", "model_b": "vit", "plan": {"n_images": 96, "repeats": 2, "batch_size": 32,
            "samples_hash": "17836160abcdef"}, "uncertainty": {"null_floor": 0.0654, "permutations": 20}}  # fmt: skip
    fig_cka.plot_cka_heatmap(df, meta, "x.png", dataset="digits")
    fig = figs[0]
    fig.canvas.draw()
    ax, cbar = fig.axes[0], fig.axes[1]
    assert cbar.get_ylabel() == "minibatch CKA"
    title = ax.title.get_window_extent()
    assert title.x1 <= cbar.get_window_extent().x0
    assert "digits" in ax.get_title() and "grey dot" in ax.get_title()
