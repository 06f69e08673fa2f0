"""Agreement between similarity measures (Spearman over the cells both define) against scipy on the cells
picked by hand, and the per-measure heatmap and agreement figures written from small synthetic tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from scipy.stats import spearmanr

import seelike.figures.measures as fig_measures
from seelike.analyses.agreement import agreement_table, measure_agreement

TAPS_A = ["embed", "blocks.0.attn", "blocks.0.block", "blocks.1.attn", "blocks.1.block", "norm"]
TAPS_B = ["stem", "layer1.0.conv1", "layer1.0.out", "layer2.0.conv1", "layer2.0.out"]
BLOCK_OUTPUT = ("embed", "stem", "block", "out")


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def similarity_table(
    mats: dict[str, np.ndarray], taps_a: list[str], taps_b: list[str], constant=(), null_z=None
) -> pd.DataFrame:
    """A long similarity table as the workflow writes it (one row per measure × tap pair), rows shuffled;
    cells of a `constant` tap store 0."""
    ia, ib = np.meshgrid(np.arange(len(taps_a)), np.arange(len(taps_b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    const = np.array(
        [taps_a[i] in constant or taps_b[j] in constant for i, j in zip(ia, ib, strict=True)]
    )
    frames = []
    for measure, m in mats.items():
        v = m.ravel().copy()
        v[const & np.isfinite(v)] = 0.0
        frames.append(
            pd.DataFrame(
                {
                    "measure": measure,
                    "tap_a": [taps_a[i] for i in ia],
                    "kind_a": [_kind(taps_a[i]) for i in ia],
                    "index_a": ia,
                    "tap_b": [taps_b[j] for j in ib],
                    "kind_b": [_kind(taps_b[j]) for j in ib],
                    "index_b": ib,
                    "value": v,
                    "value_std": 0.0,
                    "value_min": v,
                    "value_max": v,
                    "se": np.where(np.isfinite(v), 0.01, np.nan),
                    "null_mean": 0.0,
                    "null_sd": 0.05,
                    "null_z": (null_z if null_z is not None else np.full(m.shape, 10.0)).ravel(),
                    "p_value": 0.01,
                    "constant": const,
                }
            )
        )
    return pd.concat(frames).sample(frac=1.0, random_state=0).reset_index(drop=True)


def _block_mask(taps_a, taps_b) -> np.ndarray:
    pick = lambda taps: np.array([_kind(t) in BLOCK_OUTPUT for t in taps])
    return pick(taps_a)[:, None] & pick(taps_b)[None, :]


def _cross_mats(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (len(TAPS_A), len(TAPS_B))
    lin = rng.uniform(0, 1, shape)
    bures = np.where(_block_mask(TAPS_A, TAPS_B), lin + rng.normal(0, 0.2, shape), np.nan)
    return {
        "linear_cka": lin,
        "rbf_cka": lin**2 + rng.normal(0, 0.05, shape),
        "rsa": rng.uniform(-0.1, 1, shape),
        "bures": bures,
    }


def _expected(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> tuple[float, int]:
    keep = keep & np.isfinite(x) & np.isfinite(y)
    return spearmanr(x[keep], y[keep]).statistic, int(keep.sum())


# ---------------------------------------------------------------- agreement
def test_cross_agreement_matches_scipy_on_the_cells_both_define():
    mats = _cross_mats()
    df = measure_agreement(similarity_table(mats, TAPS_A, TAPS_B), same=False)
    assert list(df.columns) == ["measure_1", "measure_2", "spearman", "n_cells"]
    # every pair once, in MEASURES order (linear_cka, rbf_cka, rsa, bures)
    assert list(zip(df.measure_1, df.measure_2, strict=True)) == [
        ("linear_cka", "rbf_cka"), ("linear_cka", "rsa"), ("linear_cka", "bures"),
        ("rbf_cka", "rsa"), ("rbf_cka", "bures"), ("rsa", "bures"),
    ]  # fmt: skip
    everywhere = np.ones((len(TAPS_A), len(TAPS_B)), bool)
    for r in df.itertuples():
        rho, n = _expected(mats[r.measure_1], mats[r.measure_2], everywhere)
        assert r.spearman == pytest.approx(rho, abs=1e-12) and r.n_cells == n
    # bures only on block-output pairs: embed, 0.block, 1.block × stem, 0.out, 0.out
    assert set(df.loc[df.measure_2 == "bures", "n_cells"]) == {3 * 3}
    assert set(df.loc[df.measure_2 != "bures", "n_cells"]) == {len(TAPS_A) * len(TAPS_B)}


def test_self_agreement_reads_each_pair_once_above_the_diagonal():
    rng = np.random.default_rng(1)
    n = len(TAPS_A)

    def sym(m):
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        return m

    lin = sym(rng.uniform(0, 1, (n, n)))
    dcor = sym(lin + rng.normal(0, 0.3, (n, n)))
    df = measure_agreement(
        similarity_table({"dcor": dcor, "linear_cka": lin}, TAPS_A, TAPS_A), True
    )
    assert list(zip(df.measure_1, df.measure_2, strict=True)) == [
        ("linear_cka", "dcor")
    ]  # MEASURES order
    rho, cells = _expected(lin, dcor, np.triu(np.ones((n, n), bool), k=1))
    assert cells == n * (n - 1) // 2
    assert df["spearman"].iloc[0] == pytest.approx(rho, abs=1e-12)
    assert df["n_cells"].iloc[0] == cells
    # the diagonal (1 by construction) and the mirrored cells would change the answer
    full, _ = _expected(lin, dcor, np.ones((n, n), bool))
    assert not math.isclose(full, rho, abs_tol=1e-6)


def test_constant_cells_are_left_out_not_ranked_as_zero():
    mats = _cross_mats(seed=2)
    df = measure_agreement(similarity_table(mats, TAPS_A, TAPS_B, constant={"layer1.0.out"}), False)
    keep = np.ones((len(TAPS_A), len(TAPS_B)), bool)
    keep[:, TAPS_B.index("layer1.0.out")] = False
    for r in df.itertuples():
        rho, n = _expected(mats[r.measure_1], mats[r.measure_2], keep)
        assert r.spearman == pytest.approx(rho, abs=1e-12) and r.n_cells == n
    row = df[(df.measure_1 == "linear_cka") & (df.measure_2 == "bures")].iloc[0]
    assert row.n_cells == 3 * 2  # the constant tap was one of the three block outputs of model b


def test_agreement_edge_cases_and_the_table_over_pairs():
    one = similarity_table({"linear_cka": np.eye(3)}, TAPS_A[:3], TAPS_A[:3])
    assert measure_agreement(one, same=True).empty  # a single measure: nothing to compare
    # fewer than 2 shared cells: NaN, not an error
    mats = {"linear_cka": np.ones((2, 2)), "bures": np.array([[0.5, np.nan], [np.nan, np.nan]])}
    r = measure_agreement(similarity_table(mats, TAPS_A[:2], TAPS_B[:2]), False).iloc[0]
    assert math.isnan(r.spearman) and r.n_cells == 1
    n = len(TAPS_A)
    tables = {
        ("vit", "vit"): similarity_table(
            {"linear_cka": np.eye(n) + 0.1, "rsa": np.eye(n) + 0.2}, TAPS_A, TAPS_A
        ),
        ("vit", "cnn"): similarity_table(_cross_mats(), TAPS_A, TAPS_B),
    }
    t = agreement_table(tables)
    assert list(t.columns) == [
        "model_a",
        "model_b",
        "measure_1",
        "measure_2",
        "spearman",
        "n_cells",
    ]
    assert list(dict.fromkeys(zip(t.model_a, t.model_b, strict=True))) == [
        ("vit", "vit"),
        ("vit", "cnn"),
    ]
    assert (t[t.model_b == "vit"]["n_cells"] == n * (n - 1) // 2).all()  # self: i < j
    assert len(t[t.model_b == "cnn"]) == 6
    assert agreement_table({}).empty


# ---------------------------------------------------------------- figures
META = {
    "model_a": "vit", "model_b": "cnn",
    "plan": {"n_images": 64, "batch_size": 16, "repeats": 2, "samples_hash": "abcdef0123"},
    "uncertainty": {"null_z_threshold": 3.0, "permutations": 10,
                    "null_floor_by_measure": {"linear_cka": 0.03, "rbf_cka": 0.04, "rsa": 0.05, "bures": None}},
}  # fmt: skip


def test_measure_heatmaps_written_with_one_panel_per_measure(tmp_path, monkeypatch):
    z = np.full((len(TAPS_A), len(TAPS_B)), 10.0)
    z[0, 1] = z[3, 4] = 1.0  # two cells within the null
    df = similarity_table(_cross_mats(), TAPS_A, TAPS_B, constant={"norm"}, null_z=z)
    figs, save = [], fig_measures.save_figure
    monkeypatch.setattr(
        fig_measures,
        "save_figure",
        lambda fig, png, pdf=None: (figs.append(fig), save(fig, png, pdf)),
    )
    png, pdf = tmp_path / "m.png", tmp_path / "m.pdf"
    fig_measures.plot_measure_heatmaps(df, META, png, pdf)
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    panels = [ax for ax in figs[0].axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == list(dict.fromkeys(df["measure"]))
    by = {ax.get_title().split("\n")[0]: ax for ax in panels}
    assert "median SE 0.01" in by["rsa"].get_title() and "null floor 0.05" in by["rsa"].get_title()
    dots = lambda ax: [c for c in ax.collections if isinstance(c, PathCollection)]
    marked = {(int(r - 0.5), int(c - 0.5)) for d in dots(by["rsa"]) for c, r in d.get_offsets()}
    assert marked == {(0, 1), (3, 4)}
    # both low-z cells are ones bures does not compute: no dot on a blank cell
    assert not dots(by["bures"])
    # bures: the taps it does not compute stay on the axes, blank (not dropped)
    mesh = by["bures"].collections[0].get_array()
    assert mesh.size == len(TAPS_A) * len(TAPS_B)
    assert int(np.ma.count_masked(mesh)) == mesh.size - 3 * 3
    # the constant tap (norm) is blank too; measures that can go negative say they are clipped
    lin = by["linear_cka"].collections[0].get_array()
    assert int(np.ma.count_masked(lin)) == len(TAPS_B)
    labels = {ax.get_ylabel() for ax in figs[0].axes}
    assert any(lab.startswith("rsa\n< 0 shown as 0 (min") for lab in labels)
    assert "bures" in labels  # never negative: no clipping note


def test_measure_agreement_figure_written(tmp_path):
    n = len(TAPS_A)
    tables = {
        ("vit", "vit"): similarity_table(
            {"linear_cka": np.eye(n) + 0.1, "dcor": np.eye(n) + 0.2}, TAPS_A, TAPS_A
        ),
        ("vit", "cnn"): similarity_table(_cross_mats(), TAPS_A, TAPS_B),
    }
    png, pdf = tmp_path / "a.png", tmp_path / "a.pdf"
    fig_measures.plot_measure_agreement(agreement_table(tables), png, pdf)
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    fig_measures.plot_measure_agreement(agreement_table({}), tmp_path / "e.png", tmp_path / "e.pdf")
    assert (tmp_path / "e.pdf").stat().st_size > 0
