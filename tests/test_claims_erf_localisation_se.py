"""Standard errors and intervals of the Fig 6 (ERF) and Figs 9/10 (localisation) claims: each against the jackknife
or delta-method formula applied by hand, and the verdicts that need them (2 SE, or an interval above 0.5)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from seelike import claims
from seelike.claims import ClaimInputs, metrics
from seelike.jackknife import jackknife_se


def jk_by_hand(reps) -> float:
    """SE² = (k−1)/k · Σ (θ₋ᵢ − θ̄)², term by term in float64."""
    reps = [float(r) for r in reps]
    k = len(reps)
    mean = sum(reps) / k
    return math.sqrt((k - 1) / k * sum((r - mean) ** 2 for r in reps))


def test_jackknife_se_formula_and_undefined_cases():
    assert jackknife_se([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(0.75 * 5.0))
    reps = np.random.default_rng(0).normal(size=(7, 3, 2))
    got = jackknife_se(reps)
    assert got.shape == (3, 2)
    assert got[1, 0] == pytest.approx(jk_by_hand(reps[:, 1, 0]))
    assert jackknife_se(reps.transpose(1, 0, 2), axis=1)[2, 1] == pytest.approx(got[2, 1])
    assert math.isnan(jackknife_se([1.0]))  # one replicate: no spread to read
    assert math.isnan(jackknife_se([1.0, np.nan, 2.0]))  # undefined without some unit
    assert jackknife_se([2.5] * 4) == 0.0


# ---------------------------------------------------------------- Fig 6
def _erf(sizes, reps, kinds=None, n_images=10, residual="post") -> pd.DataFrame:
    """An ERF table of one residual setting: r50 values, their replicates and the replicates' jackknife SE."""
    n = len(sizes)
    return pd.DataFrame(
        {
            "residual": residual,
            "tap": [f"t{i}" for i in range(n)],
            "kind": kinds or ["out"] * n,
            "order": range(n),
            "n_images": n_images,
            "r50_px": sizes,
            "r50_px_se": [jk_by_hand(r) if np.isfinite(r).all() else np.nan for r in reps],
            "r50_px_jk": [np.asarray(r, dtype=np.float64) for r in reps],
        }
    )


def test_erf_growth_ratio_se_is_the_joint_jackknife_of_the_ratio():
    rng = np.random.default_rng(1)
    first, last = 2.0 + rng.normal(0, 0.05, 6), 5.0 + rng.normal(0, 0.2, 6)
    mid = 3.0 + rng.normal(0, 0.1, 6)
    df = _erf([2.0, 3.0, 5.0], [first, mid, last], kinds=["stem", "out", "out"])
    g = metrics.erf_growth(df)["post"]
    assert g["last_over_first"] == pytest.approx(2.5)
    assert g["last_over_first_se"] == pytest.approx(jk_by_hand(last / first))
    assert (g["first_se"], g["last_se"]) == pytest.approx((jk_by_hand(first), jk_by_hand(last)))
    assert g["first_non_stem_se"] == pytest.approx(jk_by_hand(mid))
    # replicates that move together leave the ratio's SE far below the independent delta method's
    together = _erf([2.0, 5.0], [2.0 * (1 + 0.05 * np.arange(6)), 5.0 * (1 + 0.05 * np.arange(6))])
    g = metrics.erf_growth(together)["post"]
    _, se_log = metrics.log_ratio(5.0, together["r50_px_se"][1], 2.0, together["r50_px_se"][0])
    assert g["last_over_first_se"] == pytest.approx(0.0, abs=1e-12)
    assert 2.5 * se_log > 0.1


def test_erf_growth_skips_a_massless_first_tap_with_its_replicates():
    df = _erf([np.nan, 2.0, 4.0], [[np.nan] * 3, [2.0, 2.1, 1.9], [4.0, 4.4, 3.8]])
    g = metrics.erf_growth(df)["post"]
    assert g["first"] == 2.0
    assert g["last_over_first_se"] == pytest.approx(jk_by_hand([4.0 / 2.0, 4.4 / 2.1, 3.8 / 1.9]))


def test_erf_first_stage_ratio_joint_when_the_same_groups_else_delta_method():
    vit = _erf([6.0, 8.0], [[6.0, 6.3, 5.8, 6.1], [8.0, 8.2, 7.9, 8.1]])
    cnn = _erf(
        [2.0, 3.0, 5.0], [[2.0] * 4, [3.0, 3.3, 2.9, 3.1], [5.0] * 4], kinds=["stem", "out", "out"]
    )
    r = metrics.erf_first_stage_ratio(vit, cnn)
    assert r["joint"] == 1.0 and r["n_groups"] == 4
    assert r["ratio"] == pytest.approx(2.0)
    assert r["se"] == pytest.approx(
        jk_by_hand(np.array([6.0, 6.3, 5.8, 6.1]) / np.array([3.0, 3.3, 2.9, 3.1]))
    )
    # different image counts: not the same groups, so each model's SE on its own (delta method on the log)
    other = cnn.assign(n_images=12)
    r = metrics.erf_first_stage_ratio(vit, other)
    sv, sc = vit["r50_px_se"][0], cnn["r50_px_se"][1]
    assert r["joint"] == 0.0
    assert r["se"] == pytest.approx(2.0 * math.sqrt((sv / 6.0) ** 2 + (sc / 3.0) ** 2))
    assert metrics.erf_first_stage_ratio(vit.assign(residual="pre"), cnn) is None


def _fig6_rows(cnn: pd.DataFrame, vit: pd.DataFrame | None = None) -> pd.DataFrame:
    erf = {"cnn": cnn} if vit is None else {"cnn": cnn, "vit": vit}
    inp = ClaimInputs(families={"cnn": "resnet", "vit": "vit"}, erf=erf)
    df = claims.summarise(inp)
    return df[df["figure"] == "6"].set_index(["model", "metric"])


# ratio 1.1: beyond 2 SE only while the SE stays under 0.05
@pytest.mark.parametrize(("spread", "seen"), [(0.0, True), (0.01, True), (0.2, False)])
def test_fig6_growth_is_seen_only_beyond_two_se(spread, seen):
    base = np.arange(8) - 3.5
    first, last = 2.0 * (1 + spread * base / 4), 2.2 * (1 - spread * base / 4)
    rows = _fig6_rows(_erf([2.0, 2.2], [first, last]))
    row = rows.loc[("cnn", "r50_last_over_first_post")]
    assert row["se"] == pytest.approx(jk_by_hand(last / first))
    assert row["seen"] is seen
    assert "jackknife" in row["note"]
    for metric in ("r50_px_first_post", "r50_px_last_post"):
        assert math.isfinite(rows.loc[("cnn", metric), "se"])


def test_fig6_without_replicates_is_undecided():
    df = _erf([2.0, 5.0], [[2.0, 2.0], [5.0, 5.0]]).drop(columns=["r50_px_jk", "r50_px_se"])
    rows = _fig6_rows(df)
    assert rows.loc[("cnn", "r50_last_over_first_post"), "seen"] is None
    assert math.isnan(rows.loc[("cnn", "r50_last_over_first_post"), "se"])


def test_fig6_vit_over_cnn_row_has_the_joint_se_and_needs_two_se():
    vit = _erf([6.0, 8.0], [[6.0, 6.6, 5.4, 6.0], [8.0] * 4])
    cnn = _erf(
        [2.0, 3.0, 5.0], [[2.0] * 4, [3.0, 3.0, 3.0, 3.0], [5.0] * 4], kinds=["stem", "out", "out"]
    )
    rows = _fig6_rows(cnn, vit)
    row = rows.loc[("vit vs cnn", "r50_vit_first_over_cnn_first_stage_post")]
    se = jk_by_hand(np.array([6.0, 6.6, 5.4, 6.0]) / 3.0)
    assert row["value"] == pytest.approx(2.0) and row["se"] == pytest.approx(se)
    assert row["seen"] is (1.0 > 2 * se) and "joint jackknife" in row["note"]
    near = _erf([3.3, 8.0], [[3.3, 3.9, 2.7, 3.3], [8.0] * 4])  # ratio 1.1, SE ≈ 0.14
    near_rows = _fig6_rows(cnn, near)
    assert near_rows.loc[("vit vs cnn", "r50_vit_first_over_cnn_first_stage_post"), "seen"] is False


# ---------------------------------------------------------------- Figs 9, 10
def ref_localisation_stats(df: pd.DataFrame) -> dict[str, float]:
    """The Figs 9/10 definitions with pandas, row by row: interior tokens (off the border) whose own patch is
    kept; constant tokens / patches out; own mean, mean over tokens of the other patches' mean, argmax share."""
    h, w = int(df["patch_row"].max()) + 1, int(df["patch_col"].max()) + 1
    d = df[~df["patch_constant"] & ~df["token_constant"]]
    d = d[d["token_row"].between(1, h - 2) & d["token_col"].between(1, w - 2)]
    own = d[d["token"] == d["patch"]]
    d = d[d["token"].isin(own["token"].unique())]
    if d.empty:
        return {"own": math.nan, "other": math.nan, "own_is_argmax": math.nan, "n_interior": 0.0}
    others, hits = [], []
    for t, g in d.groupby("token"):
        others.append(g.loc[g["patch"] != t, "cka"].mean())
        hits.append(g["patch"].iloc[int(np.argmax(g["cka"].to_numpy()))] == t)  # first of a tie
    return {
        "own": float(own["cka"].mean()),
        "other": float(np.nanmean(others)),
        "own_is_argmax": float(np.mean(hits)),
        "n_interior": float(own["token"].nunique()),
    }


def random_localisation_table(rng, shuffle: bool) -> pd.DataFrame:
    h, w = (int(v) for v in rng.integers(2, 7, 2))
    size = h * w
    toks = rng.choice(size, size=int(rng.integers(1, size + 1)), replace=False)
    t, g = (a.ravel() for a in np.meshgrid(toks, np.arange(size), indexing="ij"))
    pc, tc = rng.random(size) < 0.15, rng.random(size) < 0.1
    df = pd.DataFrame(
        {"token": t, "token_row": t // w, "token_col": t % w, "patch": g, "patch_row": g // w,
         "patch_col": g % w, "cka": rng.random(len(t)).round(1),  # rounded: ties for the argmax
         "token_constant": tc[t], "patch_constant": pc[g]}
    )  # fmt: skip
    return df.sample(frac=1, random_state=int(rng.integers(1 << 30))) if shuffle else df


def test_localisation_stats_match_the_pandas_definition_on_random_tables():
    rng = np.random.default_rng(3)
    for i in range(120):
        df = random_localisation_table(rng, shuffle=bool(i % 2))
        got, ref = metrics.localisation_stats(df), ref_localisation_stats(df)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, nan_ok=True), (i, k)


def test_localisation_cells_read_any_values_on_the_same_rows():
    rng = np.random.default_rng(4)
    df = random_localisation_table(rng, shuffle=True)
    while metrics.localisation_stats(df)["n_interior"] == 0:
        df = random_localisation_table(rng, shuffle=True)
    cells = metrics.localisation_cells(df)
    other = rng.random(len(df))
    got = metrics.localisation_stats_of(cells, other)
    assert got == pytest.approx(ref_localisation_stats(df.assign(cka=other)), nan_ok=True)


def _loc(own: float, other: float, summary: dict[str, float] | None, h: int = 4, w: int = 4):
    rows = []
    for t in range(h * w):
        for g in range(h * w):
            rows.append(
                {"token": t, "token_row": t // w, "token_col": t % w, "patch": g, "patch_row": g // w,
                 "patch_col": g % w, "cka": own if t == g else other, "token_constant": False,
                 "patch_constant": False}
            )  # fmt: skip
    df = pd.DataFrame(rows)
    for k, v in (summary or {}).items():
        df[f"summary_{k}"] = v
    return df


def _summary(own_se, other_se, diff_se, argmax_se, lo, hi) -> dict[str, float]:
    return {"own_se": own_se, "other_se": other_se, "own_minus_other_se": diff_se,
            "own_is_argmax_se": argmax_se, "own_is_argmax_ci_low": lo, "own_is_argmax_ci_high": hi,
            "n_groups": 10.0}  # fmt: skip


def _fig9_10(vit: pd.DataFrame, cnn: pd.DataFrame) -> pd.DataFrame:
    inp = ClaimInputs(
        families={"vit": "vit", "cnn": "resnet"}, localisation={"vit": vit, "cnn": cnn}
    )
    df = claims.summarise(inp)
    return df[df["figure"] == "9-10"].set_index(["model", "metric"])


def test_fig9_10_rows_carry_the_tables_se_and_interval():
    vit = _loc(0.9, 0.1, _summary(0.01, 0.02, 0.025, 0.05, 0.8, 1.0))
    cnn = _loc(0.5, 0.45, _summary(0.03, 0.01, 0.03, 0.1, 0.6, 1.0))
    rows = _fig9_10(vit, cnn)
    assert rows.loc[("vit", "own_patch_cka"), "se"] == 0.01
    assert rows.loc[("vit", "other_patch_cka"), "se"] == 0.02
    argmax = rows.loc[("vit", "own_is_argmax_rate")]
    assert (argmax["value"], argmax["se"], argmax["ci_low"], argmax["ci_high"]) == (
        1.0,
        0.05,
        0.8,
        1.0,
    )
    assert argmax["seen"] is True
    assert rows.loc[("cnn", "own_is_argmax_rate"), "seen"] is None  # descriptive for the CNN
    # ViT − CNN: each model's SE combined as independent
    d = rows.loc[("vit vs cnn", "own_minus_other_vit_minus_cnn")]
    assert d["value"] == pytest.approx(0.8 - 0.05)
    assert d["se"] == pytest.approx(math.hypot(0.025, 0.03)) and d["seen"] is True
    assert "conservative" in d["note"]
    a = rows.loc[("vit vs cnn", "own_is_argmax_vit_minus_cnn")]
    assert (
        a["value"] == 0.0 and a["se"] == pytest.approx(math.hypot(0.05, 0.1)) and a["seen"] is False
    )
    # every row has an SE
    assert np.isfinite(rows["se"].to_numpy(float)).all()


def test_fig9_10_argmax_needs_its_interval_above_half_and_differences_two_se():
    # own is the argmax of every token (rate 1), but the interval reaches below 0.5: not seen
    vit = _loc(0.9, 0.1, _summary(0.01, 0.02, 0.025, 0.3, 0.45, 1.0))
    cnn = _loc(0.5, 0.45, _summary(0.03, 0.01, 0.4, 0.1, 0.6, 1.0))
    rows = _fig9_10(vit, cnn)
    assert rows.loc[("vit", "own_is_argmax_rate"), "seen"] is False
    d = rows.loc[("vit vs cnn", "own_minus_other_vit_minus_cnn")]
    assert d["value"] > 0 and d["seen"] is False  # 0.75 < 2 × √(0.025² + 0.4²)
    # a table without the summary columns (fewer than 2 minibatches, an older run): undecided
    rows = _fig9_10(_loc(0.9, 0.1, None), _loc(0.5, 0.45, None))
    assert all(s is None for s in rows["seen"])
