"""Minibatch CKA against an independent float64 reference written from the formulas, plus invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seelike.cka import (
    CkaAccumulator,
    ConstantRepresentationWarning,
    cka_matrix,
    gram,
    hsic1,
    minibatch_cka,
    n_from_packed,
    pack_upper,
    packed_size,
    permuted_upper_index,
    u_centre_packed,
    unpack_upper,
)


# ----------------------------------------------------------------------------- independent reference
def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, term by term, float64 — deliberately not via U-centring."""
    n = K.shape[0]
    Kt = K.astype(np.float64).copy()
    Lt = L.astype(np.float64).copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def ref_minibatch_cka(xs, ys) -> float:
    """Nguyen et al. (2021): ratio of the means of per-batch HSIC₁ values."""
    kk, ll, kl = [], [], []
    for x, y in zip(xs, ys, strict=True):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        y = np.asarray(y, np.float64).reshape(len(y), -1)
        K, L = x @ x.T, y @ y.T
        kl.append(ref_hsic1(K, L))
        kk.append(ref_hsic1(K, K))
        ll.append(ref_hsic1(L, L))
    return float(np.mean(kl) / np.sqrt(np.mean(kk) * np.mean(ll)))


def ref_biased_cka(x, y) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


rng = np.random.default_rng(1234)


def batches(shape, k, dtype=np.float64):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(k)]


# ----------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("n,p", [(4, 3), (5, 7), (16, 2), (32, 100), (64, 17)])
def test_hsic1_matches_reference(n, p):
    x, y = (
        rng.standard_normal((n, p)),
        rng.standard_normal((n, p + 3)) + 0.3 * rng.standard_normal((n, 1)),
    )
    K, L = x @ x.T, y @ y.T
    assert hsic1(K, L) == pytest.approx(ref_hsic1(K, L), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "shape_x,shape_y,k",
    [
        ((16, 8), (16, 5), 1),
        ((20, 4, 3, 3), (20, 6, 10), 3),
        ((32, 65, 12), (32, 16, 4, 4), 4),
        ((9, 2), (9, 300), 2),
    ],
)
def test_minibatch_cka_matches_reference(shape_x, shape_y, k):
    xs = batches(shape_x, k)
    # ys share some structure with xs so the value is not trivially ~0
    ys = [
        np.tanh(
            rng.standard_normal(shape_y)
            + x.reshape(len(x), -1)[:, :1].reshape((-1,) + (1,) * (len(shape_y) - 1))
        )
        for x in xs
    ]
    ours = minibatch_cka(xs, ys)
    ref = ref_minibatch_cka(xs, ys)
    assert abs(ours - ref) < 1e-6
    assert abs(ours) > 0.01


def test_fp32_inputs_agree_with_float64_reference():
    xs = batches((64, 96), 3, np.float32)
    ys = [x[:, :40] * 2 + 0.1 * rng.standard_normal((64, 40)).astype(np.float32) for x in xs]
    assert abs(minibatch_cka(xs, ys) - ref_minibatch_cka(xs, ys)) < 1e-6


def test_cka_matrix_fast_path_matches_per_pair_reference():
    taps_a = {f"a{i}": batches((24, 5 + i), 3) for i in range(4)}
    taps_b = {
        f"b{j}": [x[:, :3] ** (j + 1) + rng.standard_normal((24, 3)) for x in taps_a["a0"]]
        for j in range(3)
    }
    df = cka_matrix(taps_a, taps_b)
    assert list(df.index) == list(taps_a) and list(df.columns) == list(taps_b)
    for a, xs in taps_a.items():
        for b, ys in taps_b.items():
            assert abs(df.loc[a, b] - ref_minibatch_cka(xs, ys)) < 1e-6


def test_ratio_of_means_differs_from_mean_of_ratios():
    """Guards against averaging per-batch CKAs (a common mistake)."""
    xs = [rng.standard_normal((16, 4)) * s for s in (1.0, 10.0)]
    ys = [x + rng.standard_normal((16, 4)) * s for x, s in zip(xs, (0.1, 30.0), strict=True)]
    mean_of_ratios = np.mean([ref_minibatch_cka([x], [y]) for x, y in zip(xs, ys, strict=True)])
    ours = minibatch_cka(xs, ys)
    assert abs(ours - ref_minibatch_cka(xs, ys)) < 1e-9
    assert abs(ours - mean_of_ratios) > 1e-3


# ----------------------------------------------------------------------------- invariants
def test_self_cka_is_one_and_self_matrix_symmetric():
    taps = {
        f"t{i}": [np.tanh(x @ rng.standard_normal((10, 10 + i))) for x in batches((32, 10), 2)]
        for i in range(5)
    }
    for xs in taps.values():
        assert minibatch_cka(xs, xs) == pytest.approx(1.0, abs=1e-12)
    m = cka_matrix(taps).to_numpy()
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)


def test_invariant_to_orthogonal_transform_and_isotropic_scaling():
    xs = batches((40, 30), 3)
    ys = [np.tanh(x[:, :20]) + 0.5 * rng.standard_normal((40, 20)) for x in xs]
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    base = minibatch_cka(xs, ys)
    assert minibatch_cka([x @ q for x in xs], ys) == pytest.approx(base, abs=1e-10)
    assert minibatch_cka([7.5 * x for x in xs], [0.01 * y for y in ys]) == pytest.approx(
        base, abs=1e-10
    )


def test_not_invariant_to_anisotropic_scaling():
    """Sanity check that the invariance test could fail."""
    xs = batches((40, 30), 3)
    ys = [np.tanh(x[:, :20]) + 0.5 * rng.standard_normal((40, 20)) for x in xs]
    d = np.diag(np.r_[np.full(15, 100.0), np.full(15, 0.01)])
    assert abs(minibatch_cka([x @ d for x in xs], ys) - minibatch_cka(xs, ys)) > 1e-3


def test_independent_features_near_zero_where_biased_is_not():
    """PAPER.md pitfall: n=128, d=768 independent Gaussians: biased ≈ 0.86, unbiased ≈ 0."""
    x, y = rng.standard_normal((128, 768)), rng.standard_normal((128, 768))
    assert ref_biased_cka(x, y) > 0.8
    assert abs(minibatch_cka([x], [y])) < 0.05


# ----------------------------------------------------------------------------- edge cases
def test_short_batches_are_dropped_with_warning():
    xs = batches((16, 6), 2) + [rng.standard_normal((3, 6))]
    ys = [x @ rng.standard_normal((6, 4)) for x in xs]
    with pytest.warns(UserWarning, match="dropped minibatches \\[2\\]"):
        df = cka_matrix({"x": xs}, {"y": ys})
    assert df.attrs["dropped_batches"] == [2]
    assert df.iloc[0, 0] == pytest.approx(ref_minibatch_cka(xs[:2], ys[:2]), abs=1e-9)


def test_only_short_batches_raise():
    with pytest.raises(ValueError, match="at least 4"):
        minibatch_cka([rng.standard_normal((3, 5))], [rng.standard_normal((3, 5))])
    with pytest.raises(ValueError, match="at least 4"):
        hsic1(np.eye(3), np.eye(3))


def test_constant_tap_is_reported_not_nan():
    xs = batches((16, 6), 2)
    const = [np.ones((16, 6)) * 3.0 for _ in xs]
    zero = [np.zeros((16, 6)) for _ in xs]
    with pytest.warns(ConstantRepresentationWarning, match="const"):
        df = cka_matrix({"x": xs, "const": const, "zero": zero})
    assert not df.isna().any().any()
    assert set(df.attrs["constant_rows"]) == {"const", "zero"}
    assert df.loc["const", "x"] == 0.0 and df.loc["x", "zero"] == 0.0
    assert df.loc["x", "x"] == pytest.approx(1.0)


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="same number of minibatches"):
        minibatch_cka(batches((8, 3), 2), batches((8, 3), 1))
    with pytest.raises(ValueError, match="examples"):
        minibatch_cka([rng.standard_normal((8, 3))], [rng.standard_normal((9, 3))])
    with pytest.raises(ValueError, match="square"):
        hsic1(np.ones((5, 4)), np.ones((5, 4)))


def test_gram_is_centred_exact_fp32_and_float64_when_given():
    x32 = torch.randn(10, 7)
    assert gram(x32).dtype == torch.float32
    assert gram(x32.double()).dtype == torch.float64
    xc = x32.double().numpy() - x32.double().numpy().mean(0)
    np.testing.assert_allclose(gram(x32.double()).numpy(), xc @ xc.T, atol=1e-12)


def test_centred_gram_keeps_fp32_accurate_on_features_with_a_large_common_mean():
    """Post-ReLU-like features: positive, large shared mean. HSIC₁ from our fp32 Gram stays within 1e-7 of
    the float64 reference; the uncentred fp32 Gram would be off by ~1e-5 (checked, so the test can fail)."""
    x = (np.abs(rng.standard_normal((128, 20000))) + 3).astype(np.float32)
    x[:, :8] += rng.standard_normal((128, 8)).astype(np.float32)
    k64 = x.astype(np.float64) @ x.astype(np.float64).T
    ref = ref_hsic1(k64, k64)
    ours = hsic1(gram(x), gram(x))
    naive32 = torch.from_numpy(x) @ torch.from_numpy(x).T
    assert abs(ours - ref) / ref < 1e-7
    assert abs(hsic1(naive32, naive32) - ref) / ref > 1e-7


def test_accumulator_chunking_does_not_change_result():
    grams_a = torch.stack([torch.as_tensor(x @ x.T) for x in batches((12, 5), 7)])
    grams_b = torch.stack([torch.as_tensor(x @ x.T) for x in batches((12, 9), 3)])
    r1 = CkaAccumulator(7, 3, chunk=2)
    r2 = CkaAccumulator(7, 3, chunk=100)
    r1.add(grams_a, grams_b)
    r2.add(grams_a, grams_b)
    np.testing.assert_allclose(r1.result(), r2.result(), atol=1e-14)


def test_notebook_compare_matches_reference_on_real_models():
    import timm

    from seelike.api import compare
    from seelike.models.taps import discover_taps, record_taps

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=4,
        depth=1,
        embed_dim=16,
        num_heads=2,
    )
    images = torch.randn(20, 3, 16, 16)
    df = compare(vit, None, images, batch_size=8, device="cpu")  # last batch of 4 kept
    acts = {t.name: [] for t in discover_taps(vit)}
    with (
        record_taps(vit, discover_taps(vit), lambda t, a: acts[t.name].append(a.double())),
        torch.no_grad(),
    ):
        for x in images.split(8):
            vit(x)
    for name in ("embed", "blocks.0.mlp_hidden", "norm"):
        assert df.loc[name, "blocks.0.attn"] == pytest.approx(
            ref_minibatch_cka(acts[name], acts["blocks.0.attn"]), abs=1e-6
        )
    # the other measures from the same forward passes: linear CKA as compare's, each measure as from the
    # activations (seelike.similarity, tested against float64 references in test_similarity.py)
    from seelike.api import compare_measures
    from seelike.similarity import similarity_matrix

    dfs = compare_measures(vit, None, images, measures=["linear_cka", "dcor", "rsa"], batch_size=8)
    np.testing.assert_allclose(dfs["linear_cka"].to_numpy(), df.to_numpy(), rtol=1e-12)
    for m in ("dcor", "rsa"):
        ref = similarity_matrix(acts, None, m)
        np.testing.assert_allclose(dfs[m].to_numpy(), ref.to_numpy(), atol=1e-5, err_msg=m)


# ----------------------------------------------------------------------------- packed (cache) storage
def test_pack_unpack_round_trip_keeps_the_diagonal():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 7, 5))
    k = torch.from_numpy(x @ x.transpose(0, 2, 1))
    p = pack_upper(k)
    assert p.shape == (3, packed_size(7)) == (3, 28) and n_from_packed(28) == 7
    iu = np.triu_indices(7)
    np.testing.assert_array_equal(p.numpy(), k.numpy()[:, iu[0], iu[1]])
    np.testing.assert_array_equal(unpack_upper(p).numpy(), k.numpy())
    with pytest.raises(ValueError, match="upper triangle"):
        n_from_packed(27)


@pytest.mark.parametrize("n", [4, 9, 33])
def test_u_centring_on_the_triangle_matches_hsic1_reference(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 6)) + 3.0, rng.normal(size=(n, 4))
    K, L = x @ x.T, y @ y.T
    uk, _ = u_centre_packed(pack_upper(torch.from_numpy(K)), n)
    ul, _ = u_centre_packed(pack_upper(torch.from_numpy(L)), n)
    # ⟨U_K, U_L⟩ over the full matrices = 2 Σ_{i<j}: the strict upper triangles carry HSIC₁
    value = float(2 * (uk * ul).sum() / (n * (n - 3)))
    assert value == pytest.approx(ref_hsic1(K, L), rel=1e-10, abs=1e-12)


def test_accumulator_takes_packed_stacks_equal_to_full_ones():
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(16, 10)) for _ in range(3)]
    ys = [rng.normal(size=(16, 8)) + xs[i][:, :8] for i in range(3)]
    full, packed = CkaAccumulator(1, 1), CkaAccumulator(1, 1)
    for x, y in zip(xs, ys, strict=True):
        gx, gy = gram(torch.from_numpy(x))[None], gram(torch.from_numpy(y))[None]
        full.add(gx, gy)
        # numpy arrays, as memory-mapped from disk
        packed.add(pack_upper(gx).numpy(), pack_upper(gy).numpy())
    np.testing.assert_allclose(packed.result(), full.result(), rtol=1e-12)
    assert packed.result()[0, 0] == pytest.approx(ref_minibatch_cka(xs, ys), abs=1e-10)


# ----------------------------------------------------------------------------- uncertainty
def _correlated(rng, n, strengths=(0.3, 1.0, 3.0), p=12):
    """One minibatch of a shared latent seen by taps of different signal strengths (CKA from ~0.1 to ~0.9)."""
    z = rng.normal(size=(n, p))
    xs = [z @ rng.normal(size=(p, p)) + rng.normal(size=(n, p)) / s for s in strengths]
    ys = [z @ rng.normal(size=(p, p)) + rng.normal(size=(n, p)) / s for s in strengths]
    return xs, ys


def test_permuted_upper_index_is_p_m_pt():
    rng = np.random.default_rng(0)
    n = 7
    m = rng.normal(size=(n, n))
    m = m + m.T
    perm = rng.permutation(n)
    iu = np.triu_indices(n, 1)
    idx = permuted_upper_index(n, perm).numpy()
    np.testing.assert_array_equal(m[iu][idx], m[np.ix_(perm, perm)][iu])


def test_jackknife_se_matches_a_delete_one_reference():
    rng = np.random.default_rng(1)
    k, n = 5, 16
    batches = [_correlated(rng, n) for _ in range(k)]
    acc = CkaAccumulator(3, 3)
    for xs, ys in batches:
        acc.add(
            torch.stack([gram(torch.from_numpy(x)) for x in xs]),
            torch.stack([gram(torch.from_numpy(y)) for y in ys]),
        )
    se = acc.jackknife_se()
    for a in range(3):
        for b in range(3):
            loo = [
                ref_minibatch_cka(
                    [xs[a] for i, (xs, _) in enumerate(batches) if i != d],
                    [ys[b] for i, (_, ys) in enumerate(batches) if i != d],
                )
                for d in range(k)
            ]
            ref = np.sqrt((k - 1) / k * ((np.array(loo) - np.mean(loo)) ** 2).sum())
            assert se[a, b] == pytest.approx(ref, rel=1e-8, abs=1e-12)
    one = CkaAccumulator(1, 1)
    one.add(gram(torch.from_numpy(batches[0][0][0]))[None])
    assert np.isnan(one.jackknife_se()).all()  # one minibatch: no jackknife


def test_subset_is_the_accumulator_of_those_minibatches_repeats_included():
    """`subset` (the planner's bootstrap and re-cut repeats) against the float64 reference of the chosen
    minibatches, a minibatch listed twice counting twice."""
    rng = np.random.default_rng(7)
    batches = [_correlated(rng, 12) for _ in range(5)]
    acc = CkaAccumulator(3, 3)
    for xs, ys in batches:
        acc.add(
            torch.stack([gram(torch.from_numpy(x)) for x in xs]),
            torch.stack([gram(torch.from_numpy(y)) for y in ys]),
        )
    pick = [3, 0, 3, 1]
    sub = acc.subset(pick)
    assert sub.batches == 4 and sub.null_cross.shape[0] == 0
    ref = np.array(
        [
            [ref_minibatch_cka([batches[i][0][a] for i in pick], [batches[i][1][b] for i in pick])
             for b in range(3)]
            for a in range(3)
        ]
    )  # fmt: skip
    np.testing.assert_allclose(sub.result(), ref, rtol=1e-10, atol=1e-12)
    loo = np.stack(
        [
            [[ref_minibatch_cka([batches[i][0][a] for j, i in enumerate(pick) if j != d],
                                [batches[i][1][b] for j, i in enumerate(pick) if j != d])
              for b in range(3)] for a in range(3)]
            for d in range(len(pick))
        ]
    )  # fmt: skip
    jk = np.sqrt(3 / 4 * ((loo - loo.mean(0)) ** 2).sum(0))
    np.testing.assert_allclose(sub.jackknife_se(), jk, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(acc.subset(range(5)).result(), acc.result(), rtol=1e-12)


def test_permutation_null_matches_permuted_images_reference():
    rng = np.random.default_rng(2)
    k, n, perms, seed = 3, 12, 4, 7
    batches = [_correlated(rng, n) for _ in range(k)]
    acc = CkaAccumulator(3, 3, permutations=perms, seed=seed)
    for i, (xs, ys) in enumerate(batches):
        acc.add(
            torch.stack([gram(torch.from_numpy(x)) for x in xs]),
            torch.stack([gram(torch.from_numpy(y)) for y in ys]),
            batch_id=i,
        )
    null = acc.null()
    assert null.shape == (perms, 3, 3)
    # the same permutations drawn independently: the second model's images shuffled within each minibatch
    draws = [np.random.default_rng([seed, i]) for i in range(k)]
    for p in range(perms):
        orders = [d.permutation(n) for d in draws]
        for a, b in ((0, 0), (2, 2), (1, 2)):
            ref = ref_minibatch_cka(
                [xs[a] for xs, _ in batches],
                [ys[b][o] for (_, ys), o in zip(batches, orders, strict=True)],
            )
            assert null[p, a, b] == pytest.approx(ref, abs=1e-10)
    # a real dependence stands far out of its null; the null is centred near 0
    real = acc.result()
    assert real[2, 2] > null[:, 2, 2].max() + 0.3
    assert abs(null.mean()) < 0.1


def test_jackknife_se_agrees_with_the_spread_over_independent_repeats():
    """The delete-one-minibatch SE predicts the SD of the minibatch CKA over independent samples (within
    a factor 1.5 for cells above 0.05), averaged over 30 repeats of 8 minibatches of 32 images."""
    rng = np.random.default_rng(3)
    strengths = (0.15, 0.3, 1.0, 3.0)
    mix = [
        rng.normal(size=(12, 12)) for _ in range(8)
    ]  # fixed "models": tap weights shared by repeats
    values, ses = [], []
    for _ in range(30):
        acc = CkaAccumulator(len(strengths), len(strengths))
        for _ in range(8):
            z = rng.normal(size=(32, 12))
            ga = [
                gram(torch.from_numpy(z @ mix[i] + rng.normal(size=(32, 12)) / s))
                for i, s in enumerate(strengths)
            ]
            gb = [
                gram(torch.from_numpy(z @ mix[4 + i] + rng.normal(size=(32, 12)) / s))
                for i, s in enumerate(strengths)
            ]
            acc.add(torch.stack(ga), torch.stack(gb))
        values.append(acc.result())
        ses.append(acc.jackknife_se())
    values, ses = np.stack(values), np.stack(ses)
    sd, se = values.std(0, ddof=1), ses.mean(0)
    cells = values.mean(0) > 0.05
    assert cells.sum() >= 10
    ratio = se[cells] / sd[cells]
    assert (ratio > 1 / 1.5).all() and (ratio < 1.5).all(), ratio


def test_gram_in_feature_slices_equals_the_whole_product(monkeypatch):
    """`gram` accumulates the centred Gram over bounded slices of features (no full centred copy): the same
    Gram to fp32 precision, for contiguous and channels-last (non-contiguous) activations."""
    import seelike.cka as cka_mod

    x = torch.relu(torch.randn(12, 8, 6, 5)) + 2.0
    whole = gram(x)
    ref = x.double().reshape(12, -1)
    ref = (ref - ref.mean(0)) @ (ref - ref.mean(0)).T
    monkeypatch.setattr(cka_mod, "GRAM_SLICE_VALUES", 12 * 7)  # slices of 7 features
    sliced = gram(x)
    cl = gram(x.to(memory_format=torch.channels_last))  # cut along channels first, then features
    for g in (whole, sliced, cl):
        np.testing.assert_allclose(g.double().numpy(), ref.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sliced.numpy(), whole.numpy(), rtol=1e-5, atol=1e-4)
    seen = []
    orig = torch.Tensor.addmm_
    monkeypatch.setattr(
        torch.Tensor, "addmm_", lambda k, a, b: (seen.append(a.numel()), orig(k, a, b))[1]
    )
    gram(x)
    assert len(seen) > 1 and max(seen) <= 12 * 7


def test_compare_flags_constant_taps_as_cka_matrix_does():
    """A random-init ResNet-18 has constant `branch` taps (zero-initialised last BN): compare warns and lists them
    exactly as cka_matrix does on the same activations (one code path: cka_from_grams)."""
    import timm

    from seelike.api import compare
    from seelike.models.taps import discover_taps, record_taps

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    x = torch.randn(10, 3, 32, 32)
    with pytest.warns(ConstantRepresentationWarning):
        df = compare(model, model, x, batch_size=5, device="cpu")
    branch = [t.name for t in discover_taps(model) if t.kind == "branch"]
    assert len(branch) == 8
    assert sorted(df.attrs["constant_rows"]) == sorted(branch) == sorted(df.attrs["constant_cols"])
    assert df.attrs["dropped_batches"] == []
    assert all(df.loc[t, t] == 0.0 for t in branch)
    acts = {t.name: [] for t in discover_taps(model)}
    with (
        record_taps(model, discover_taps(model), lambda t, a: acts[t.name].append(a.clone())),
        torch.no_grad(),
    ):
        for xb in x.split(5):
            model(xb)
    with pytest.warns(ConstantRepresentationWarning):
        ref = cka_matrix(acts)
    assert ref.attrs == df.attrs
    np.testing.assert_allclose(df.to_numpy(), ref.to_numpy(), atol=1e-6)
