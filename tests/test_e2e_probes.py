"""Figures 9–11, 13 from synthetic tables (fast), and the workflow's probe and localisation outputs (slow, e2e)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seelike.figures.localisation import (
    localisation_summary,
    plot_localisation,
    plot_localisation_summary,
)
from seelike.figures.probes import plot_probe_aggregations, plot_probe_models, token_map
from seelike.io import read_table
from seelike.tables import primary_aggregation


def _probe_table(model, aggs, n_taps=4, grid=(2, 3)):
    rows = []
    for i in range(n_taps):
        for a in aggs:
            rows.append({"model": model, "tap": f"t{i}", "tap_index": i, "depth": i / (n_taps - 1), "shots": "10",
                         "aggregation": a, "token": -1, "token_row": -1, "token_col": -1,
                         "accuracy": 0.2 + 0.2 * i, "chance": 0.1})  # fmt: skip
    for g in range(grid[0] * grid[1]):
        rows.append({"model": model, "tap": f"t{n_taps - 1}", "tap_index": n_taps - 1, "depth": 1.0,
                     "shots": "10", "aggregation": "token", "token": g, "token_row": g // grid[1],
                     "token_col": g % grid[1], "accuracy": g / 10, "chance": 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def _loc_table(h=3, w=3, constant=()):
    rows = []
    for t in range(h * w):
        for g in range(h * w):
            c = g in constant
            rows.append({"token": t, "patch": g, "token_row": t // w, "token_col": t % w, "patch_row": g // w,
                         "patch_col": g % w, "cka": 0.0 if c else (0.9 if t == g else 0.1 + 0.01 * g),
                         "token_constant": False, "patch_constant": c})  # fmt: skip
    return pd.DataFrame(rows)


def test_primary_aggregation_and_token_map():
    assert primary_aggregation(_probe_table("v", ["cls", "mean_spatial"])) == "cls"
    assert primary_aggregation(_probe_table("r", ["pool_final", "mean_spatial"])) == "pool_final"
    assert primary_aggregation(_probe_table("g", ["mean_spatial", "mean_all"])) == "mean_spatial"
    m = token_map(_probe_table("v", ["cls"]), "t3", "10")
    np.testing.assert_allclose(m, [[0.0, 0.1, 0.2], [0.3, 0.4, 0.5]])


def test_localisation_summary_skips_constant_patches():
    s = localisation_summary(_loc_table(constant=(0,))).set_index("token")
    assert 0 not in s.index  # its own patch is constant: no own-patch CKA to speak of
    assert s["own_is_max"].all() and s.loc[4, "own"] == 0.9
    assert s.loc[8, "best_other"] == pytest.approx(0.1 + 0.01 * 7)


def test_probe_and_localisation_figures(tmp_path):
    tables = {"vit": _probe_table("vit", ["cls", "mean_spatial", "mean_all"]),
              "cnn": _probe_table("cnn", ["pool_final", "mean_spatial"], n_taps=6)}  # fmt: skip
    tables["cnn"] = tables["cnn"][
        tables["cnn"].aggregation != "token"
    ]  # a model without per-token probes
    plot_probe_aggregations(tables, tmp_path / "f11.png", tmp_path / "f11.pdf")
    plot_probe_models(tables, tmp_path / "f13.png", tmp_path / "f13.pdf")
    loc = _loc_table(constant=(0, 1))
    plot_localisation(
        loc,
        {"grid_hw": [3, 3], "model": "vit", "tap": "b"},
        tmp_path / "f9.png",
        tmp_path / "f9.pdf",
    )
    plot_localisation_summary(
        {"vit": loc, "cnn": _loc_table(2, 2)}, tmp_path / "f10.png", tmp_path / "f10.pdf"
    )
    for name in ("f11", "f13", "f9", "f10"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000
    with pytest.raises(ValueError, match="shots"):
        plot_probe_models(tables, tmp_path / "x.png", shots="5")


# ------------------------------------------------------------------ end to end on tests/configs/tiny.yaml
@pytest.mark.slow
def test_probe_outputs(workflow_run):
    res = workflow_run / "results"
    for model, taps, aggs in (
        ("vit", 3, {"cls", "mean_spatial", "mean_all", "token"}),  # embed + 2 blocks
        (
            "resnet",
            9,
            {"mean_spatial", "token"},
        ),  # stem + 8 units; final stage 1×1: no separate pooling
    ):
        df, meta = read_table(res / "probes" / "digits" / f"{model}.parquet")
        assert meta["shots"] == ["10"] and meta["n_test"] == 96 and meta["holdout"] == 0.2
        assert len(meta["samples_hash"]) == 16 and meta["tie_break"] == "larger lambda"
        assert df["tap"].nunique() == taps and set(df["aggregation"]) == aggs
        assert (df["n_train"] == 100).all() and (df["n_test"] == 96).all()  # exactly 10 per class
        assert df["depth"].between(0, 1).all() and df["depth"].max() == 1.0
        assert df["lam"].isin(meta["lambdas"]).all() and df["accuracy"].between(0, 1).all()
        final = df[(df.depth == 1.0) & (df.aggregation != "token")]["accuracy"].max()
        # trained digits models: the final layer is linearly decodable far above chance (0.1)
        assert final > 0.3, final
    vit, _ = read_table(res / "probes" / "digits" / "vit.parquet")
    tok = vit[vit.aggregation == "token"]
    assert len(tok) == 64 and set(tok["tap"]) == {"blocks.1.block"}  # 8×8 patch grid, CLS excluded
    for fig in ("fig11_probes", "fig13_probes_models"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / "digits" / f"{fig}.{ext}").stat().st_size > 1000


@pytest.mark.slow
def test_localisation_outputs(workflow_run):
    res = workflow_run / "results"
    vit, meta = read_table(res / "localisation" / "digits" / "vit.parquet")
    assert meta["tap"] == "blocks.1.block" and meta["grid_hw"] == [8, 8] and meta["n_images"] == 64
    assert meta["patch_px"] == [4, 4] and len(vit) == 64 * 64
    summ = localisation_summary(vit)
    # a 2-block ViT keeps its tokens close to their own patches
    assert summ["own_is_max"].mean() > 0.5
    cnn, cmeta = read_table(res / "localisation" / "digits" / "resnet.parquet")
    assert cmeta["tap"] == "layer2.1.out" and cmeta["grid_hw"] == [4, 4] and len(cnn) == 16 * 16
    assert cnn["cka"].between(-0.2, 1.0001).all()
    # 2 minibatches: each cell's jackknife SE and the summary's SEs and argmax interval (one value per table)
    for df in (vit, cnn):
        assert np.isfinite(df["cka_se"]).all() and (df["summary_n_groups"] == 2).all()
        s = df.iloc[0]
        lo, hi = s["summary_own_is_argmax_ci_low"], s["summary_own_is_argmax_ci_high"]
        assert 0 <= lo <= hi <= 1 and np.isfinite(s["summary_own_se"])
    for fig in ("fig9_localisation_vit", "fig9_localisation_resnet", "fig10_localisation_summary"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / "digits" / f"{fig}.{ext}").stat().st_size > 1000
