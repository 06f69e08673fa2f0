"""Figures 3–7 from synthetic tables (fast), and the workflow's attention / ERF / skip outputs (slow, e2e)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seelike.figures.attention import (
    plot_attention_all_blocks,
    plot_attention_distance,
    plot_head_subsets,
    resolve_blocks,
)
from seelike.figures.receptive_field import plot_erf_grid
from seelike.figures.skip import plot_skip_cosine, plot_skip_ratio, sublayer_frame
from seelike.io import read_table


def test_resolve_blocks():
    assert resolve_blocks([0, 1, -2, -1], 12) == [0, 1, 10, 11]
    assert resolve_blocks([0, 1, -2, -1], 2) == [0, 1]  # duplicates dropped
    assert resolve_blocks([5, -9], 3) == []


def _att_table(n_blocks=3, heads=4):
    rng = np.random.default_rng(0)
    rows = []
    for b in range(n_blocks):
        d = np.sort(rng.uniform(2, 20, heads))
        for h in range(heads):
            rows.append({"block": b, "head": h, "rank": h, "mean_distance_px": d[h]})
    return pd.DataFrame(rows)


def _skip_table(family="vit", zero_block=None):
    rows = []
    if family == "vit":
        for b in range(3):
            for branch in ("attn", "mlp"):
                for t in range(5):
                    r = np.inf if b == zero_block else 1.0 + b + t
                    rows.append({"family": "vit", "block": b, "unit": f"blocks.{b}", "branch": branch, "token": t,
                                 "token_type": "cls" if t == 0 else "patch", "ratio_mean": r,
                                 "n_inf": int(np.isinf(r)), "cosine_mean": 0.1 * t})  # fmt: skip
    else:
        for b in range(4):
            rows.append({"family": "resnet", "block": b, "unit": f"layer{b}", "branch": "residual", "token": -1,
                         "token_type": "spatial", "ratio_mean": 2.0 + b, "n_inf": 0, "cosine_mean": 0.5})  # fmt: skip
    d = pd.DataFrame(rows)
    d.insert(0, "model", family)
    return d


def test_sublayer_frame_inf_and_mean():
    s = sublayer_frame(_skip_table(zero_block=1))
    patch = s[(s.token_type == "patch") & (s.branch == "attn")].set_index("block")["ratio"]
    assert patch[0] == pytest.approx(np.mean([2, 3, 4, 5]))
    assert np.isinf(patch[1])
    assert list(s[s.token_type == "cls"]["sublayer"]) == [0, 1, 2, 3, 4, 5]


def test_figures_write_png_and_pdf(tmp_path):
    att = {"vitA": _att_table(), "vitB": _att_table(5, 3)}
    plot_attention_distance(att, [0, 1, -2, -1], tmp_path / "f3.png", tmp_path / "f3.pdf")
    plot_attention_all_blocks(att, tmp_path / "f4.png", tmp_path / "f4.pdf")
    hs = pd.DataFrame([{"subset": s, "subset_mean_distance_px": 3.0 * s, "cnn_tap": f"layer1.{t}.out", "cka_se": 0.01,
                        "cnn_tap_order": t, "cka": 0.8 - 0.1 * s} for s in range(3) for t in range(2)])  # fmt: skip
    plot_head_subsets({"vitA": hs}, tmp_path / "f5.png", tmp_path / "f5.pdf")
    m = np.zeros((16, 16))
    m[7:9, 7:9] = 1
    sizes = pd.DataFrame([{"model": mod, "residual": r, "tap": t, "order": i, "r50_px": 1.0}
                          for mod in ("a", "b") for r in ("post", "pre") for i, t in enumerate(("x", "y"))])  # fmt: skip
    plot_erf_grid({"a": {"x": m, "y": 2 * m}, "b": {"x": m, "y": np.zeros((16, 16))}}, sizes,
                  tmp_path / "f6.png", tmp_path / "f6.pdf")  # fmt: skip
    skip = {"vit": _skip_table(zero_block=2), "resnet": _skip_table("resnet")}
    plot_skip_ratio(skip, tmp_path / "f7.png", tmp_path / "f7.pdf")
    plot_skip_cosine(skip, tmp_path / "f7c.png", tmp_path / "f7c.pdf")
    for name in ("f3", "f4", "f5", "f6", "f7", "f7c"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000


# ------------------------------------------------------------------ end to end on tests/configs/tiny.yaml
@pytest.mark.slow
def test_attention_outputs(workflow_run):
    res = workflow_run / "results"
    df, meta = read_table(res / "attention" / "digits" / "vit.parquet")
    assert meta["cls"] == "drop_renorm" and meta["n_images"] == 16 and meta["grid_hw"] == [8, 8]
    assert len(df) == 2 * 4  # tiny ViT: depth 2, 4 heads
    # an 8x8 grid of 4 px patches: every distance lies between 0 and the grid's diagonal
    assert df["mean_distance_px"].between(0, 4 * 7 * np.sqrt(2)).all()
    assert not (
        res / "attention" / "digits" / "resnet.parquet"
    ).exists()  # CNNs get no attention table
    hs, hmeta = read_table(res / "attention" / "digits" / "head_subsets" / "vit__resnet.parquet")
    assert hmeta["subset_size"] == 2 and hs["subset"].nunique() == 2
    assert hs["cka"].between(-0.2, 1.0001).all()
    assert hs.groupby("subset")["subset_mean_distance_px"].first().is_monotonic_increasing
    for fig in ("fig3_attention_distance", "fig4_attention_distance_all", "fig5_head_subset_cka"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / "digits" / f"{fig}.{ext}").stat().st_size > 1000


@pytest.mark.slow
def test_erf_outputs(workflow_run):
    res = workflow_run / "results"
    for model, family in (("vit", "vit"), ("resnet", "resnet")):
        df, meta = read_table(res / "erf" / "digits" / f"{model}.parquet")
        assert meta["n_images"] == 4 and set(df["residual"]) == {"post", "pre"}
        assert (df["family"] == family).all()
        with np.load(res / "erf" / "digits" / f"{model}.npz") as z:
            for tap in df["tap"]:
                assert z[tap].shape == (32, 32) and np.isfinite(z[tap]).all()
        post = df[df.residual == "post"].sort_values("order")
        assert (post["r90_px"] >= post["r50_px"]).all()
        # 4 images: 4 groups of one image, a jackknife SE and 4 replicates per size
        assert (df["n_groups"] == 4).all() and np.isfinite(df["r50_px_se"]).all()
        assert all(len(r) == 4 for r in df["r90_px_jk"])
    sizes = pd.read_csv(res / "figures" / "digits" / "fig6_erf_sizes.csv")
    assert set(sizes["model"]) == {"vit", "resnet"}
    for ext in ("png", "pdf"):
        assert (res / "figures" / "digits" / f"fig6_erf.{ext}").stat().st_size > 1000


@pytest.mark.slow
def test_skip_outputs(workflow_run):
    res = workflow_run / "results"
    vit, meta = read_table(res / "skip" / "digits" / "vit.parquet")
    assert meta["n_images"] == 16
    assert set(vit["branch"]) == {"attn", "mlp"} and set(vit["token_type"]) == {"cls", "patch"}
    assert len(vit) == 2 * 2 * 65
    assert not vit["ratio_mean"].isna().any()
    cnn, _ = read_table(res / "skip" / "digits" / "resnet.parquet")
    assert (cnn["branch"] == "residual").all() and len(cnn) == 8
    for fig in ("fig7_skip_ratio", "fig7_skip_cosine"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / "digits" / f"{fig}.{ext}").stat().st_size > 1000
