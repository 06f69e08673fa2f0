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
