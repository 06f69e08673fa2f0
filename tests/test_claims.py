"""The claims summary: each metric on small synthetic tables against a value worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from seelike import claims
from seelike.claims import ClaimInputs, metrics


def tap_kind(name: str) -> str:
    """A tap's kind from its name, as the tap families name them (`stem`, `layer1.0.out` → `out`, ...)."""
    return name.rsplit(".", 1)[-1]


def long_cka(
    m: np.ndarray, taps_a: list[str], taps_b: list[str] | None = None, constant=(), kind=None
) -> pd.DataFrame:
    """A long CKA table as `seelike.analyses.cka_tables.cka_from_caches` writes it, from a matrix; rows
    shuffled. Kinds are "x" unless `kind` (tap name → kind) is given."""
    taps_b = taps_a if taps_b is None else taps_b
    ia, ib = np.meshgrid(np.arange(len(taps_a)), np.arange(len(taps_b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    df = pd.DataFrame(
        {
            "tap_a": [taps_a[i] for i in ia],
            "kind_a": [kind(taps_a[i]) if kind else "x" for i in ia],
            "index_a": ia,
            "tap_b": [taps_b[j] for j in ib],
            "kind_b": [kind(taps_b[j]) if kind else "x" for j in ib],
            "index_b": ib,
            "cka": m.ravel(),
            "constant": [
                taps_a[i] in constant or taps_b[j] in constant for i, j in zip(ia, ib, strict=True)
            ],
        }
    )
    return df.sample(frac=1.0, random_state=0)


# ---------------------------------------------------------------- Fig 1
def test_self_cka_thirds_and_adjacent():
    taps = [f"t{i}" for i in range(6)]
    m = np.arange(36, dtype=float).reshape(6, 6) / 100
    r = metrics.self_cka_thirds(long_cka(m, taps))
    # thirds of 6 taps: {0, 1} vs {4, 5} → cells (0,4) (0,5) (1,4) (1,5) = .04 .05 .10 .11
    assert r["lowest_vs_highest_third"] == pytest.approx((0.04 + 0.05 + 0.10 + 0.11) / 4)
    # adjacent: (0,1) (1,2) (2,3) (3,4) (4,5) = .01 .08 .15 .22 .29
    assert r["adjacent"] == pytest.approx((0.01 + 0.08 + 0.15 + 0.22 + 0.29) / 5)
    assert r["n_taps"] == 6


def test_constant_taps_are_left_out_not_averaged_as_zero():
    taps = [f"t{i}" for i in range(6)]
    m = np.full((6, 6), 0.5)
    m[:, 5] = m[5, :] = 0.0  # a constant tap: CKA stored as 0
    r = metrics.self_cka_thirds(long_cka(m, taps, constant={"t5"}))
    assert r["lowest_vs_highest_third"] == pytest.approx(0.5)
    assert r["adjacent"] == pytest.approx(0.5)


def test_tap_stage_names():
    assert metrics.tap_stage("layer3.1.conv2") == 3
    assert metrics.tap_stage("stages.2.blocks.0.preact") == 2
    assert metrics.tap_stage("stem") is None
    assert metrics.tap_stage("blocks.3.attn") is None
    assert metrics.tap_stage("blocks.4.2.branch") == 4  # EfficientNet stage 4, block 2
    assert metrics.tap_stage("blocks.11.block") is None and metrics.tap_stage("head") is None


def test_stage_cka_within_vs_across():
    taps = ["stem", "layer1.0.out", "layer1.1.out", "layer2.0.out", "layer2.1.out"]
    m = np.eye(5)
    m[1, 2] = m[2, 1] = 0.9
    m[3, 4] = m[4, 3] = 0.7
    for i in (1, 2):
        for j in (3, 4):
            m[i, j] = m[j, i] = 0.1 * i + 0.01 * j
    m[0, 1:] = m[1:, 0] = 0.99  # the stem has no stage: never counted
    r = metrics.stage_cka(long_cka(m, taps))
    assert r["within"] == pytest.approx((0.9 + 0.7) / 2)
    assert r["across"] == pytest.approx((0.13 + 0.14 + 0.23 + 0.24) / 4)
    vit = ["embed", "blocks.0.attn", "blocks.1.attn"]
    assert metrics.stage_cka(long_cka(np.eye(3), vit)) is None


# ---------------------------------------------------------------- Fig 2
def test_cross_cka_alignment_both_orientations():
    cnn = [f"c{i}" for i in range(4)]
    vit = [f"v{j}" for j in range(5)]
    m = np.full((4, 5), 0.1)
    # best ViT tap per CNN tap: 0, 1, 2, 2 → depths 0, .25, .5, .5
    for i, j in enumerate([0, 1, 2, 2]):
        m[i, j] = 0.8 + 0.01 * i
    m[0, 4] = 0.3  # the ViT's last third (1 tap of 5: v4) best matches 0.3
    r = metrics.cross_cka_alignment(long_cka(m, cnn, vit), cnn_side="a")
    assert r["cnn_lower_half_best_vit_depth"] == pytest.approx((0 + 0.25) / 2)
    assert r["cnn_upper_half_best_vit_depth"] == pytest.approx(0.5)
    assert r["vit_last_third_best_cnn_cka"] == pytest.approx(0.3)
    # first two thirds v0..v3: best 0.8, 0.81, 0.83, 0.1
    assert r["vit_first_two_thirds_best_cnn_cka"] == pytest.approx((0.8 + 0.81 + 0.83 + 0.1) / 4)
    flipped = metrics.cross_cka_alignment(long_cka(m.T.copy(), vit, cnn), cnn_side="b")
    assert flipped == pytest.approx(r)


# ---------------------------------------------------------------- Figs 3-5
def test_uniform_attention_distance_by_hand_and_against_the_attention_module():
    # 2×2 grid of 2-px patches: centres (1,1) (1,3) (3,1) (3,3); from each: 0, 2, 2, 2√2
    assert metrics.uniform_attention_distance((2, 2), 2) == pytest.approx(
        (4 + 2 * math.sqrt(2)) / 4
    )
    from seelike.models.geometry import patch_distance_matrix

    ref = patch_distance_matrix((3, 5), (4, 2), (3, 2)).mean()
    assert metrics.uniform_attention_distance((3, 5), (4, 2), (3, 2)) == pytest.approx(ref)


def _attention_table(dist: list[list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"block": b, "head": h, "mean_distance_px": d}
            for b, heads in enumerate(dist)
            for h, d in enumerate(heads)
        ]
    )


def test_attention_block_stats_and_early_late():
    dist = [[1.0, 4.0, 9.0], [2.0, 8.0, 8.0], [6.0, 7.0, 9.0], [6.0, 8.0, 9.5], [7.0, 7.5, 8.0]]
    df = _attention_table(dist)
    s = metrics.attention_block_stats(df, uniform_px=10.0)  # local: < 5 px
    assert s["spread_px"].tolist() == pytest.approx([8.0, 6.0, 3.0, 3.5, 1.0])
    assert s["n_local"].tolist() == [2, 1, 0, 0, 0]
    r = metrics.attention_early_late(df, uniform_px=10.0)
    assert r["early_spread_px"] == pytest.approx(7.0)
    assert r["late_spread_px"] == pytest.approx(2.25)
    assert (r["early_local_heads"], r["early_global_heads"]) == (3, 3)
    assert (r["late_local_heads"], r["late_heads"]) == (0, 6)


def test_spearman():
    assert metrics.spearman([1, 2, 3, 4], [10, 5, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks x = 1, 2.5, 2.5, 4 and y = 1, 2, 3, 4 → Pearson of the ranks
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)
    assert math.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))


def test_head_subset_trend():
    rows = []
    for s, (dist, ckas) in enumerate([(30.0, [0.2, 0.4]), (5.0, [0.8, 0.6]), (12.0, [0.5, 0.5])]):
        for t, c in enumerate(ckas):
            rows.append(
                {"subset": s, "subset_mean_distance_px": dist, "cnn_tap": f"u{t}", "cka": c}
            )
    r = metrics.head_subset_trend(pd.DataFrame(rows))
    # by distance 5, 12, 30: mean CKA 0.7, 0.5, 0.3 → strictly falling
    assert r["spearman_distance_vs_cka"] == pytest.approx(-1.0)
    assert r["most_local_subset_cka"] == pytest.approx(0.7)
    assert r["most_global_subset_cka"] == pytest.approx(0.3)
    assert r["n_subsets"] == 3


# ---------------------------------------------------------------- Fig 6
def test_erf_growth():
    df = pd.DataFrame(
        {
            "residual": ["post"] * 4 + ["pre"] * 2,
            "tap": [
                "layer2.1.out",
                "stem",
                "layer1.1.out",
                "layer3.1.out",
                "stem",
                "layer1.1.branch",
            ],
            "kind": ["out", "stem", "out", "out", "stem", "branch"],
            "order": [2, 0, 1, 3, 0, 1],
            "r50_px": [4.0, 2.0, 3.0, np.nan, 1.0, 0.5],
        }
    )
    r = metrics.erf_growth(df)
    expected = {
        "first": 2.0,
        "last": 4.0,
        "last_over_first": 2.0,
        "spearman_depth": 1.0,
        "first_non_stem": 3.0,
    }
    assert {k: r["post"][k] for k in expected} == pytest.approx(expected)
    # a table without jackknife columns has no SEs (tests/test_claims_uncertainty_erf_loc.py: with them)
    assert all(math.isnan(r["post"][k]) for k in r["post"] if k.endswith("_se"))
    assert r["pre"]["last_over_first"] == pytest.approx(0.5)
    assert r["pre"]["spearman_depth"] == pytest.approx(-1.0)


# ---------------------------------------------------------------- Fig 7
def test_skip_ratio_summary_vit_and_cnn():
    rows = []
    for b in range(4):
        for branch, off in (("attn", 0.0), ("mlp", 2.0)):
            rows.append(
                {"block": b, "branch": branch, "token_type": "cls", "ratio_mean": 10.0 - b + off}
            )
            for tok in range(2):
                rows.append(
                    {
                        "block": b,
                        "branch": branch,
                        "token_type": "patch",
                        "ratio_mean": 1.0 + b + tok + off,
                    }
                )
    rows.append({"block": 3, "branch": "mlp", "token_type": "patch", "ratio_mean": np.inf})
    r = metrics.skip_ratio_summary(pd.DataFrame(rows))
    # patch per block: mean over (1+b, 2+b, 3+b, 4+b) = 2.5 + b → 2.5, 3.5, 4.5, 5.5
    assert r["patch_mean"] == pytest.approx(4.0)
    assert (r["patch_early"], r["patch_late"]) == pytest.approx((3.0, 5.0))
    # cls per block: mean(10 - b, 12 - b) = 11 - b → 11, 10, 9, 8
    assert (r["cls_early"], r["cls_late"]) == pytest.approx((10.5, 8.5))
    assert r["n_inf"] == 1
    cnn = pd.DataFrame(
        {
            "block": [0, 1, 2],
            "branch": "residual",
            "token_type": "spatial",
            "ratio_mean": [1.0, 2.0, 6.0],
        }
    )
    r = metrics.skip_ratio_summary(cnn)
    assert r["spatial_mean"] == pytest.approx(3.0)
    assert (r["spatial_early"], r["spatial_late"]) == pytest.approx((1.0, 6.0))


# ---------------------------------------------------------------- Figs 9, 10
def _localisation_table(h: int, w: int, cka) -> pd.DataFrame:
    rows = []
    for t in range(h * w):
        for g in range(h * w):
            rows.append(
                {"token": t, "token_row": t // w, "token_col": t % w, "patch": g, "patch_row": g // w,
                 "patch_col": g % w, "cka": cka(t, g), "token_constant": False, "patch_constant": g == 0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_localisation_stats_interior_only():
    # 4×4 grid: interior tokens 5, 6, 9, 10. Own patch 0.9, except token 10 whose best patch is 11 (0.95);
    # other patches 0.1; patch 0 is constant (stored 0.99 here: must be ignored); border tokens never count.
    def cka(t, g):
        if g == 0:
            return 0.99
        if t == 10 and g == 11:
            return 0.95
        return 0.9 if t == g else 0.1

    r = metrics.localisation_stats(_localisation_table(4, 4, cka))
    assert r["n_interior"] == 4
    assert r["own"] == pytest.approx(0.9)
    assert r["own_is_argmax"] == pytest.approx(0.75)
    # others per token: 14 valid other patches (16 - own - constant patch 0); token 10 has one at 0.95
    assert r["other"] == pytest.approx((3 * 0.1 + (13 * 0.1 + 0.95) / 14) / 4)


def test_localisation_stats_without_interior():
    r = metrics.localisation_stats(_localisation_table(2, 2, lambda t, g: float(t == g)))
    assert r["n_interior"] == 0 and math.isnan(r["own"])


# ---------------------------------------------------------------- Figs 11, 13
def _probe_table() -> pd.DataFrame:
    rows = []
    for depth, cls_acc, mean_acc in [
        (0.0, 0.2, 0.5),
        (0.25, 0.3, 0.6),
        (0.45, 0.4, 0.7),
        (0.75, 0.6, 0.8),
        (1.0, 0.9, 0.85),
    ]:
        rows += [
            {"depth": depth, "shots": "10", "aggregation": "cls", "accuracy": cls_acc},
            {"depth": depth, "shots": "10", "aggregation": "mean_spatial", "accuracy": mean_acc},
            {"depth": depth, "shots": "all", "aggregation": "cls", "accuracy": 1.0},
        ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)


def test_probe_depth():
    df = _probe_table()
    assert metrics.probe_depth(df, "cls") == pytest.approx(
        {"first": 0.2, "middle": 0.4, "last": 0.9}
    )
    assert metrics.probe_depth(df, "mean_spatial")["middle"] == pytest.approx(0.7)
    assert metrics.probe_depth(df, "cls", shots="all")["first"] == 1.0
    assert metrics.probe_depth(df, "pool_final") is None


# ---------------------------------------------------------------- Fig 8
def _vit_taps(n_blocks: int) -> list[str]:
    return (
        ["embed"]
        + [f"blocks.{b}.{k}" for b in range(n_blocks) for k in ("attn", "block")]
        + ["norm"]
    )


def test_no_skip_partition():
    taps = _vit_taps(3)  # embed 0 | blocks.0: 1, 2 | blocks.1: 3, 4 | blocks.2: 5, 6 | norm 7
    side = np.array([0, 0, 0, -1, -1, 1, 1, 1])
    m = np.where(side[:, None] == side[None, :], 0.9, 0.2)
    m[3:5, :] = m[:, 3:5] = 0.5  # the removed block's own taps: left out
    np.fill_diagonal(m, 1.0)
    r = metrics.no_skip_partition(long_cka(m, taps), block=1)
    assert r == pytest.approx({"within": 0.9, "across": 0.2, "partition": 0.7})
    assert metrics.no_skip_partition(long_cka(m, taps), block=-2) == pytest.approx(r)
    with pytest.raises(ValueError, match="block 5"):
        metrics.no_skip_partition(long_cka(m, taps), block=5)


def test_no_skip_specs_pick_a_reference_of_the_same_arch():
    models = {
        "vit": {"arch": "vit_tiny", "kwargs": {"depth": 6}},
        "vit_wide": {"arch": "vit_tiny", "kwargs": {"depth": 6, "embed_dim": 128}},
        "vit_noskip3": {"arch": "vit_tiny", "kwargs": {"depth": 6}, "remove_skip": {"blocks": [3]}},
        "other_noskip": {"arch": "vit_small", "kwargs": {}, "remove_skip": {"blocks": [-1]}},
    }
    assert claims.no_skip_specs(models) == {"vit_noskip3": (3, "vit"), "other_noskip": (-1, None)}


# ---------------------------------------------------------------- Fig 12
def test_per_block_thirds():
    df = pd.DataFrame(
        {
            "tap": [f"blocks.{i}.block" for i in range(6)],
            "kind": "block",
            "block": range(6),
            "depth": [0.6, 0.0, 1.0, 0.2, 0.4, 0.8],
            "cka": [0.5, 0.95, 0.1, 0.85, 0.7, 0.3],
            "std": 0.0,
        }
    )
    r = metrics.per_block_thirds(df)
    assert r["lowest_third"] == pytest.approx((0.95 + 0.85) / 2)
    assert r["highest_third"] == pytest.approx((0.3 + 0.1) / 2)


# ---------------------------------------------------------------- the summary
def erf_with_replicates(df: pd.DataFrame, spread: float = 0.01, groups: int = 5) -> pd.DataFrame:
    """An ERF table with the jackknife columns the analysis writes: per size, leave-one-group-out replicates
    `{size}_jk` at ± `spread` (relative) around the value, alternating, and their jackknife SE `{size}_se`."""
    df = df.copy()
    df["n_images"], df["n_groups"] = 4 * groups, groups
    wiggle = spread * (-1.0) ** np.arange(groups)
    for size in [c for c in df.columns if c.startswith("r") and c.endswith("_px")]:
        reps = [v * (1 + wiggle) for v in df[size]]
        df[f"{size}_jk"] = reps
        df[f"{size}_se"] = [
            math.sqrt((groups - 1) / groups * ((r - r.mean()) ** 2).sum()) for r in reps
        ]
    return df


def _inputs(with_cnn: bool = True) -> ClaimInputs:
    vit_taps = _vit_taps(6)
    n = len(vit_taps)
    vit_self = long_cka(np.full((n, n), 0.8) + 0.2 * np.eye(n), vit_taps)
    cnn_taps = ["stem"] + [f"layer{s}.{u}.out" for s in (1, 2) for u in (0, 1)]
    stage = np.array([-1, 1, 1, 2, 2])
    cnn_m = np.where(stage[:, None] == stage[None, :], 0.9, 0.2)
    np.fill_diagonal(cnn_m, 1.0)
    noskip_m = np.full((n, n), 0.8)
    blk = np.array([-1] + [b for b in range(6) for _ in range(2)] + [99])
    noskip_m[np.ix_(blk < 3, blk > 3)] = noskip_m[np.ix_(blk > 3, blk < 3)] = 0.1
    inp = ClaimInputs(
        families={"vit": "vit", "vit10": "vit", "noskip": "vit", "cnn": "cnn"},
        self_cka={"vit": vit_self, "vit10": vit_self, "noskip": long_cka(noskip_m, vit_taps)},
        attention={"vit": (_attention_table([[1, 9], [2, 9], [9, 9], [9, 9]]), 10.0)},
        head_subsets={
            "vit": pd.DataFrame(
                {
                    "subset": [0, 1, 2],
                    "subset_mean_distance_px": [1.0, 5.0, 9.0],
                    "cka": [0.9, 0.5, 0.2],
                }
            )
        },
        skip={
            "vit": pd.DataFrame({"block": [0, 1], "token_type": "patch", "ratio_mean": [2.0, 3.0]})
        },
        probes={"vit": _probe_table()},
        per_block={
            ("vit", "vit10"): pd.DataFrame({"depth": [0.0, 0.5, 1.0], "cka": [0.9, 0.6, 0.3]})
        },
        no_skip={"noskip": (3, "vit")},
    )
    if with_cnn:
        inp.self_cka["cnn"] = long_cka(cnn_m, cnn_taps)
        inp.cross_cka[("vit", "cnn")] = long_cka(np.full((n, 5), 0.3), vit_taps, cnn_taps)
        inp.erf["vit"] = erf_with_replicates(pd.DataFrame(
            {"residual": "post", "tap": ["blocks.0.attn_res", "blocks.5.attn_res"], "kind": "attn_res",
             "order": [0, 1], "r50_px": [6.0, 8.0], "r90_px": [20.0, 25.0]}
        ))  # fmt: skip
        inp.erf["cnn"] = erf_with_replicates(pd.DataFrame(
            {"residual": "post", "tap": ["stem", "layer1.1.out", "layer2.1.out"], "kind": ["stem", "out", "out"],
             "order": [0, 1, 2], "r50_px": [2.0, 3.0, 5.0], "r90_px": [3.0, 5.0, 9.0]}
        ))  # fmt: skip
        inp.skip["cnn"] = pd.DataFrame(
            {"block": [0, 1], "token_type": "spatial", "ratio_mean": [1.0, 1.5]}
        )
    return inp


def test_summary_structure():
    df = claims.summarise(_inputs())
    assert list(df.columns) == claims.COLUMNS
    assert set(df["figure"]) == {"1", "2", "3-4", "5", "6", "7", "8", "11-13", "12"}
    assert df["value"].dtype == np.float64
    assert all(s is None or isinstance(s, bool) for s in df["seen"])
    assert not df.duplicated(["figure", "model", "metric"]).any()
    row = df.set_index(["model", "metric"])
    # ViT uniform (0.8 between thirds) vs CNN stages (stem row 0.2 to the top third)
    assert row.loc[("vit vs cnn", "cka_lowest_vs_highest_third_vit_minus_cnn"), "seen"] is True
    assert row.loc[("cnn", "cka_within_minus_across_stage"), "value"] == pytest.approx(0.7)
    assert row.loc[("vit", "spearman_distance_vs_cka"), "seen"] is True
    assert row.loc[("vit", "late_local_heads"), "value"] == 0
    assert row.loc[("vit vs cnn", "ratio_vit_patch_over_cnn"), "value"] == pytest.approx(2.5 / 1.25)
    assert row.loc[("noskip vs vit", "partition_minus_reference"), "seen"] is True
    # ERF: ViT block 0 over the CNN's first stage (not its stem), per quantile; CNN growth last / first
    assert row.loc[
        ("vit vs cnn", "r50_vit_first_over_cnn_first_stage_post"), "value"
    ] == pytest.approx(2.0)
    assert row.loc[
        ("vit vs cnn", "r90_vit_first_over_cnn_first_stage_post"), "value"
    ] == pytest.approx(4.0)
    assert row.loc[("cnn", "r50_last_over_first_post"), "value"] == pytest.approx(2.5)
    assert row.loc[("cnn", "r50_last_over_first_post"), "seen"] is True
    assert row.loc[("vit", "r50_last_over_first_post"), "seen"] is None
    assert row.loc[("vit vs vit10", "cka_highest_third_blocks"), "seen"] is True
    # ViT-vs-CNN comparisons follow the configured cross pair: neither the no-skip ViT nor vit10 is compared
    compared = set(df.loc[df["model"].str.endswith(" vs cnn"), "model"])
    assert compared == {"vit vs cnn"}
    md = claims.to_markdown(df, title="t")
    assert md.startswith("# t\n") and md.count("\n| ") == len(df) + 1


def test_summary_without_a_cnn_says_so_and_drops_comparisons():
    df = claims.summarise(_inputs(with_cnn=False))
    cmp_rows = df[df["metric"] == "cka_lowest_vs_highest_third_vit_minus_cnn"]
    assert (
        len(cmp_rows) == 1
        and cmp_rows["seen"].iloc[0] is None
        and "needs a ViT and a CNN" in cmp_rows["note"].iloc[0]
    )
    assert "2" not in set(df["figure"]) and "ratio_vit_patch_over_cnn" not in set(df["metric"])
    # no cross pair configured: every standard ViT × CNN is compared (the no-skip ViT is not)
    inp = _inputs()
    inp.cross_cka = {}
    df = claims.summarise(inp)
    compared = set(df.loc[df["metric"] == "cka_lowest_vs_highest_third_vit_minus_cnn", "model"])
    assert compared == {"vit vs cnn", "vit10 vs cnn"}
    assert claims.summarise(ClaimInputs(families={})).empty


@pytest.mark.slow
def test_claims_rule_on_the_tiny_run(workflow_run):
    from seelike.io import read_table

    df, meta = read_table(workflow_run / "results" / "claims" / "digits.csv")
    assert list(df.columns) == claims.COLUMNS and meta["analysis"] == "claims"
    # every analysis of the tiny config contributes, the remove_skip model (8) and the per-block pair (12) too
    assert set(df["figure"].astype(str)) == {
        "1",
        "2",
        "3-4",
        "5",
        "6",
        "7",
        "8",
        "9-10",
        "11-13",
        "12",
    }
    md = (workflow_run / "results" / "claims" / "digits.md").read_text()
    assert md.count("\n| ") == len(df) + 1
    # Figs 6, 9, 10: every number has an SE or an interval
    own = df[df["figure"].astype(str).isin(["6", "9-10"])]
    assert len(own) and (np.isfinite(own["se"]) | np.isfinite(own["ci_low"])).all()


# ---------------------------------------------------------------- CNN families named; Fig 1 on block outputs
def test_cnn_label_from_family_and_arch():
    label = claims.cnn_label
    assert label("resnet", "resnet50.a1_in1k") == "ResNet"
    assert label("resnetv2", "resnetv2_50x1_bit.goog_in21k") == "ResNetV2/BiT"
    assert label("efficientnet", "tf_efficientnet_lite0") == "EfficientNet"
    assert label("efficientnet", "mobilenetv2_100") == "MobileNet"
    assert label("generic", "convnext_tiny") == "CNN"
    # the coarse "cnn" family: the arch decides
    assert label("cnn", "tf_efficientnet_lite0") == "EfficientNet"
    assert label("cnn", "resnet18") == "ResNet"
    assert label("cnn", "resnetv2_50x1_bit") == "ResNetV2/BiT"
    assert label("cnn", None) == label("cnn", "vgg16") == "CNN"


def _vit_and_effnet() -> ClaimInputs:
    """A ViT (uniform among block outputs, not among its sub-layer taps) and an EfficientNet with stages."""
    vit_taps = (
        ["embed"] + [f"blocks.{b}.{k}" for b in range(6) for k in ("attn", "block")] + ["norm"]
    )
    n = len(vit_taps)
    vm = np.where(
        np.array([tap_kind(t) in ("embed", "block") for t in vit_taps])[:, None]
        & np.array([tap_kind(t) in ("embed", "block") for t in vit_taps])[None, :],
        0.9,
        0.1,
    )
    np.fill_diagonal(vm, 1.0)
    cnn_taps = ["stem_conv", "stem"] + [
        f"blocks.{s}.{b}.{k}" for s in (1, 2, 3) for b in (0, 1) for k in ("conv1", "out")
    ]
    stage = np.array([-1, -1] + [s for s in (1, 2, 3) for _ in range(4)])
    cm = np.where(stage[:, None] == stage[None, :], 0.8, 0.3)
    np.fill_diagonal(cm, 1.0)
    return ClaimInputs(
        families={"vit": "vit", "lite0": "efficientnet"},
        archs={"vit": "vit_small_patch14_dinov2", "lite0": "tf_efficientnet_lite0"},
        self_cka={
            "vit": long_cka(vm, vit_taps, kind=tap_kind),
            "lite0": long_cka(cm, cnn_taps, kind=tap_kind),
        },
        cross_cka={
            ("vit", "lite0"): long_cka(np.full((n, len(cnn_taps)), 0.3), vit_taps, cnn_taps)
        },
        skip={
            "vit": pd.DataFrame({"block": [0, 1], "token_type": "patch", "ratio_mean": [2.0, 3.0]}),
            "lite0": pd.DataFrame(
                {"block": [0, 1], "token_type": "spatial", "ratio_mean": [1.0, 1.5]}
            ),
        },
        head_subsets={
            "vit": pd.DataFrame(
                {
                    "subset": [0, 1, 2],
                    "subset_mean_distance_px": [1.0, 5.0, 9.0],
                    "cka": [0.9, 0.5, 0.2],
                }
            )
        },
    )


def test_claims_name_the_cnn_family_not_resnet():
    df = claims.summarise(_vit_and_effnet())
    texts = " ".join(df["claim"]) + " " + " ".join(df["note"])
    assert "ResNet" not in texts
    cnn_rows = df[df["model"].str.contains("lite0") & (df["claim"] != "‖z‖/‖f(z)‖ by token type")]
    assert cnn_rows["claim"].str.contains("EfficientNet").all(), cnn_rows["claim"].tolist()
    assert "lower half of the EfficientNet matches the lowest quarter of the ViT" in set(
        df["claim"]
    )
    assert "CKA with lower EfficientNet units falls as head subsets get more global" in set(
        df["claim"]
    )
    assert "skip ratio is higher in ViT than in EfficientNet" in set(df["claim"])
    # the same with the coarse family: the arch names it
    inp = _vit_and_effnet()
    inp.families = {"vit": "vit", "lite0": "cnn"}
    assert set(claims.summarise(inp)["claim"]) == set(df["claim"])
    # a ResNet is still called a ResNet
    inp.families, inp.archs = {"vit": "vit", "lite0": "resnet"}, {}
    assert "lower half of the ResNet matches the lowest quarter of the ViT" in set(
        claims.summarise(inp)["claim"]
    )


def test_fig1_on_block_outputs_as_well_as_all_taps():
    df = claims.summarise(_vit_and_effnet())
    row = df[df["figure"] == "1"].set_index(["model", "metric"])
    # all taps: the ViT's attention branches (0.1 to everything) pull its thirds down; block outputs: 0.9
    # ViT 14 taps, thirds of 4: {embed, b0.attn, b0.block, b1.attn} × {b5.attn, b5.block, norm, b4.block}...
    assert row.loc[("vit", "cka_lowest_vs_highest_third_block_outputs"), "value"] == pytest.approx(
        0.9
    )
    assert row.loc[("vit", "cka_lowest_vs_highest_third"), "value"] < 0.5
    assert "block outputs" in row.loc[("vit", "cka_lowest_vs_highest_third_block_outputs"), "note"]
    assert (
        "7 taps" in row.loc[("vit", "cka_lowest_vs_highest_third_block_outputs"), "note"]
    )  # embed + 6 blocks
    # EfficientNet block outputs: stem + 6 unit outputs (stem_conv and conv1 left out); stages 1-3 of 2 units
    assert "7 taps" in row.loc[("lite0", "cka_lowest_vs_highest_third_block_outputs"), "note"]
    assert row.loc[("lite0", "cka_within_stage_block_outputs"), "value"] == pytest.approx(0.8)
    assert row.loc[("lite0", "cka_across_stage_block_outputs"), "value"] == pytest.approx(0.3)
    assert row.loc[("lite0", "cka_within_minus_across_stage_block_outputs"), "seen"] is True
    # both readings of the ViT − CNN comparison
    pair = row.loc["vit vs lite0"]
    assert {
        "cka_lowest_vs_highest_third_vit_minus_cnn",
        "cka_lowest_vs_highest_third_vit_minus_cnn_block_outputs",
    } <= set(pair.index)
    assert pair.loc["cka_lowest_vs_highest_third_vit_minus_cnn_block_outputs", "seen"] is True
    assert not df.duplicated(["figure", "model", "metric"]).any()
    # tables without kind columns (or too few block outputs) give only the all-taps reading
    assert (
        claims.metrics.block_output_cka(long_cka(np.eye(4), ["stem", "a.out", "b.out", "c.out"]))
        is None
    )
    assert not claims.summarise(_inputs())["metric"].str.endswith("_block_outputs").any()


# ---------------------------------------------------------------- verdicts need 2 combined standard errors
@pytest.mark.parametrize("se,seen", [(0.001, True), (0.2, False), (None, True)])
def test_stage_verdict_needs_the_difference_beyond_two_standard_errors(se, seen):
    """Within-stage 0.8 vs across 0.7: seen with tiny SEs, not with SEs of 0.2 (combined 0.28 > 0.1/2), and
    decided by the sign alone when the table has no SE column (older tables)."""
    names = ["stem"] + [f"layer{s}.{b}.out" for s in (1, 2) for b in range(3)]
    stage = np.array([-1, 1, 1, 1, 2, 2, 2])
    m = np.where(stage[:, None] == stage[None, :], 0.8, 0.7)
    np.fill_diagonal(m, 1.0)
    df = long_cka(m, names)
    if se is not None:
        df["cka_se"] = se
    out = claims.summarise(
        ClaimInputs(families={"r": "resnet"}, archs={"r": "resnet18"}, self_cka={"r": df})
    )
    row = out[out.metric == "cka_within_minus_across_stage"].iloc[0]
    assert row["value"] == pytest.approx(0.1) and row["seen"] is seen
    if se is None:
        assert np.isnan(row["se"])
    else:  # mean of the cells' SEs on each side, combined as independent
        assert row["se"] == pytest.approx(np.sqrt(2) * se)
        third = out[out.metric == "cka_lowest_vs_highest_third"].iloc[0]
        assert third["se"] == pytest.approx(se)


# ---------------------------------------------------------------- Figs 1, 2 under the other similarity measures
def similarity_table(mats: dict[str, np.ndarray], taps_a, taps_b=None, constant=()) -> pd.DataFrame:
    """A long similarity table as the workflow writes it (`measure`, `value`, `se`, ...; one row per measure ×
    tap pair), from one matrix per measure; kinds from the tap names."""
    frames = [
        long_cka(m, taps_a, taps_b, constant=constant, kind=tap_kind)
        .rename(columns={"cka": "value"})
        .assign(measure=name, se=np.nan)
        for name, m in mats.items()
    ]
    return pd.concat(frames, ignore_index=True)


def _block_only(m: np.ndarray, taps_a, taps_b) -> np.ndarray:
    """`m` on pairs of block outputs only, NaN elsewhere (bures' default cells)."""
    pick = lambda taps: np.array([tap_kind(t) in ("embed", "stem", "block", "out") for t in taps])
    return np.where(pick(taps_a)[:, None] & pick(taps_b)[None, :], m, np.nan)


def _with_measures(inp: ClaimInputs, transform) -> ClaimInputs:
    """`inp` plus similarity tables: linear CKA as in `inp`, rbf_cka as `transform(model(s), matrix)`, dcor as
    the square of the linear values (a monotone transform: same ranks), bures on block outputs only."""
    sim = {}
    tables = {**{(m, m): df for m, df in inp.self_cka.items()}, **dict(inp.cross_cka)}
    for (a, b), df in tables.items():
        m, ta, tb = claims.metrics.cka_array(df)
        sim[(a, b)] = similarity_table(
            {"linear_cka": m, "rbf_cka": transform((a, b), m), "dcor": m**2,
             "bures": _block_only(m, ta, tb)},
            ta, tb,
        )  # fmt: skip
    inp.similarity = sim
    return inp


def test_claims_without_similarity_tables_have_no_robustness(tmp_path):
    from seelike.io import read_table, write_table

    df = claims.summarise(_vit_and_effnet())
    assert list(df.columns)[-2:] == ["robust", "measures"]
    assert df["robust"].map(lambda v: v is None).all()
    assert (df["measures"] == "").all()
    # robust n/a, no measures
    body = claims.to_markdown(df).splitlines()[2:]
    assert len(body) == len(df) and all(r.endswith("| n/a |  |") for r in body)
    # the same from the CSV the rule writes (None and "" come back as NaN)
    write_table(df, tmp_path / "c.csv")
    assert claims.to_markdown(read_table(tmp_path / "c.csv")[0]) == claims.to_markdown(df)


def test_claims_robust_when_every_measure_agrees():
    base = claims.summarise(_vit_and_effnet())
    df = claims.summarise(_with_measures(_vit_and_effnet(), lambda key, m: m.copy()))
    # linear CKA still decides: every other column exactly as without the similarity tables
    pd.testing.assert_frame_equal(
        df.drop(columns=["robust", "measures"]), base.drop(columns=["robust", "measures"])
    )
    row = df.set_index(["model", "metric"])
    cmp_bo = row.loc[("vit vs lite0", "cka_lowest_vs_highest_third_vit_minus_cnn_block_outputs")]
    assert cmp_bo["seen"] is True and cmp_bo["robust"] is True
    # ViT block outputs 0.9 between thirds, the CNN's 0.3: dcor 0.81 − 0.09; bures decides on block outputs
    assert cmp_bo["measures"] == "rbf_cka yes 0.6; dcor yes 0.72; bures yes 0.6"
    # the all-taps reading: bures is computed on block outputs only, so it cannot decide there
    stage = row.loc[("lite0", "cka_within_minus_across_stage")]
    assert stage["seen"] is True and stage["robust"] is True
    assert stage["measures"] == "rbf_cka yes 0.5; dcor yes 0.55; bures n/a"
    # Fig 2: lower half of the CNN at the ViT's lowest quarter (a flat table: argmax at the first tap)
    fig2 = row.loc[("vit vs lite0", "cnn_lower_half_best_vit_depth")]
    assert fig2["seen"] is True and fig2["robust"] is True and "bures n/a" in fig2["measures"]
    # a finding linear CKA does not see is not robust; descriptive rows carry values, no verdict
    assert row.loc[("vit vs lite0", "cnn_upper_half_best_vit_depth"), "robust"] is False
    adjacent = row.loc[("vit", "cka_adjacent_taps_block_outputs")]
    assert (
        adjacent["robust"] is None and adjacent["measures"] == "rbf_cka 0.9; dcor 0.81; bures 0.9"
    )
    # other figures: nothing
    other = df[~df["figure"].isin(["1", "2"])]
    assert len(other) and other["robust"].map(lambda v: v is None).all()
    assert (other["measures"] == "").all()
    md = claims.to_markdown(df)
    assert "| yes | rbf_cka yes 0.6; dcor yes 0.72; bures yes 0.6 |" in md


def _reverse(key, m: np.ndarray) -> np.ndarray:
    """rbf_cka: the ViT's block outputs alike only to their neighbours (Fig 1 reversed), and the CNN's lower
    half best matching the ViT's last taps (Fig 2 reversed)."""
    out = m.copy()
    if key == ("vit", "vit"):
        i = np.arange(len(m))
        out = np.where(np.abs(i[:, None] - i[None, :]) <= 1, m, 0.05)
    if key == ("vit", "lite0"):
        out[-1, :] = 0.9  # the ViT's last tap: every CNN tap's best match (depth 1)
    return out


def test_claims_not_robust_when_a_measure_reverses_a_finding():
    base = claims.summarise(_vit_and_effnet())
    df = claims.summarise(_with_measures(_vit_and_effnet(), _reverse))
    pd.testing.assert_frame_equal(
        df.drop(columns=["robust", "measures"]), base.drop(columns=["robust", "measures"])
    )
    row = df.set_index(["model", "metric"])
    fig1 = row.loc[("vit vs lite0", "cka_lowest_vs_highest_third_vit_minus_cnn_block_outputs")]
    assert fig1["seen"] is True and fig1["robust"] is False
    assert fig1["measures"].startswith("rbf_cka no ") and "dcor yes" in fig1["measures"]
    fig2 = row.loc[("vit vs lite0", "cnn_lower_half_best_vit_depth")]
    assert fig2["seen"] is True and fig2["robust"] is False
    assert fig2["measures"] == "rbf_cka no 1; dcor yes 0; bures n/a"
    # findings rbf_cka leaves alone stay robust
    assert row.loc[("lite0", "cka_within_minus_across_stage_block_outputs"), "robust"] is True
    md = claims.to_markdown(df)
    assert "| no | rbf_cka no 1; dcor yes 0; bures n/a |" in md


def test_claims_measures_on_part_of_the_tables_only():
    """A measure with no table for a model (or pair) cannot decide its rows; constant cells are left out as
    for linear CKA (a table with them is still read)."""
    inp = _with_measures(_vit_and_effnet(), lambda key, m: m.copy())
    del inp.similarity[("vit", "lite0")]
    sim = inp.similarity[("lite0", "lite0")]
    const = sim["tap_a"].eq("blocks.3.1.conv1") | sim["tap_b"].eq("blocks.3.1.conv1")
    sim.loc[const, "constant"] = True
    sim.loc[const & sim["measure"].eq("rbf_cka"), "value"] = 0.0
    row = claims.summarise(inp).set_index(["model", "metric"])
    fig2 = row.loc[("vit vs lite0", "cnn_lower_half_best_vit_depth")]
    assert fig2["robust"] is None and fig2["measures"] == "rbf_cka n/a; dcor n/a; bures n/a"
    stage = row.loc[("lite0", "cka_within_minus_across_stage")]
    assert stage["robust"] is True and stage["measures"].startswith("rbf_cka yes 0.5;")


# ---------------------------------------------------------------- standard errors of Figs 3-4, 7, 11-13
def test_attention_heads_decided_by_two_standard_errors():
    # uniform 10 px → threshold 5 px. Block 0: 1 ± 0.5 (local), 4.5 ± 0.5 (undecided), 9 ± 1 (global);
    # block 1: 2 ± 0.1, 8 ± 2 (undecided: 8 - 4 < 5); blocks 2, 3: global by far except 6 ± 1 (undecided)
    dist = [[1.0, 4.5, 9.0], [2.0, 8.0], [9.0, 6.0], [9.0, 9.0]]
    se = [[0.5, 0.5, 1.0], [0.1, 2.0], [0.2, 1.0], [0.3, 0.4]]
    df = _attention_table(dist).assign(se_distance_px=[v for b in se for v in b])
    s = metrics.attention_block_stats(df, uniform_px=10.0)
    assert s["n_local"].tolist() == [2, 1, 0, 0]  # the point counts are unchanged
    assert s["n_local_sure"].tolist() == [1, 1, 0, 0]
    assert s["n_global_sure"].tolist() == [1, 0, 1, 2]
    assert s["n_undecided"].tolist() == [1, 1, 1, 0]
    # spread = max - min head; SE = √(SE_max² + SE_min²) (block 3: two tied heads, still two heads)
    assert s["spread_se"].tolist() == pytest.approx(
        [math.hypot(1.0, 0.5), math.hypot(2.0, 0.1), math.hypot(0.2, 1.0), math.hypot(0.3, 0.4)]
    )
    r = metrics.attention_early_late(df, uniform_px=10.0)
    assert r["early_spread_se"] == pytest.approx((math.hypot(1.0, 0.5) + math.hypot(2.0, 0.1)) / 2)
    assert (r["early_local_sure"], r["early_global_sure"], r["early_undecided"]) == (2, 1, 2)
    assert (r["late_local_sure"], r["late_global_sure"], r["late_undecided"]) == (0, 3, 1)

    inp = ClaimInputs(families={"vit": "vit"}, attention={"vit": (df, 10.0)})
    row = claims.summarise(inp).set_index("metric")
    assert row.loc["uniform_attention_px", "se"] == 0.0
    ci = row[["ci_low", "ci_high"]].apply(tuple, axis=1)
    # one local and one global head, each by 2 SE
    assert row.loc["early_local_heads", "seen"] is True
    assert ci["early_local_heads"] == (2, 4) and ci["early_global_heads"] == (1, 3)
    # no late head is local by its mean, but one is within 2 SE of the threshold: not seen
    late = row.loc["late_local_heads"]
    assert late["value"] == 0 and late["seen"] is False and ci["late_local_heads"] == (0, 1)
    assert "1 within 2 SE" in row.loc["late_local_heads", "note"]
    # early spread 7 ± 1.56, late 1.5 ± 0.76: the difference 5.5 exceeds 2 × 1.74
    e, la = r["early_spread_se"], r["late_spread_se"]
    assert row.loc["late_spread_px", "se"] == pytest.approx(la)
    assert row.loc["late_spread_px", "seen"] is True
    assert 2 * math.hypot(e, la) < r["early_spread_px"] - r["late_spread_px"]
    # the same spreads with SEs three times larger are not told apart
    wide = df.assign(se_distance_px=3 * df["se_distance_px"])
    row = claims.summarise(ClaimInputs(families={"vit": "vit"}, attention={"vit": (wide, 10.0)}))
    assert row.set_index("metric").loc["late_spread_px", "seen"] is False


def _skip_rows(model_type: str, ratios, ses) -> pd.DataFrame:
    cols = {"block": range(len(ratios)), "token_type": model_type}
    return pd.DataFrame({**cols, "ratio_mean": ratios, "ratio_se": ses})


def test_skip_ratio_standard_errors_and_log_ratio_verdicts():
    vit = pd.concat(
        [
            _skip_rows("patch", [2.0, 2.0, 6.0, 6.0], [0.2, 0.4, 0.3, 0.5]),
            _skip_rows("patch", [4.0, 2.0, 6.0, 8.0], [0.4, 0.2, 0.5, 0.3]),  # a second token
            _skip_rows("cls", [20.0, 10.0, 1.0, 1.0], [1.0, 1.0, 0.1, 0.1]),
        ]
    )
    s = metrics.skip_ratio_summary(vit)
    # per block: patch ratios 3, 2, 6, 7 with SEs 0.3, 0.3, 0.4, 0.4 (means of the tokens' SEs)
    assert (s["patch_early"], s["patch_late"]) == pytest.approx((2.5, 6.5))
    assert (s["patch_early_se"], s["patch_late_se"], s["patch_mean_se"]) == pytest.approx(
        (0.3, 0.4, 0.35)
    )
    ratio, lse = metrics.log_ratio(6.5, 0.4, 2.5, 0.3)
    assert ratio == pytest.approx(2.6)
    assert lse == pytest.approx(math.sqrt((0.4 / 6.5) ** 2 + (0.3 / 2.5) ** 2))
    assert math.isnan(metrics.log_ratio(1.0, math.nan, 2.0, 0.1)[1])
    assert math.isnan(metrics.log_ratio(-1.0, 0.1, 2.0, 0.1)[1])

    def rows(cnn_se: float) -> pd.DataFrame:
        inp = ClaimInputs(
            families={"vit": "vit", "cnn": "cnn"},
            skip={"vit": vit, "cnn": _skip_rows("spatial", [4.0, 4.0], [cnn_se, cnn_se])},
        )
        return claims.summarise(inp).set_index(["model", "metric"])

    row = rows(0.1)
    late = row.loc[("vit", "ratio_patch_late_over_early")]
    assert late["value"] == pytest.approx(2.6) and late["se"] == pytest.approx(2.6 * lse)
    assert late["seen"] is True
    cls = row.loc[("vit", "ratio_cls_over_patch_early")]  # 15 ± 1 over 2.5 ± 0.3; falls 15 → 1
    assert cls["value"] == pytest.approx(6.0) and cls["seen"] is True
    assert cls["se"] == pytest.approx(6.0 * math.hypot(1 / 15, 0.3 / 2.5))
    assert row.loc[("vit", "ratio_patch_mean"), "se"] == pytest.approx(0.35)
    assert row.loc[("cnn", "ratio_spatial_mean"), "se"] == pytest.approx(0.1)
    # ViT 4.5 ± 0.35 over CNN 4 ± SE: log(1.125) = 0.118 against 2 SE of the log ratio
    vc = row.loc[("vit vs cnn", "ratio_vit_patch_over_cnn")]
    assert vc["value"] == pytest.approx(1.125)
    assert vc["se"] == pytest.approx(1.125 * math.hypot(0.35 / 4.5, 0.1 / 4))
    assert vc["seen"] is False  # 2 × 0.084 > 0.118: above 1, but not by 2 SE
    assert rows(0.01).loc[("vit vs cnn", "ratio_vit_patch_over_cnn"), "seen"] is False
    tight = vit.assign(ratio_se=vit["ratio_se"] / 10)
    inp = ClaimInputs(
        families={"vit": "vit", "cnn": "cnn"},
        skip={"vit": tight, "cnn": _skip_rows("spatial", [4.0, 4.0], [0.01, 0.01])},
    )
    df = claims.summarise(inp).set_index(["model", "metric"])
    assert df.loc[("vit vs cnn", "ratio_vit_patch_over_cnn"), "seen"] is True


def _probe_table_with_bits(n: int = 400) -> tuple[pd.DataFrame, dict]:
    """cls / mean_spatial probes at 3 depths with per-image correctness: each deeper probe gets right what the
    one before got right, and more (the pairs are nested, as real probes nearly are)."""
    from seelike.tables import PROBE_CORRECT, pack_correct

    rng = np.random.default_rng(0)
    u = rng.random(n)
    correct = {
        ("cls", 0.0): u < 0.30, ("cls", 0.5): u < 0.33, ("cls", 1.0): u < 0.80,
        ("mean_spatial", 0.0): u < 0.40, ("mean_spatial", 0.5): u < 0.60, ("mean_spatial", 1.0): u < 0.78,
    }  # fmt: skip
    rows = [
        {"depth": d, "shots": "10", "aggregation": a, "accuracy": c.mean(), "n_test": n,
         "accuracy_se": math.sqrt(c.mean() * (1 - c.mean()) / n), PROBE_CORRECT: pack_correct(c)}
        for (a, d), c in correct.items()
    ]  # fmt: skip
    return pd.DataFrame(rows), correct


def test_probe_standard_errors_paired_over_test_images():
    df, c = _probe_table_with_bits()
    n = 400

    def paired(*terms):  # float64 reference from the definition: SE of the per-image contrast
        d = sum(w * c[k].astype(np.float64) for w, k in terms)
        return math.sqrt(((d - d.mean()) ** 2).mean() / n)

    e = metrics.probe_depth_se(df, "cls")
    p = c[("cls", 1.0)].mean()
    assert e["last_se"] == pytest.approx(math.sqrt(p * (1 - p) / n))
    assert e["last_minus_first"] == pytest.approx(c[("cls", 1.0)].mean() - c[("cls", 0.0)].mean())
    assert e["last_minus_first_se"] == pytest.approx(paired((1, ("cls", 1.0)), (-1, ("cls", 0.0))))
    g = metrics.probe_gap(df, "cls", "mean_spatial")
    assert g["middle_se"] == pytest.approx(paired((1, ("cls", 0.5)), (-1, ("mean_spatial", 0.5))))
    closes = paired(
        (1, ("cls", 1.0)), (-1, ("mean_spatial", 1.0)), (-1, ("cls", 0.5)), (1, ("mean_spatial", 0.5)),
    )  # fmt: skip
    assert g["closes_se"] == pytest.approx(closes)
    # without the per-image record: independent binomials, larger here (nested probes agree)
    from seelike.tables import PROBE_CORRECT

    e2 = metrics.probe_depth_se(df.drop(columns=PROBE_CORRECT), "cls")
    pf = c[("cls", 0.0)].mean()
    assert e2["last_minus_first_se"] == pytest.approx(math.sqrt((p * (1 - p) + pf * (1 - pf)) / n))
    assert e2["last_minus_first_se"] > e["last_minus_first_se"]

    row = claims.summarise(ClaimInputs(families={"vit": "vit"}, probes={"vit": df}))
    row = row.set_index("metric")
    assert row.loc["accuracy_first_tap", "se"] == pytest.approx(math.sqrt(pf * (1 - pf) / n))
    assert row.loc["accuracy_last_tap", "seen"] is True
    # CLS - mean at the middle tap: -0.27 (paired SE ~0.022): seen; the gap closes by ~0.29: seen
    assert row.loc["cls_minus_mean_middle_tap", "seen"] is True
    assert row.loc["cls_minus_mean_middle_tap", "se"] == pytest.approx(g["middle_se"])
    assert row.loc["cls_minus_mean_last_tap", "seen"] is True
    assert row.loc["cls_minus_mean_last_tap", "se"] == pytest.approx(g["last_se"])


def test_probe_verdict_needs_two_standard_errors():
    """Last beats first by 2 of 400 images: above 0, within 2 paired SE, so not seen."""
    from seelike.tables import PROBE_CORRECT, pack_correct

    n = 400
    first = np.zeros(n, bool)
    first[:200] = True
    last = first.copy()
    last[200:202] = True
    rows = [
        {"depth": d, "shots": "10", "aggregation": "mean_spatial", "accuracy": c.mean(), "n_test": n,
         PROBE_CORRECT: pack_correct(c)}
        for d, c in ((0.0, first), (1.0, last))
    ]  # fmt: skip
    df = pd.DataFrame(rows)
    row = claims.summarise(ClaimInputs(families={"cnn": "cnn"}, probes={"cnn": df}))
    row = row.set_index("metric")
    assert row.loc["accuracy_last_tap", "value"] > row.loc["accuracy_first_tap", "value"]
    assert row.loc["accuracy_last_tap", "seen"] is False
    # the paired SE: two discordant images, √((2/n − (2/n)²)/n)
    se = metrics.probe_depth_se(df, "mean_spatial")["last_minus_first_se"]
    assert se == pytest.approx(math.sqrt((2 / n - (2 / n) ** 2) / n))


@pytest.mark.slow
def test_claims_rule_gives_attention_skip_probe_numbers_an_uncertainty(workflow_run):
    from seelike.io import read_table

    res = workflow_run / "results"
    df, _ = read_table(res / "claims" / "digits.csv")
    rows = df[df["figure"].astype(str).isin(["3-4", "7", "11-13"])]
    known = np.isfinite(rows["se"]) | (np.isfinite(rows["ci_low"]) & np.isfinite(rows["ci_high"]))
    assert len(rows) and known.all(), rows.loc[~known, ["model", "metric"]].to_string()
    new = {"attention": "se_distance_px", "skip": "ratio_se", "probes": "accuracy_se"}
    for sub, col in new.items():
        paths = sorted((res / sub / "digits").glob("*.parquet"))
        assert paths and all(col in read_table(p)[0] for p in paths), (sub, col)
