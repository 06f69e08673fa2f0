"""The CKA family and its relatives (seelike.similarity) against independent float64 references written
term by term from the papers' formulas, then invariances, independence behaviour and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from seelike.cka import ConstantRepresentationWarning
from seelike.similarity import MEASURES, MeasureOptions, minibatch_similarity, similarity_matrix

SPEC_MEASURES = (
    "linear_cka",
    "linear_cka_biased",
    "rbf_cka",
    "dcor",
    "rsa",
    "linear_cka_minus_pc",
    "bures",
)
# (measure, options) pairs covering every measure and every option value the tests exercise
VARIANTS = [
    ("linear_cka", MeasureOptions()),
    ("linear_cka_biased", MeasureOptions()),
    ("rbf_cka", MeasureOptions()),
    ("rbf_cka", MeasureOptions(rbf_sigma=0.5)),
    ("rbf_cka", MeasureOptions(rbf_sigma=2.0)),
    ("dcor", MeasureOptions()),
    ("rsa", MeasureOptions()),
    ("rsa", MeasureOptions(rsa_correlation="pearson")),
    ("linear_cka_minus_pc", MeasureOptions()),
    ("linear_cka_minus_pc", MeasureOptions(pcs_removed=2)),
    ("bures", MeasureOptions()),
]
VARIANT_IDS = [f"{m}-{o.rbf_sigma}-{o.rsa_correlation}-{o.pcs_removed}" for m, o in VARIANTS]
RTOL64 = 1e-8  # float64 inputs vs the float64 references
ATOL64 = 1e-10


# ----------------------------------------------------------------------------- independent references
def flat(x) -> np.ndarray:
    """One minibatch (n, ...) as a float64 (n, p) array, one row per example."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(0)


def ref_dist(x: np.ndarray) -> np.ndarray:
    """D_ij = ‖x_i − x_j‖, from the differences (not from a Gram)."""
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt((diff**2).sum(-1))


def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, term by term."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def ref_hsic0(K: np.ndarray, L: np.ndarray) -> float:
    """Biased HSIC (Gretton et al. 2005): tr(K H L H)/(n−1)², H = I − 11ᵀ/n."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def ref_rbf_kernel(x: np.ndarray, sigma_frac: float) -> np.ndarray:
    """K_ij = exp(−D_ij²/(2σ²)), σ = sigma_frac × median of the distances over distinct pairs i < j."""
    D = ref_dist(x)
    iu = np.triu_indices(len(x), 1)
    sigma = sigma_frac * np.median(D[iu])
    return np.exp(-(D**2) / (2 * sigma**2))


def ref_dcov2_u(x: np.ndarray, y: np.ndarray) -> float:
    """Bias-corrected squared distance covariance (Székely & Rizzo 2014), U-centred distance matrices."""
    n = len(x)

    def u_centred(A):
        a_row = A.sum(1)  # a_i.
        a_col = A.sum(0)  # a_.j
        a_all = A.sum()  # a..
        At = A - a_row[:, None] / (n - 2) - a_col[None, :] / (n - 2) + a_all / ((n - 1) * (n - 2))
        np.fill_diagonal(At, 0.0)
        return At

    At, Bt = u_centred(ref_dist(x)), u_centred(ref_dist(y))
    off = ~np.eye(n, dtype=bool)  # Σ over i ≠ j
    return (At[off] * Bt[off]).sum() / (n * (n - 3))


def ref_remove_pcs(x: np.ndarray, k: int) -> np.ndarray:
    """Xc − Xc W_k W_kᵀ, W_k the first k right singular vectors of the centred X."""
    xc = centre(x)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    w = vt[:k].T
    return xc - xc @ w @ w.T


def ref_rdm_corr(x: np.ndarray, y: np.ndarray, how: str) -> float:
    iu = np.triu_indices(len(x), 1)
    dx, dy = ref_dist(x)[iu], ref_dist(y)[iu]
    if how == "spearman":
        return float(scipy.stats.spearmanr(dx, dy).statistic)
    return float(np.corrcoef(dx, dy)[0, 1])


def ref_bures(x: np.ndarray, y: np.ndarray) -> float:
    """Normalised Bures similarity ‖Xcᵀ Yc‖_* / (‖Xc‖_F ‖Yc‖_F)."""
    xc, yc = centre(x), centre(y)
    nuclear = np.linalg.svd(xc.T @ yc, compute_uv=False).sum()
    return nuclear / (np.linalg.norm(xc) * np.linalg.norm(yc))


def psd_sqrt(M: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((M + M.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def ref_bures_gram_form(x: np.ndarray, y: np.ndarray) -> float:
    """tr((K^{1/2} L K^{1/2})^{1/2}) / sqrt(tr K tr L), K = Xc Xcᵀ, L = Yc Ycᵀ."""
    xc, yc = centre(x), centre(y)
    K, L = xc @ xc.T, yc @ yc.T
    Kh = psd_sqrt(K)
    return np.trace(psd_sqrt(Kh @ L @ Kh)) / np.sqrt(np.trace(K) * np.trace(L))


def ratio_of_means(stat, xs, ys) -> float:
    """Σ_i s(X_i, Y_i) / sqrt(Σ_i s(X_i, X_i) · Σ_i s(Y_i, Y_i)) (Nguyen et al. 2021)."""
    xs, ys = [flat(x) for x in xs], [flat(y) for y in ys]
    kl = sum(stat(x, y) for x, y in zip(xs, ys, strict=True))
    kk = sum(stat(x, x) for x in xs)
    ll = sum(stat(y, y) for y in ys)
    return float(kl / np.sqrt(kk * ll))


def mean_over_batches(stat, xs, ys) -> float:
    return float(np.mean([stat(flat(x), flat(y)) for x, y in zip(xs, ys, strict=True)]))


def reference(xs, ys, measure: str, o: MeasureOptions | None = None) -> float:
    o = o or MeasureOptions()
    lin = lambda x, y: ref_hsic1(x @ x.T, y @ y.T)
    if measure == "linear_cka":
        return ratio_of_means(lin, xs, ys)
    if measure == "linear_cka_biased":
        return ratio_of_means(lambda x, y: ref_hsic0(x @ x.T, y @ y.T), xs, ys)
    if measure == "rbf_cka":
        stat = lambda x, y: ref_hsic1(
            ref_rbf_kernel(x, o.rbf_sigma), ref_rbf_kernel(y, o.rbf_sigma)
        )
        return ratio_of_means(stat, xs, ys)
    if measure == "dcor":
        return ratio_of_means(ref_dcov2_u, xs, ys)
    if measure == "rsa":
        return mean_over_batches(lambda x, y: ref_rdm_corr(x, y, o.rsa_correlation), xs, ys)
    if measure == "linear_cka_minus_pc":
        k = o.pcs_removed
        return ratio_of_means(lambda x, y: lin(ref_remove_pcs(x, k), ref_remove_pcs(y, k)), xs, ys)
    if measure == "bures":
        return mean_over_batches(ref_bures, xs, ys)
    raise KeyError(measure)


# ----------------------------------------------------------------------------- data
SIZES = (20, 17, 24)  # distinct-pair counts 190, 136, 276: all even, so the median is a mean of two


def make_taps(seed: int, sizes=SIZES, dtype=np.float64):
    """Two 'models' of three taps each, shapes (n, 5), (n, 3, 4), (n, 30), all driven by one latent per image
    so every pair is clearly related (no value near 0)."""
    r = np.random.default_rng(seed)
    wa = [r.standard_normal((3, p)) for p in (5, 12, 30)]
    wb = [r.standard_normal((3, p)) for p in (5, 12, 30)]
    a = {"a5": [], "a3x4": [], "a30": []}
    b = {"b5": [], "b3x4": [], "b30": []}
    for n in sizes:
        z = r.standard_normal((n, 3))
        noise = lambda p, n=n: 0.7 * r.standard_normal((n, p))
        a["a5"].append(np.tanh(z @ wa[0] + noise(5)))
        a["a3x4"].append((z @ wa[1] + noise(12)).reshape(n, 3, 4))
        a["a30"].append(np.abs(z @ wa[2]) + noise(30) + 2.0)
        b["b5"].append((z**2) @ wb[0] + noise(5))
        b["b3x4"].append(np.maximum(z @ wb[1] + noise(12), 0).reshape(n, 3, 4))
        b["b30"].append(z @ wb[2] + 1.5 * noise(30))
    cast = lambda d: {k: [v.astype(dtype) for v in vs] for k, vs in d.items()}
    return cast(a), cast(b)


def related_pair(seed: int, sizes=SIZES, p=(8, 6)):
    r = np.random.default_rng(seed)
    xs, ys = [], []
    for n in sizes:
        z = r.standard_normal((n, 3))
        xs.append(z @ r.standard_normal((3, p[0])) + 0.5 * r.standard_normal((n, p[0])))
        ys.append(np.tanh(z @ r.standard_normal((3, p[1]))) + 0.5 * r.standard_normal((n, p[1])))
    return xs, ys


# ----------------------------------------------------------------------------- the references themselves
def test_reference_sanity():
    """Cross-checks of the references by second routes, so agreement below means the formulas, not a shared bug."""
    r = np.random.default_rng(0)
    x = r.standard_normal((15, 6))
    y = np.tanh(x[:, :4] @ r.standard_normal((4, 9))) + 0.3 * r.standard_normal((15, 9))
    # biased linear CKA of one minibatch = Kornblith's ‖XcᵀYc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F)
    xc, yc = centre(x), centre(y)
    kornblith = np.linalg.norm(xc.T @ yc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert reference([x], [y], "linear_cka_biased") == pytest.approx(kornblith, rel=1e-12)
    # Bures: nuclear-norm form = Gram (fidelity) form
    assert ref_bures(x, y) == pytest.approx(ref_bures_gram_form(x, y), rel=1e-6)
    assert ref_bures(x, y) == pytest.approx(ref_bures_gram_form(y, x), rel=1e-6)
    # dCov²_u = HSIC₁ of the distance-induced kernels −A, −B (Sejdinovic et al. 2013), via Song's eq. 5
    assert ref_dcov2_u(x, y) == pytest.approx(ref_hsic1(-ref_dist(x), -ref_dist(y)), rel=1e-10)
    # removing k PCs leaves a centred matrix of rank p − k, orthogonal to the removed directions
    xr = ref_remove_pcs(x, 2)
    assert np.linalg.matrix_rank(xr) == 4 and np.allclose(xr.mean(0), 0, atol=1e-12)
    # RBF diagonal is 1, and σ = median distance gives exp(−1/2) at the median pair (105 pairs: odd count)
    K = ref_rbf_kernel(x, 1.0)
    np.testing.assert_allclose(np.diag(K), 1.0)
    assert np.isclose(K[np.triu_indices(15, 1)], np.exp(-0.5), rtol=1e-14).sum() == 1
    # Spearman = Pearson of ranks
    iu = np.triu_indices(15, 1)
    dx, dy = ref_dist(x)[iu], ref_dist(y)[iu]
    rho = np.corrcoef(scipy.stats.rankdata(dx), scipy.stats.rankdata(dy))[0, 1]
    assert ref_rdm_corr(x, y, "spearman") == pytest.approx(rho, rel=1e-12)


def test_measures_are_the_specified_ones():
    # mutual_knn and cknna: tests/test_knn_measures.py
    assert tuple(MEASURES) == SPEC_MEASURES + ("mutual_knn", "cknna")


# ----------------------------------------------------------------------------- agreement with references
@pytest.mark.parametrize("measure,opts", VARIANTS, ids=VARIANT_IDS)
def test_similarity_matrix_matches_reference(measure, opts):
    a, b = make_taps(11)
    cross = similarity_matrix(a, b, measure=measure, options=opts)
    assert list(cross.index) == list(a) and list(cross.columns) == list(b)
    want = np.array([[reference(xs, ys, measure, opts) for ys in b.values()] for xs in a.values()])
    np.testing.assert_allclose(cross.to_numpy(), want, rtol=RTOL64, atol=ATOL64)
    assert np.abs(want).max() > 0.1  # the data are related: agreement is not agreement at 0

    self_ = similarity_matrix(a, measure=measure, options=opts)
    assert list(self_.index) == list(a) == list(self_.columns)
    want = np.array([[reference(xs, ys, measure, opts) for ys in a.values()] for xs in a.values()])
    np.testing.assert_allclose(self_.to_numpy(), want, rtol=RTOL64, atol=ATOL64)


@pytest.mark.parametrize("measure,opts", VARIANTS, ids=VARIANT_IDS)
def test_minibatch_similarity_matches_reference(measure, opts):
    xs, ys = related_pair(12)
    got = minibatch_similarity(xs, ys, measure, opts)
    assert isinstance(got, float)
    assert got == pytest.approx(reference(xs, ys, measure, opts), rel=RTOL64, abs=ATOL64)
    # torch float64 tensors give the same
    tx, ty = [torch.from_numpy(x) for x in xs], [torch.from_numpy(y) for y in ys]
    assert minibatch_similarity(tx, ty, measure, opts) == pytest.approx(got, rel=1e-12, abs=1e-14)


def test_default_measure_is_linear_cka_and_options_default():
    a, b = make_taps(13)
    df = similarity_matrix(a, b)
    want = np.array([[reference(xs, ys, "linear_cka") for ys in b.values()] for xs in a.values()])
    np.testing.assert_allclose(df.to_numpy(), want, rtol=RTOL64, atol=ATOL64)
    xs, ys = related_pair(14)
    assert minibatch_similarity(xs, ys, "rbf_cka") == pytest.approx(
        reference(xs, ys, "rbf_cka", MeasureOptions(rbf_sigma=1.0)), rel=RTOL64
    )


@pytest.mark.parametrize("measure", SPEC_MEASURES)
def test_float32_inputs_close_to_float64_reference(measure):
    xs, ys = related_pair(15)
    x32 = [torch.from_numpy(x).float() for x in xs]
    y32 = [y.astype(np.float32) for y in ys]
    # the reference sees exactly the float32 values, in float64
    want = reference([x.double() for x in x32], y32, measure)
    assert minibatch_similarity(x32, y32, measure) == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_options_change_the_values():
    """rbf_sigma, rsa_correlation and pcs_removed are actually used (their references differ clearly)."""
    xs, ys = related_pair(16)
    vals = {
        (m, o): minibatch_similarity(xs, ys, m, o)
        for m, o in VARIANTS
        if m in ("rbf_cka", "rsa", "linear_cka_minus_pc")
    }
    for m in ("rbf_cka", "rsa", "linear_cka_minus_pc"):
        got = [v for (mm, _), v in vals.items() if mm == m]
        assert max(got) - min(got) > 1e-3, (m, got)


def test_rsa_spearman_gives_tied_distances_their_average_rank():
    """Binary features (few distinct distances: 190 pairs, ~7 values) and duplicated images (distance 0):
    Spearman must rank exactly tied distances by their average rank (scipy.stats.rankdata), whatever
    rounding the route to the distances takes."""
    r = np.random.default_rng(31)
    xs = [r.integers(0, 2, (n, 6)).astype(np.float64) for n in SIZES]
    ys = [np.c_[x[:, :3], r.integers(0, 2, (len(x), 3))] for x in xs]
    iu = np.triu_indices(SIZES[0], 1)
    assert len(np.unique(ref_dist(xs[0])[iu])) < 20  # heavily tied
    spearman = reference(xs, ys, "rsa")
    assert (
        abs(spearman - reference(xs, ys, "rsa", MeasureOptions(rsa_correlation="pearson"))) > 0.01
    )
    assert minibatch_similarity(xs, ys, "rsa") == pytest.approx(spearman, rel=RTOL64, abs=ATOL64)
    dup = [np.repeat(r.standard_normal((n // 2, 6)), 2, axis=0) for n in (20, 16, 24)]
    dy = [x @ r.standard_normal((6, 5)) + 0.3 * r.standard_normal((len(x), 5)) for x in dup]
    assert minibatch_similarity(dup, dy, "rsa") == pytest.approx(
        reference(dup, dy, "rsa"), rel=RTOL64
    )


def test_aggregation_over_minibatches_is_the_specified_one():
    """Ratio of means (CKA family, dcor) vs mean of per-batch values (rsa, bures): batches of very different
    scale and dependence make the two aggregations disagree, so the reference agreement pins the choice."""
    r = np.random.default_rng(17)
    xs = [r.standard_normal((16, 6)) * s for s in (1.0, 10.0, 0.2)]
    ys = [
        x @ r.standard_normal((6, 5)) + r.standard_normal((16, 5)) * s
        for x, s in zip(xs, (0.1, 40.0, 0.5), strict=True)
    ]
    for measure in SPEC_MEASURES:
        want = reference(xs, ys, measure)
        per_batch = [reference([x], [y], measure) for x, y in zip(xs, ys, strict=True)]
        got = minibatch_similarity(xs, ys, measure)
        assert got == pytest.approx(want, rel=RTOL64, abs=ATOL64), measure
        if measure in ("rsa", "bures"):
            assert want == pytest.approx(np.mean(per_batch), rel=1e-12)
        else:
            assert abs(want - np.mean(per_batch)) > 1e-3, measure  # the data discriminate


# ----------------------------------------------------------------------------- invariances
def invariance_data(seed: int, sizes=(20,)):
    r = np.random.default_rng(seed)
    xs, ys = [], []
    for n in sizes:
        x = r.standard_normal((n, 7))
        xs.append(x)
        ys.append(np.tanh(x[:, :4] @ r.standard_normal((4, 6))) + 0.4 * r.standard_normal((n, 6)))
    return xs, ys


@pytest.mark.parametrize("sizes", [(20,), (20, 17, 24)], ids=["one", "several"])
@pytest.mark.parametrize("measure,opts", VARIANTS, ids=VARIANT_IDS)
def test_invariances(measure, opts, sizes):
    xs, ys = invariance_data(18, sizes)
    r = np.random.default_rng(19)
    base = minibatch_similarity(xs, ys, measure, opts)
    tol = {"abs": 1e-9}
    qx, _ = np.linalg.qr(r.standard_normal((7, 7)))
    qy, _ = np.linalg.qr(r.standard_normal((6, 6)))
    assert minibatch_similarity(
        [x @ qx for x in xs], [y @ qy for y in ys], measure, opts
    ) == pytest.approx(base, **tol)
    assert minibatch_similarity(
        [7.5 * x for x in xs], [0.01 * y for y in ys], measure, opts
    ) == pytest.approx(base, **tol)
    tx, ty = 3.0 * r.standard_normal(7), -2.0 * r.standard_normal(6)
    assert minibatch_similarity(
        [x + tx for x in xs], [y + ty for y in ys], measure, opts
    ) == pytest.approx(base, **tol)
    perms = [r.permutation(len(x)) for x in xs]
    assert minibatch_similarity(
        [x[p] for x, p in zip(xs, perms, strict=True)],
        [y[p] for y, p in zip(ys, perms, strict=True)],
        measure,
        opts,
    ) == pytest.approx(base, **tol)
    # ... while permuting only one side is a different value (the invariance tests can fail)
    assert (
        abs(
            minibatch_similarity([x[p] for x, p in zip(xs, perms, strict=True)], ys, measure, opts)
            - base
        )
        > 1e-3
    )


@pytest.mark.parametrize("measure,opts", VARIANTS, ids=VARIANT_IDS)
def test_self_similarity_is_one_and_matrix_symmetric(measure, opts):
    a, b = make_taps(20)
    m = similarity_matrix(a, measure=measure, options=opts).to_numpy()
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-10)
    np.testing.assert_allclose(m, m.T, atol=1e-10)
    ab = similarity_matrix(a, b, measure=measure, options=opts).to_numpy()
    ba = similarity_matrix(b, a, measure=measure, options=opts).to_numpy()
    np.testing.assert_allclose(ab, ba.T, rtol=1e-10, atol=1e-12)
    for xs in b.values():
        assert minibatch_similarity(xs, xs, measure, opts) == pytest.approx(1.0, abs=1e-10)


def test_rbf_cka_not_invariant_to_anisotropic_scaling():
    """One feature ×10 changes the distances' geometry, so RBF CKA changes (linear CKA changes too, but the
    point is the invariance tests above could fail for RBF)."""
    xs, ys = invariance_data(21, (20, 17, 24))
    d = np.ones(7)
    d[0] = 10.0
    base = minibatch_similarity(xs, ys, "rbf_cka")
    scaled = minibatch_similarity([x * d for x in xs], ys, "rbf_cka")
    assert scaled == pytest.approx(reference([x * d for x in xs], ys, "rbf_cka"), rel=RTOL64)
    assert abs(scaled - base) > 0.02


# ----------------------------------------------------------------------------- independence
def test_independent_high_dimensional_gaussians():
    """n = 20 per minibatch, p = 500, 5 minibatches: the biased estimator is far from 0 for independent X, Y
    (Xc Xcᵀ ≈ p·H dominates), the unbiased linear CKA and the bias-corrected dcor are near 0; a dependent
    pair (Y = X Q + small noise) is near 1 for every measure."""
    r = np.random.default_rng(22)
    n, p, k = 20, 500, 5
    xs = [r.standard_normal((n, p)) for _ in range(k)]
    ys = [r.standard_normal((n, p)) for _ in range(k)]
    biased = minibatch_similarity(xs, ys, "linear_cka_biased")
    assert biased == pytest.approx(reference(xs, ys, "linear_cka_biased"), rel=RTOL64)
    assert biased > 0.8
    for m in ("linear_cka", "dcor"):
        v = minibatch_similarity(xs, ys, m)
        assert v == pytest.approx(reference(xs, ys, m), rel=RTOL64, abs=ATOL64), m
        assert abs(v) < 0.1, (m, v)
    q, _ = np.linalg.qr(r.standard_normal((p, p)))
    dep = [x @ q + 0.05 * r.standard_normal((n, p)) for x in xs]
    for m in SPEC_MEASURES:
        assert minibatch_similarity(xs, dep, m) > 0.95, m


# ----------------------------------------------------------------------------- linear CKA minus top PCs
def test_minus_pc_removes_a_shared_dominant_direction():
    """X and Y share one dominant image direction u (s·u aᵀ, s·u bᵀ) over independent noise: linear CKA is
    high, with the top principal direction removed from each it is near 0."""
    r = np.random.default_rng(23)
    xs, ys = [], []
    for n in SIZES:
        u = r.standard_normal((n, 1))
        xs.append(8.0 * u @ r.standard_normal((1, 12)) + r.standard_normal((n, 12)))
        ys.append(8.0 * u @ r.standard_normal((1, 9)) + r.standard_normal((n, 9)))
    lin = minibatch_similarity(xs, ys, "linear_cka")
    minus = minibatch_similarity(xs, ys, "linear_cka_minus_pc", MeasureOptions(pcs_removed=1))
    assert minus == pytest.approx(
        reference(xs, ys, "linear_cka_minus_pc", MeasureOptions(pcs_removed=1)),
        rel=RTOL64,
        abs=ATOL64,
    )
    assert lin > 0.9
    assert abs(minus) < 0.2 and lin - minus > 0.7


@pytest.mark.parametrize("k", [0, -1])
def test_minus_pc_needs_at_least_one_component(k):
    xs, ys = related_pair(24)
    with pytest.raises(ValueError, match="pcs_removed"):
        minibatch_similarity(xs, ys, "linear_cka_minus_pc", MeasureOptions(pcs_removed=k))


# ----------------------------------------------------------------------------- Bures
def test_bures_properties():
    r = np.random.default_rng(25)
    xs = [r.standard_normal((n, 6)) for n in SIZES]
    q, _ = np.linalg.qr(r.standard_normal((6, 6)))
    assert minibatch_similarity(xs, [x @ q for x in xs], "bures") == pytest.approx(1.0, abs=1e-10)
    assert minibatch_similarity(xs, [-3.0 * x for x in xs], "bures") == pytest.approx(
        1.0, abs=1e-10
    )
    assert minibatch_similarity(xs, [0.25 * x for x in xs], "bures") == pytest.approx(
        1.0, abs=1e-10
    )
    for seed in range(3):
        rr = np.random.default_rng(100 + seed)
        ys = [
            np.tanh(x[:, :2] @ rr.standard_normal((2, 4))) + rr.standard_normal((len(x), 4))
            for x in xs
        ]
        v, w = minibatch_similarity(xs, ys, "bures"), minibatch_similarity(ys, xs, "bures")
        assert 0.0 <= v <= 1.0
        assert v == pytest.approx(w, rel=1e-10)
        assert v < 0.99
    # independent noise is not 1 either
    zs = [r.standard_normal((len(x), 6)) for x in xs]
    assert 0.0 <= minibatch_similarity(xs, zs, "bures") < 0.9


# ----------------------------------------------------------------------------- errors and edge cases
def test_unknown_measure_names_the_valid_ones():
    xs, ys = related_pair(26)
    with pytest.raises(ValueError) as e:
        minibatch_similarity(xs, ys, "cka_rbf")
    for m in SPEC_MEASURES:
        assert m in str(e.value)
    with pytest.raises(ValueError, match="linear_cka_biased"):
        similarity_matrix({"x": xs}, {"y": ys}, measure="nope")


@pytest.mark.parametrize("measure", SPEC_MEASURES)
def test_short_minibatches_are_dropped_with_warning(measure):
    """As cka_matrix: a minibatch of n < 4 (HSIC₁'s n(n−3)) is dropped with a warning, for every measure."""
    xs, ys = related_pair(27, sizes=(16, 18, 3))
    with pytest.warns(UserWarning, match=r"dropped minibatches \[2\]"):
        df = similarity_matrix({"x": xs}, {"y": ys}, measure=measure)
    assert df.iloc[0, 0] == pytest.approx(
        reference(xs[:2], ys[:2], measure), rel=RTOL64, abs=ATOL64
    )
    with pytest.warns(UserWarning, match=r"dropped minibatches \[2\]"):
        v = minibatch_similarity(xs, ys, measure)
    assert v == pytest.approx(df.iloc[0, 0], rel=1e-12)


@pytest.mark.parametrize("measure", SPEC_MEASURES)
def test_only_short_minibatches_raise_without_a_constant_warning(measure):
    """Nothing left to compute is an error (as cka_matrix), not a 'constant representation' (no tap is)."""
    xs, ys = related_pair(27, sizes=(3, 2))
    with pytest.warns(UserWarning) as record, pytest.raises(ValueError, match="at least 4"):
        minibatch_similarity(xs, ys, measure)
    assert any("dropped minibatches [0, 1]" in str(w.message) for w in record)
    assert not [
        str(w.message) for w in record if issubclass(w.category, ConstantRepresentationWarning)
    ]


@pytest.mark.parametrize("measure", SPEC_MEASURES)
def test_constant_tap_is_reported_as_zero_not_nan(measure):
    xs, _ = related_pair(28)
    taps = {
        "x": xs,
        "const": [np.full_like(x, 3.0) for x in xs],
        "zero": [np.zeros_like(x) for x in xs],
    }
    with pytest.warns(ConstantRepresentationWarning, match="const"):
        df = similarity_matrix(taps, measure=measure)
    assert not df.isna().any().any()
    assert df.loc["const", "x"] == 0.0 and df.loc["x", "zero"] == 0.0
    assert df.loc["x", "x"] == pytest.approx(1.0, abs=1e-10)


def test_minus_pc_rank_k_representation_is_constant_after_removal():
    """A tap of rank ≤ k has nothing left once its top k directions are removed: constant, reported 0."""
    r = np.random.default_rng(29)
    xs, ys = related_pair(30)
    rank1 = [r.standard_normal((len(x), 1)) @ r.standard_normal((1, 7)) + 5.0 for x in xs]
    with pytest.warns(ConstantRepresentationWarning, match="rank1"):
        df = similarity_matrix({"rank1": rank1, "x": xs}, {"y": ys}, measure="linear_cka_minus_pc")
    assert df.loc["rank1", "y"] == 0.0
    assert df.loc["x", "y"] == pytest.approx(reference(xs, ys, "linear_cka_minus_pc"), rel=RTOL64)


def test_float32_low_rank_tap_is_constant_once_its_directions_are_removed():
    """A rank-1 tap stored as a float32 Gram leaves ~1e-8·λ_max of rounding in its other directions: below the
    numerical rank, so the tap is constant after removing 1 PC (0 and a warning), not a CKA of noise."""
    r = np.random.default_rng(7)
    x = np.outer(r.normal(size=20), r.normal(size=30)).astype(np.float32)
    y = r.normal(size=(20, 8)).astype(np.float32)
    with pytest.warns(ConstantRepresentationWarning):
        v = similarity_matrix({"x": [x]}, {"y": [y]}, "linear_cka_minus_pc")
    assert v.iloc[0, 0] == 0.0


@pytest.mark.parametrize("correlation", ["spearman", "pearson"])
def test_rsa_of_equidistant_images_is_flagged_constant(correlation):
    """One-hot images are all √2 apart: the RDM has one value and no correlation (0 and a warning)."""
    x = np.eye(12) * 3.0
    y = np.random.default_rng(8).normal(size=(12, 5))
    with pytest.warns(ConstantRepresentationWarning):
        v = similarity_matrix(
            {"x": [x]}, {"y": [y]}, "rsa", MeasureOptions(rsa_correlation=correlation)
        )
    assert v.iloc[0, 0] == 0.0
