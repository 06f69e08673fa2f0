"""The protocol planner: re-cutting a pilot cache's minibatches, the fitted (a + b/n)/N law, costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cache import DS, info, tiny_resnet, tiny_vit

from seelike.analyses.cache import build_cache, gram_bytes
from seelike.analyses.cka_tables import cka_from_caches
from seelike.cka import pack_upper
from seelike.data.samples import build_samples, write_samples
from seelike.planner import fit_precision, gram_gflop, plan_table, recut
from seelike.tables import cka_array

FULL = {**DS, "max_test": None}  # all ~450 digits test images


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("planner")
    samples = root / "samples.csv"
    write_samples(build_samples(FULL, 0), samples)
    vit, res = tiny_vit(), tiny_resnet()
    out = {}
    for batch in (32, 16):
        for name, model in (("vit", vit), ("res", res)):
            build_cache(model, info(name, model), samples, FULL, root / f"{name}{batch}",
                        n_images=448, batch_size=batch)  # fmt: skip
            out[(name, batch)] = root / f"{name}{batch}"
    return out


def test_sub_batches_are_the_grams_of_the_image_subsets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 5))
    full = np.stack([xi @ xi.T for xi in x])
    subs = recut(torch.from_numpy(full), 4)
    assert len(subs) == 2
    np.testing.assert_allclose(
        subs[1].numpy(), pack_upper(torch.from_numpy(full[:, 4:, 4:])).numpy()
    )


def test_the_pilot_at_its_own_cut_reproduces_the_table_se(caches):
    model = fit_precision(caches[("vit", 32)], caches[("res", 32)], cuts=[32])
    df, _ = cka_from_caches(caches[("vit", 32)], caches[("res", 32)])
    se_table, _, _ = cka_array(df, "cka_se")
    np.testing.assert_allclose(model.se(32, 448), se_table, rtol=1e-8, atol=1e-12)


def test_predicted_se_at_another_batch_matches_a_real_cache_at_that_batch(caches):
    """Fit on the batch-32 pilot re-cut at 8 and 32, predict batch 16, compare with the jackknife SE of a
    cache actually built at batch 16 (median over cells with CKA ≥ 0.05 within a factor 1.5)."""
    model = fit_precision(caches[("vit", 32)], caches[("res", 32)], cuts=[8, 32])
    df16, _ = cka_from_caches(caches[("vit", 16)], caches[("res", 16)])
    se16, _, _ = cka_array(df16, "cka_se")
    values, _, _ = cka_array(df16)
    cells = values >= 0.05
    assert cells.sum() >= 20
    ratio = np.median(model.se(16, 448)[cells] / se16[cells])
    assert 1 / 1.5 < ratio < 1.5, ratio
    assert (model.a >= 0).all() and (model.b >= 0).all()


def test_plan_table_costs_and_target(caches):
    model = fit_precision(caches[("vit", 32)], caches[("vit", 32)], cuts=[8, 16, 32])
    table = plan_table(model, [16, 32], [64, 448], [1, 4], target_se=0.05)
    row = table[(table.batch_size == 32) & (table.n_images == 448) & (table.repeats == 4)].iloc[0]
    assert row["gram_gflop"] == pytest.approx(gram_gflop(model.tap_features, 32, 448, 4))
    assert row["gram_gflop"] == pytest.approx(2 * sum(model.tap_features) * 32 * 448 * 4 / 1e9)
    assert row["disk_gb"] == pytest.approx(gram_bytes(len(model.tap_features), [32] * 14, 4) / 1e9)
    assert table["gram_gflop"].is_monotonic_increasing and "meets_target" in table
    # more images or repeats never predict a larger SE
    a = table.set_index(["batch_size", "n_images", "repeats"])["se_max"]
    assert a[(32, 448, 4)] < a[(32, 448, 1)] < a[(32, 64, 1)]


# ----------------------------------------------------------------------------- the pooled law and its range
def ref_pooled_law(var: dict, n_images: int, dof: dict, cells: np.ndarray):
    """The fit's definition with a continuous β (scipy), float64: Var·N = s·(1 + β/n), β minimising the
    dof-weighted relative squared residuals of `cells`, s the dof-weighted mean of Var·N/(1 + β/n)."""
    from scipy.optimize import minimize_scalar

    cuts = sorted(var)
    w = np.array([dof[c] for c in cuts], float)
    y = np.stack([var[c] * n_images for c in cuts]).astype(np.float64)

    def level(beta):
        return sum(w[i] * y[i] / (1 + beta / c) for i, c in enumerate(cuts)) / w.sum()

    def loss(beta):
        s = level(beta)
        return sum(w[i] * ((y[i] / (s * (1 + beta / c)) - 1)[cells] ** 2).sum()
                   for i, c in enumerate(cuts))  # fmt: skip

    opt = minimize_scalar(lambda t: loss(np.exp(t)), bounds=(np.log(0.05), np.log(2e4)),
                          method="bounded", options={"xatol": 1e-6})  # fmt: skip
    beta = 0.0 if loss(0.0) <= opt.fun else float(np.exp(opt.x))
    s = level(beta)
    return s, s * beta


def _law_inputs(seed: int, beta: float, noise: float):
    rng = np.random.default_rng(seed)
    cuts, n_images = [8, 16, 32, 64], 512
    s = rng.uniform(0.5, 2.0, (6, 5))
    dof = {c: n_images // c - 1 for c in cuts}
    var = {
        c: s * (1 + beta / c) / n_images * np.exp(noise * rng.standard_normal(s.shape))
        for c in cuts
    }
    return var, n_images, dof


@pytest.mark.parametrize(("beta", "noise"), [(15.85, 0.0), (0.0, 0.0), (40.0, 0.2), (3.0, 0.3)])
def test_fit_law_equals_a_continuous_float64_reference(beta, noise):
    from seelike.planner import fit_law

    var, n_images, dof = _law_inputs(3, beta, noise)
    a, b = fit_law(var, n_images, dof)
    ra, rb = ref_pooled_law(var, n_images, dof, np.ones(a.shape, bool))
    for n in (
        4,
        16,
        128,
        1024,
    ):  # inside and outside the cuts: the grid's step moves a prediction < 1%
        np.testing.assert_allclose(a + b / n, ra + rb / n, rtol=0.01)
    if noise == 0:  # an exact law is recovered
        s = var[8] * n_images / (1 + beta / 8)
        np.testing.assert_allclose(a + b / 100, s * (1 + beta / 100), rtol=0.005)
    assert (a >= 0).all() and (b >= 0).all()


def test_fit_law_leaves_out_cells_without_variance():
    """A tap with itself (CKA 1: a jackknife variance of rounding noise) must not steer the shape."""
    from seelike.planner import fit_law

    var, n_images, dof = _law_inputs(4, 20.0, 0.1)
    clean_a, clean_b = fit_law(var, n_images, dof)
    rng = np.random.default_rng(5)
    noisy = {c: v.copy() for c, v in var.items()}
    for v in noisy.values():
        v[0, 0] = 1e-34 * rng.uniform()
    a, b = fit_law(noisy, n_images, dof)
    keep = np.ones(a.shape, bool)
    keep[0, 0] = False
    np.testing.assert_allclose((a + b / 50)[keep], (clean_a + clean_b / 50)[keep], rtol=0.02)


def test_range_refits_leave_each_pilot_minibatch_out():
    """Each refit is the law fitted on the pilot without one of its minibatches (all its cuts together), rebuilt
    here from the Grams themselves; the printed range is the jackknife of the log median × Student t."""
    from scipy.stats import t

    from seelike.cka import CkaAccumulator, gram
    from seelike.planner import add_recut, fit_law, jackknife_law, precision_model

    rng = np.random.default_rng(11)
    pilot, cuts = 6, [8, 16, 32]
    grams = []
    for _ in range(pilot):
        z = rng.standard_normal((32, 4))
        feats = [
            z @ rng.standard_normal((4, 7)) + 0.5 * rng.standard_normal((32, 7)) for _ in range(3)
        ]
        grams.append(torch.stack([gram(torch.from_numpy(f)) for f in feats]))
    accs = {c: CkaAccumulator(3, 3) for c in cuts}
    for g in grams:
        add_recut(accs, g, None)
    loo_a, loo_b = jackknife_law(accs, pilot * 32, pilot)
    assert loo_a.shape == (pilot, 3, 3)
    for drop in (0, 4):
        ref = {c: CkaAccumulator(3, 3) for c in cuts}
        for m in range(pilot):
            if m != drop:
                add_recut(ref, grams[m], None)
        dof = {c: ref[c].batches - 1 for c in cuts}
        a, b = fit_law({c: r.jackknife_se() ** 2 for c, r in ref.items()}, (pilot - 1) * 32, dof)
        np.testing.assert_allclose(loo_a[drop], a, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(loo_b[drop], b, rtol=1e-8, atol=1e-14)
    model = precision_model(accs, pilot * 32, pilot, [1] * 3, [1] * 3, True)
    cells = ~np.eye(3, dtype=bool)
    lo, hi = model.se_range(16, 256, 1, cells)
    logs = np.log(
        [np.median(np.sqrt((a + b / 16) / 256)[cells]) for a, b in zip(loo_a, loo_b, strict=True)]
    )
    se = np.sqrt((pilot - 1) / pilot * ((logs - logs.mean()) ** 2).sum())
    point = np.median(model.se(16, 256)[cells])
    q = t.ppf(0.95, pilot - 1)
    assert lo == pytest.approx(point * np.exp(-q * se), rel=1e-10)
    assert hi == pytest.approx(point * np.exp(q * se), rel=1e-10)
    table = plan_table(model, [8, 32], [256], [1])
    assert (table["se_median_lo"] <= table["se_median"]).all()
    assert (table["se_median"] <= table["se_median_hi"]).all()
    assert (
        precision_model(accs, pilot * 32, pilot, [1] * 3, [1] * 3, True, refits=False).loo_a is None
    )
