"""Uncertainty of every CKA-derived claim: the jackknife / bootstrap over groups of minibatches
(`seelike.analyses.replicates`) against a float64 reference computed from activations, its invariants, and the
claims rows built on it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_cka import ref_hsic1
from test_claims import long_cka

from seelike import claims
from seelike.analyses.replicates import (
    CkaGroups,
    bootstrap,
    group_slices,
    group_terms,
    groups_path,
    jackknife,
)
from seelike.cka import CkaAccumulator, gram
from seelike.claims import ClaimInputs
from seelike.claims.metrics import self_cka_thirds_of


# ----------------------------------------------------------------------------- float64 reference
def activations(seed: int, repeats: int, k: int, n: int, taps: int, shared=None):
    """acts[r][b][t]: (n, p) activations of `taps` taps, minibatch b of repeat r; tap t mixes a per-image signal
    (`shared`, the same images for every model) with its own noise, more noise deeper."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(repeats):
        reps = []
        for b in range(k):
            z = shared[r][b] if shared is not None else rng.standard_normal((n, 6))
            reps.append(
                [z @ rng.standard_normal((6, 5)) + (0.5 + t) * rng.standard_normal((n, 5))
                 for t in range(taps)]
            )  # fmt: skip
        out.append(reps)
    return out


def signal(seed: int, repeats: int, k: int, n: int):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((n, 6)) for _ in range(k)] for _ in range(repeats)]


def ref_terms(acts_a, acts_b):
    """Per repeat: HSIC₁ of every tap pair and every minibatch (Song et al.'s formula, float64), as
    (cross (k, Tₐ, T_b), self_a (k, Tₐ), self_b (k, T_b))."""
    out = []
    for ra, rb in zip(acts_a, acts_b, strict=True):
        ka = [[x @ x.T for x in batch] for batch in ra]
        kb = [[y @ y.T for y in batch] for batch in rb]
        cross = np.array(
            [[[ref_hsic1(K, L) for L in lb] for K in la] for la, lb in zip(ka, kb, strict=True)]
        )
        sa = np.array([[ref_hsic1(K, K) for K in la] for la in ka])
        sb = np.array([[ref_hsic1(L, L) for L in lb] for lb in kb])
        out.append((cross, sa, sb))
    return out


def ref_cka(terms, w) -> np.ndarray:
    """Minibatch CKA of one repeat with minibatch weights w (k,): 0 leaves a minibatch out, a count repeats it."""
    cross, sa, sb = terms
    w = np.asarray(w, dtype=np.float64)
    return np.einsum("k,kij->ij", w, cross) / np.sqrt(np.outer(w @ sa, w @ sb))


def pipeline_groups(acts_a, acts_b, groups: int) -> tuple[CkaGroups, list[CkaAccumulator]]:
    """What the CKA rule stores: the accumulator's per-minibatch terms, summed into `groups` groups per repeat."""
    grouped, accs = [], []
    for ra, rb in zip(acts_a, acts_b, strict=True):
        acc = CkaAccumulator(len(ra[0]), len(rb[0]))
        for ba, bb in zip(ra, rb, strict=True):
            acc.add(torch.stack([gram(torch.from_numpy(x)) for x in ba]),
                    torch.stack([gram(torch.from_numpy(y)) for y in bb]))  # fmt: skip
        grouped.append(group_terms(*acc.terms(), groups=groups))
        accs.append(acc)
    ta, tb = len(acts_a[0][0]), len(acts_b[0][0])
    return CkaGroups.from_repeats(grouped, np.zeros(ta, bool), np.zeros(tb, bool)), accs


R, K, N = 2, 6, 12
SHARED = signal(7, R, K, N)


@pytest.fixture(scope="module")
def pair():
    a = activations(1, R, K, N, 4, SHARED)
    b = activations(2, R, K, N, 3, SHARED)
    return a, b, ref_terms(a, b), ref_terms(a, a), ref_terms(b, b)


def ref_jackknife(metric, terms_list, groups: int) -> float:
    """Delete-a-group jackknife of metric(list of matrices), from the reference: replicate (r, g) moves repeat r's
    CKA to its value without group g's minibatches; SE² = Σᵣ (G−1)/G Σ_g (f − mean_g f)²."""
    k = terms_list[0][0][0].shape[0]
    slices = np.array_split(np.arange(k), min(k, groups))
    g = len(slices)
    full = [[ref_cka(t[r], np.ones(k)) for r in range(R)] for t in terms_list]
    est = [np.mean(f, axis=0) for f in full]
    var = 0.0
    for r in range(R):
        vals = []
        for s in slices:
            w = np.ones(k)
            w[s] = 0
            vals.append(metric([e + (ref_cka(t[r], w) - f[r]) / R
                                for e, t, f in zip(est, terms_list, full, strict=True)]))  # fmt: skip
        vals = np.array(vals)
        var += (g - 1) / g * ((vals - vals.mean()) ** 2).sum()
    return math.sqrt(var)


# ----------------------------------------------------------------------------- the replicates against the reference
@pytest.mark.parametrize("groups", [6, 3, 4])
def test_groups_recompute_every_leave_one_group_out_matrix(pair, groups):
    a, b, terms, _, _ = pair
    g, _ = pipeline_groups(a, b, groups)
    assert g.cross.shape == (R, min(K, groups), 4, 3)
    full = [ref_cka(terms[r], np.ones(K)) for r in range(R)]
    np.testing.assert_allclose(g.estimate(), np.mean(full, axis=0), rtol=1e-9)
    for r in range(R):
        loo = g.leave_one_out(r)
        for i, s in enumerate(group_slices(K, groups)):
            w = np.ones(K)
            w[s] = 0
            np.testing.assert_allclose(loo[i], ref_cka(terms[r], w), rtol=1e-9)


def test_group_slices_are_consecutive_and_cover_every_minibatch():
    for k, g in ((1, 20), (6, 20), (25, 20), (40, 20), (7, 3)):
        s = group_slices(k, g)
        assert len(s) == min(k, g) and np.array_equal(np.concatenate(s), np.arange(k))
        assert max(map(len, s)) - min(map(len, s)) <= 1


@pytest.mark.parametrize("groups", [6, 3])
def test_jackknife_of_a_mean_of_cells_equals_the_reference(pair, groups):
    a, b, terms, _, _ = pair
    g, _ = pipeline_groups(a, b, groups)
    mean = lambda ms: float(np.mean(ms[0]))
    assert jackknife(mean, [g]) == pytest.approx(ref_jackknife(mean, [terms], groups), rel=1e-8)
    # a max over cells (not linear): the same replicates
    top = lambda ms: float(ms[0].max())
    assert jackknife(top, [g]) == pytest.approx(ref_jackknife(top, [terms], groups), rel=1e-8)
    # dict metrics give the SE of each key
    both = jackknife(lambda ms: {"mean": mean(ms), "max": top(ms)}, [g])
    assert both == pytest.approx({"mean": jackknife(mean, [g]), "max": jackknife(top, [g])})


def test_jackknife_of_one_cell_with_one_minibatch_per_group_is_the_cell_se(pair):
    """G = k: a single cell's jackknife is the table's `cka_se`, √Σ SE²ᵣ / R of the per-minibatch jackknife."""
    a, b, _, _, _ = pair
    g, accs = pipeline_groups(a, b, K)
    cell_se = np.sqrt(sum(acc.jackknife_se() ** 2 for acc in accs)) / R
    for i, j in ((0, 0), (3, 2), (1, 2)):
        assert jackknife(lambda ms, i=i, j=j: float(ms[0][i, j]), [g]) == pytest.approx(
            cell_se[i, j], rel=1e-9
        )
    # the SE of a mean of cells is at most the mean of their SEs (the bound the claims used before)
    assert jackknife(lambda ms: float(np.mean(ms[0])), [g]) <= cell_se.mean() + 1e-15


def test_joint_jackknife_of_two_tables_keeps_their_correlation(pair):
    a, b, _, terms_aa, terms_bb = pair
    gaa, _ = pipeline_groups(a, a, 3)
    gbb, _ = pipeline_groups(b, b, 3)
    third = lambda m: self_cka_thirds_of(m)["lowest_vs_highest_third"]
    diff = lambda ms: third(ms[0]) - third(ms[1])
    assert jackknife(diff, [gaa, gbb]) == pytest.approx(
        ref_jackknife(diff, [terms_aa, terms_bb], 3), rel=1e-8
    )
    # a table against itself: the difference is exactly 0 in every replicate, while independence would say √2 SE
    assert jackknife(diff, [gaa, gaa]) == pytest.approx(0.0, abs=1e-15)
    assert jackknife(lambda ms: third(ms[0]), [gaa]) > 0
    # tables of different plans cannot be resampled jointly
    short, _ = pipeline_groups([r[:4] for r in a], [r[:4] for r in a], 3)
    short = CkaGroups(short.cross[:1], short.self_a[:1], short.self_b[:1], short.undefined)
    with pytest.raises(ValueError, match="same repeats and groups"):
        jackknife(diff, [gaa, short])


def test_bootstrap_draws_equal_the_reference_on_the_resampled_minibatches(pair):
    """A bootstrap draw's counts per group reweight the group's minibatches: the CKA of a draw equals the
    reference ratio of means over the resampled minibatch list."""
    a, b, terms, _, _ = pair
    g, _ = pipeline_groups(a, b, 3)
    rng = np.random.default_rng(0)
    counts = rng.multinomial(3, np.full(3, 1 / 3), size=R)
    got = g.per_repeat(counts)
    for r in range(R):
        w = np.zeros(K)
        for c, s in zip(counts[r], group_slices(K, 3), strict=True):
            w[s] = c
        np.testing.assert_allclose(got[r], ref_cka(terms[r], w), rtol=1e-9)
    np.testing.assert_allclose(g.per_repeat(np.ones((R, 3))), g.per_repeat(), rtol=1e-12)


def test_bootstrap_interval_is_seeded_and_agrees_with_the_jackknife():
    a = activations(3, 2, 20, 12, 3)
    g, _ = pipeline_groups(a, a, 20)
    mean = lambda ms: float(np.mean(ms[0][np.triu_indices(3, 1)]))
    one, two = bootstrap(mean, [g], draws=400, seed=1), bootstrap(mean, [g], draws=400, seed=1)
    assert one == two and bootstrap(mean, [g], draws=400, seed=2) != one
    est = mean([g.estimate()])
    assert one.low < est < one.high
    # two estimates of one spread (the bootstrap SD and the jackknife SE of a smooth statistic)
    assert 0.6 < one.sd / jackknife(mean, [g]) < 1.6
    # an argmax: an interval of depths, inside [0, 1]
    depth = lambda ms: float(np.argmax(ms[0][0, 1:]) / 1)
    ivl = bootstrap(depth, [g], draws=200)
    assert 0 <= ivl.low <= ivl.high <= 1


def test_groups_invariants_and_round_trip(pair, tmp_path):
    a, b, _, _, _ = pair
    g, _ = pipeline_groups(a, b, 3)
    t = g.transposed()
    np.testing.assert_allclose(t.estimate(), g.estimate().T)
    np.testing.assert_allclose(g.take([2, 0], [1]).estimate(), g.estimate()[np.ix_([2, 0], [1])])
    # CKA is invariant to rescaling a model's activations: HSIC terms scale, the groups' CKA does not
    scaled = CkaGroups(g.cross * 3.0, g.self_a * 9.0, g.self_b, g.undefined)
    np.testing.assert_allclose(scaled.estimate(), g.estimate(), rtol=1e-12)
    masked = g.masked(np.eye(4, 3, dtype=bool))
    assert np.isnan(masked.estimate()[1, 1]) and np.isfinite(masked.estimate()[1, 0])
    path = groups_path(tmp_path / "vit__res.parquet")
    assert path == tmp_path / "vit__res.groups.npz"
    g.save(path)
    back = CkaGroups.load(path)
    for f in ("cross", "self_a", "self_b", "undefined"):
        np.testing.assert_array_equal(getattr(back, f), getattr(g, f))
    assert not list(tmp_path.glob(".*tmp"))


# ----------------------------------------------------------------------------- the CKA rule's tables and their groups
def test_cka_from_caches_stores_groups_that_reproduce_the_table(tmp_path):
    from test_cache import DS, info, tiny_resnet, tiny_vit

    from seelike.analyses.cache import build_cache
    from seelike.analyses.cka_tables import cka_from_caches, per_block_cka, per_block_groups
    from seelike.data.samples import build_samples, write_samples
    from seelike.tables import cka_array

    samples = tmp_path / "samples.csv"
    write_samples(build_samples(DS, 0), samples)
    vit, res = tiny_vit(), tiny_resnet()
    for name, m, d in (("vit", vit, "a"), ("res", res, "b")):
        build_cache(
            m, info(name, m), samples, DS, tmp_path / d, n_images=32, batch_size=8, repeats=2
        )
    df, meta, g = cka_from_caches(tmp_path / "a", tmp_path / "b", with_groups=True)
    assert (g.repeats, g.n_groups) == (2, 4) and "groups" in meta["uncertainty"]
    m, _, _ = cka_array(df)
    np.testing.assert_allclose(g.estimate(), m, atol=1e-12)
    # four minibatches, four groups: each cell's jackknife is the table's cka_se
    se, _, _ = cka_array(df, "cka_se")
    for i, j in ((0, 0), (2, 3), (m.shape[0] - 1, m.shape[1] - 1)):
        assert jackknife(lambda ms, i=i, j=j: float(ms[0][i, j]), [g]) == pytest.approx(
            se[i, j], rel=1e-8
        )
    # without the flag, the same table and no groups
    plain = cka_from_caches(tmp_path / "a", tmp_path / "b")
    assert len(plain) == 2
    pd.testing.assert_frame_equal(plain[0], df)
    # a per-block table's groups are the cross table's on its cells, its values on their diagonal
    _, _, gs = cka_from_caches(tmp_path / "a", tmp_path / "a", with_groups=True)
    self_df = cka_from_caches(tmp_path / "a", tmp_path / "a")[0]
    taps = pd.DataFrame({"name": self_df.drop_duplicates("tap_a")["tap_a"], "block": 0})
    pb = per_block_cka(self_df, taps)
    np.testing.assert_allclose(
        np.diagonal(per_block_groups(self_df, gs).estimate()), pb["cka"], atol=1e-12
    )


# ----------------------------------------------------------------------------- the claims rows
def _stage_table():
    names = ["stem"] + [f"layer{s}.{b}.out" for s in (1, 2) for b in range(3)]
    return names


def synthetic_groups(
    m: np.ndarray, noise: float, seed: int, repeats: int = 2, groups: int = 10
) -> CkaGroups:
    """Groups whose CKA is m plus noise per group (self terms 1 per group): CKA = the mean of the groups' cross
    terms, so the spread of the groups is the noise's."""
    rng = np.random.default_rng(seed)
    cross = m[None, None] + noise * rng.standard_normal((repeats, groups, *m.shape))
    ones = lambda t: np.ones((repeats, groups, t))
    undefined = np.zeros(m.shape, bool)
    return CkaGroups(cross, ones(m.shape[0]), ones(m.shape[1]), undefined)


def _centred(g: CkaGroups, m: np.ndarray) -> CkaGroups:
    """`g` shifted so that its estimate is exactly m (each repeat's groups centred on m)."""
    shift = m[None] - g.per_repeat()
    return CkaGroups(g.cross + shift[:, None], g.self_a, g.self_b, g.undefined)


def test_fig1_standard_errors_are_the_jackknife_of_each_number():
    names = _stage_table()
    stage = np.array([-1, 1, 1, 1, 2, 2, 2])
    m = np.where(stage[:, None] == stage[None, :], 0.8, 0.7)
    np.fill_diagonal(m, 1.0)
    g = _centred(synthetic_groups(m, 0.05, 0), m)
    df = long_cka(m, names)
    df["cka_se"] = 0.05
    inp = ClaimInputs(families={"r": "resnet"}, archs={"r": "resnet18"}, self_cka={"r": df},
                      groups={("self_cka", "r"): g})  # fmt: skip
    out = claims.summarise(inp).set_index("metric")
    from seelike.claims.metrics import stage_cka_of

    within = lambda ms: stage_cka_of(ms[0], names)["within"]
    diff = lambda ms: stage_cka_of(ms[0], names)["within"] - stage_cka_of(ms[0], names)["across"]
    assert out.loc["cka_within_stage", "se"] == pytest.approx(jackknife(within, [g]))
    assert out.loc["cka_within_minus_across_stage", "se"] == pytest.approx(jackknife(diff, [g]))
    third = lambda ms: self_cka_thirds_of(ms[0])["lowest_vs_highest_third"]
    assert out.loc["cka_lowest_vs_highest_third", "se"] == pytest.approx(jackknife(third, [g]))
    adjacent = lambda ms: self_cka_thirds_of(ms[0])["adjacent"]
    assert out.loc["cka_adjacent_taps", "se"] == pytest.approx(jackknife(adjacent, [g]))
    assert "jackknife of the statistic" in out.loc["cka_within_stage", "note"]
    assert out.loc["cka_within_minus_across_stage", "value"] == pytest.approx(0.1)
    # the verdict follows the jackknife SE: a noisy table no longer sees the 0.1 difference
    noisy = _centred(synthetic_groups(m, 2.0, 0), m)
    inp.groups = {("self_cka", "r"): noisy}
    row = claims.summarise(inp).set_index("metric").loc["cka_within_minus_across_stage"]
    assert row["se"] > 0.05 and row["seen"] is False


def test_fig1_vit_minus_cnn_is_resampled_jointly():
    from test_claims import _inputs

    inp = _inputs()
    vit, cnn = inp.self_cka["vit"], inp.self_cka["cnn"]
    from seelike.tables import cka_array

    mv, mc = cka_array(vit)[0], cka_array(cnn)[0]
    # the same per-group noise in both tables (the same images): the difference varies much less than either
    gv = _centred(synthetic_groups(mv, 0.02, 0), mv)
    gc = _centred(synthetic_groups(np.resize(mv, mc.shape), 0.02, 0), mc)
    inp.groups = {("self_cka", "vit"): gv, ("self_cka", "cnn"): gc}
    out = claims.summarise(inp).set_index(["model", "metric"])
    third = lambda m: self_cka_thirds_of(m)["lowest_vs_highest_third"]
    row = out.loc[("vit vs cnn", "cka_lowest_vs_highest_third_vit_minus_cnn")]
    joint = jackknife(lambda ms: third(ms[0]) - third(ms[1]), [gv, gc])
    assert row["se"] == pytest.approx(joint) and "jointly" in row["note"]
    assert np.isfinite(out.loc[("vit", "cka_adjacent_taps"), "se"])


def _fig2_inputs(cross: np.ndarray, groups: CkaGroups | None) -> ClaimInputs:
    """A ViT (rows, 7 taps) × CNN (columns, 4 taps) cross table."""
    vit_taps = [f"blocks.{i}" for i in range(7)]
    cnn_taps = ["stem", "layer1.0.out", "layer2.0.out", "layer3.0.out"]
    inp = ClaimInputs(families={"vit": "vit", "cnn": "resnet"},
                      cross_cka={("vit", "cnn"): long_cka(cross, vit_taps, cnn_taps)})  # fmt: skip
    if groups is not None:
        inp.groups = {("cross_cka", ("vit", "cnn")): groups}
    return inp


def test_fig2_depth_bands_need_their_bootstrap_interval_inside_the_band():
    m = np.full((7, 4), 0.3)
    m[0, :2] = 0.9  # the CNN's lower half: best matched by the ViT's first tap (depth 0)
    m[2, 2:] = 0.9  # the upper half: ViT tap 2 (depth 1/3)
    m[6, :] = 0.2
    clear = _centred(synthetic_groups(m, 0.01, 1), m)
    out = claims.summarise(_fig2_inputs(m, clear)).set_index("metric")
    lo = out.loc["cnn_lower_half_best_vit_depth"]
    assert lo["value"] == 0 and lo["ci_low"] == lo["ci_high"] == 0 and lo["seen"] is True
    up = out.loc["cnn_upper_half_best_vit_depth"]
    assert up["ci_low"] == pytest.approx(1 / 3) and up["seen"] is True
    assert "interval: bootstrap" in up["note"]
    # a rival match deep in the ViT, as strong as the first tap: the point value still says depth 0, the
    # interval reaches depth 1, and the finding is not seen
    rival = m.copy()
    rival[6, :2] = 0.9 - 1e-4
    noisy = _centred(synthetic_groups(rival, 0.05, 1), rival)
    out = claims.summarise(_fig2_inputs(rival, noisy)).set_index("metric")
    lo = out.loc["cnn_lower_half_best_vit_depth"]
    assert lo["value"] == 0 and lo["ci_high"] > 0.25 and lo["seen"] is False
    # no groups: the point value decides, as before, and the note says so
    out = claims.summarise(_fig2_inputs(rival, None)).set_index("metric")
    assert out.loc["cnn_lower_half_best_vit_depth", "seen"] is True
    assert np.isnan(out.loc["cnn_lower_half_best_vit_depth", "ci_low"])
    assert "no interval" in out.loc["cnn_lower_half_best_vit_depth", "note"]


def test_fig2_last_third_needs_two_standard_errors_of_the_difference():
    m = np.full((7, 4), 0.5)
    m[5:, :] = 0.45  # the last third a little below the first two thirds
    tight = _centred(synthetic_groups(m, 0.001, 2), m)
    loose = _centred(synthetic_groups(m, 0.5, 2), m)
    from seelike.claims.metrics import cross_cka_alignment_of

    def diff(ms):
        r = cross_cka_alignment_of(ms[0].T)
        return r["vit_first_two_thirds_best_cnn_cka"] - r["vit_last_third_best_cnn_cka"]

    for g, seen in ((tight, True), (loose, False)):
        out = claims.summarise(_fig2_inputs(m, g)).set_index("metric")
        row = out.loc["vit_last_third_best_cnn_cka"]
        assert row["seen"] is seen and np.isfinite(row["se"])
        assert f"± {jackknife(diff, [g]):.2g}" in row["note"]
        assert np.isfinite(out.loc["vit_first_two_thirds_best_cnn_cka", "se"])


def test_fig8_partition_minus_reference_is_a_joint_jackknife():
    from test_claims import _inputs

    from seelike.claims.metrics import no_skip_partition_of
    from seelike.tables import cka_array

    inp = _inputs()
    m_ns, names = cka_array(inp.self_cka["noskip"])[:2]
    m_ref = cka_array(inp.self_cka["vit"])[0]
    g_ns = _centred(synthetic_groups(m_ns, 0.02, 3), m_ns)
    g_ref = _centred(synthetic_groups(m_ref, 0.02, 4), m_ref)
    inp.groups = {("self_cka", "noskip"): g_ns, ("self_cka", "vit"): g_ref}
    out = claims.summarise(inp).set_index(["model", "metric"])
    part = lambda m: no_skip_partition_of(m, names, 3)["partition"]
    row = out.loc[("noskip vs vit", "partition_minus_reference")]
    assert row["se"] == pytest.approx(
        jackknife(lambda ms: part(ms[0]) - part(ms[1]), [g_ns, g_ref])
    )
    assert row["seen"] is True and "jointly" in row["note"]
    assert out.loc[("noskip", "partition_at_block_3"), "se"] == pytest.approx(
        jackknife(lambda ms: part(ms[0]), [g_ns])
    )
    # a partition within its noise is not seen
    inp.groups = {("self_cka", "noskip"): _centred(synthetic_groups(m_ns, 20.0, 3), m_ns),
                  ("self_cka", "vit"): g_ref}  # fmt: skip
    assert (
        claims.summarise(inp)
        .set_index(["model", "metric"])
        .loc[("noskip vs vit", "partition_minus_reference"), "seen"]
        is False
    )


def test_fig12_and_fig5_read_their_own_groups():
    from test_claims import _inputs

    inp = _inputs()
    pb = pd.DataFrame({"depth": [0.0, 0.5, 1.0], "cka": [0.9, 0.6, 0.3], "se": 0.01})
    inp.per_block = {("vit", "vit10"): pb}
    d = np.diag([0.9, 0.6, 0.3])
    g_pb = _centred(synthetic_groups(d, 0.01, 5), d)
    hs = pd.DataFrame({"subset": np.repeat([0, 1, 2], 2), "subset_mean_distance_px": np.repeat([1.0, 5.0, 9.0], 2),
                       "cnn_tap_order": [0, 1] * 3, "cka": [0.9, 0.8, 0.5, 0.4, 0.2, 0.1], "cka_se": 0.05})  # fmt: skip
    inp.head_subsets = {"vit": hs}
    mh = hs["cka"].to_numpy().reshape(3, 2)
    g_hs = _centred(synthetic_groups(mh, 0.02, 6), mh)
    inp.groups = {("per_block", ("vit", "vit10")): g_pb, ("head_subsets", "vit"): g_hs}
    out = claims.summarise(inp).set_index(["model", "metric"])
    low = jackknife(lambda ms: float(np.diagonal(ms[0])[0]), [g_pb])
    assert out.loc[("vit vs vit10", "cka_lowest_third_blocks"), "se"] == pytest.approx(low)
    assert out.loc[("vit vs vit10", "cka_highest_third_blocks"), "seen"] is True
    local = jackknife(lambda ms: float(ms[0][0].mean()), [g_hs])
    assert out.loc[("vit", "most_local_subset_cka"), "se"] == pytest.approx(local)
    rho = out.loc[("vit", "spearman_distance_vs_cka")]
    assert rho["value"] == -1 and rho["ci_high"] == -1 and rho["seen"] is True
    # without groups: the cells' SEs (an upper bound) and the point value
    inp.groups = {}
    out = claims.summarise(inp).set_index(["model", "metric"])
    assert out.loc[("vit", "most_local_subset_cka"), "se"] == pytest.approx(0.05)
    assert "upper bound" in out.loc[("vit", "most_local_subset_cka"), "note"]
    assert np.isnan(out.loc[("vit", "spearman_distance_vs_cka"), "ci_low"])


def test_other_measures_do_not_borrow_linear_ckas_groups():
    from seelike.claims.table import measure_inputs

    inp = ClaimInputs(families={}, groups={("self_cka", "x"): object()})
    assert measure_inputs(inp, "rbf_cka").groups == {}


def test_claims_rule_reads_the_groups_oriented_as_the_table(tmp_path):
    """A pair stored the other way round is read transposed, and so are its groups."""
    from types import SimpleNamespace

    from snakemake.iocontainers import Namedlist

    from seelike.io import write_table
    from seelike.rules.claims import _claims_inputs
    from seelike.tables import cka_array

    m = np.arange(12, dtype=float).reshape(3, 4) / 20
    cnn_taps, vit_taps = ["stem", "layer1.0.out", "layer2.0.out"], [f"blocks.{i}" for i in range(4)]
    path = tmp_path / "cnn__vit.parquet"
    write_table(long_cka(m, cnn_taps, vit_taps), path, {"model_a": "cnn", "model_b": "vit"})
    _centred(synthetic_groups(m, 0.01, 0), m).save(groups_path(path))
    sections = ("self_cka", "cross_cka", "attention", "head_subsets", "erf", "skip", "localisation",
                "probes", "per_block", "similarity")  # fmt: skip
    labels = {s: [] for s in sections} | {"cross_cka": [["vit", "cnn"]]}
    ctx = SimpleNamespace(
        input=Namedlist(fromdict={s: [] for s in sections} | {"cross_cka": [str(path)]}),
        params=SimpleNamespace(labels=labels, models={"vit": {"family": "vit", "arch": "v"},
                                                      "cnn": {"family": "cnn", "arch": "resnet18"}}),
    )  # fmt: skip
    inp = _claims_inputs(ctx)
    g = inp.groups[("cross_cka", ("vit", "cnn"))]
    np.testing.assert_allclose(
        g.estimate(), cka_array(inp.cross_cka[("vit", "cnn")])[0], atol=1e-12
    )
    np.testing.assert_allclose(g.estimate(), m.T, atol=1e-12)


def test_head_subset_groups_reproduce_the_head_subset_table():
    """Fig 5's groups: every minibatch of the plan in one ratio of means (one repeat), as its table."""
    from test_attention import tiny_vit

    from seelike.analyses.head_subsets import head_subset_cka

    model = tiny_vit()
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(6, 3, 32, 32, generator=g) for _ in range(4)]
    cnn = [torch.randn(6, 5, 2, 2, generator=g) for _ in range(4)]
    grams = [torch.stack([gram(c), gram(c**2)]) for c in cnn]
    cka, se, groups = head_subset_cka(
        model, xs, grams, [[2], [0, 1]], with_se=True, with_groups=True
    )
    assert (groups.repeats, groups.n_groups, groups.shape) == (1, 4, (2, 2))
    np.testing.assert_allclose(groups.estimate(), cka, atol=1e-12)
    assert jackknife(lambda ms: float(ms[0][1, 0]), [groups]) == pytest.approx(se[1, 0], rel=1e-9)
