"""mutual_knn and cknna (Huh et al. 2024, seelike.similarity.KnnAccumulator) against independent float64 references
written from the definitions on the raw features (centred per minibatch, cosines / distances, neighbours by
loops), a direct numpy port of Huh et al.'s code, then invariances, the permutation null, the jackknife SE and
the errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_similarity import make_taps as make_related_taps

from seelike.cka import ConstantRepresentationWarning, gram
from seelike.similarity import (
    MeasureOptions,
    knn_indices,
    make_accumulator,
    minibatch_similarity,
    similarity_matrix,
)

KNN = ("mutual_knn", "cknna")
OPTIONS = [
    MeasureOptions(),
    MeasureOptions(knn_k=3),
    MeasureOptions(knn_k=4, knn_metric="euclidean"),
    MeasureOptions(knn_metric="euclidean"),
]
OPTION_IDS = [f"k{o.knn_k}-{o.knn_metric}" for o in OPTIONS]
SIZES = (24, 19, 30)
TOL = 1e-10


# ----------------------------------------------------------------------------- independent references
def flat(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.astype(np.float64).reshape(len(x), -1)


def ref_cosine(x: np.ndarray) -> np.ndarray:
    """Cosines of the minibatch-centred features, from the features (not from a Gram)."""
    xc = flat(x) - flat(x).mean(0)
    unit = xc / np.linalg.norm(xc, axis=1, keepdims=True)
    return unit @ unit.T


def ref_scores(x: np.ndarray, metric: str) -> np.ndarray:
    """Larger = nearer: cosines, or minus the squared Euclidean distances (centring changes none of them)."""
    if metric == "cosine":
        return ref_cosine(x)
    x = flat(x)
    return -(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def ref_mask(s: np.ndarray, k: int) -> np.ndarray:
    """mask[i, j] = 1 if j is among the k nearest neighbours of i (itself excluded; ties: lower index first)."""
    n = len(s)
    m = np.zeros((n, n))
    for i in range(n):
        others = np.delete(np.arange(n), i)
        order = others[np.lexsort((others, -s[i, others]))]  # by −score, then index
        m[i, order[:k]] = 1.0
    return m


def kth_gap(s: np.ndarray, k: int) -> float:
    """Smallest gap between the k-th and (k+1)-th largest score of a row: the data must have no near ties."""
    n = len(s)
    rows = [np.sort(np.delete(s[i], i))[::-1] for i in range(n)]
    return min(r[k - 1] - r[k] for r in rows)


def ref_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5 as Huh et al. write it (no symmetry assumed):
    [Σ(K̃ ⊙ L̃ᵀ) + ΣK̃ ΣL̃/((m−1)(m−2)) − 2 Σ(K̃ L̃)/(m−2)] / (m(m−3))."""
    m = len(K)
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    t1 = (Kt * Lt.T).sum()
    t2 = Kt.sum() * Lt.sum() / ((m - 1) * (m - 2))
    t3 = 2.0 * (Kt @ Lt).sum() / (m - 2)
    return (t1 + t2 - t3) / (m * (m - 3))


def ref_mutual_knn(x, y, o: MeasureOptions) -> float:
    """mean_i |N_A(i) ∩ N_B(i)| / k."""
    ma = ref_mask(ref_scores(x, o.knn_metric), o.knn_k)
    mb = ref_mask(ref_scores(y, o.knn_metric), o.knn_k)
    return float(np.mean([(ma[i] * mb[i]).sum() / o.knn_k for i in range(len(ma))]))


def ref_cknna(x, y, o: MeasureOptions) -> float:
    """sim(K, L) / sqrt(sim(K, K) sim(L, L)), sim = HSIC_unbiased of the cosine kernels masked by both
    neighbour masks (neighbours under knn_metric, kernel values cosines either way)."""
    K, L = ref_cosine(x), ref_cosine(y)
    ma = ref_mask(ref_scores(x, o.knn_metric), o.knn_k)
    mb = ref_mask(ref_scores(y, o.knn_metric), o.knn_k)

    def sim(m1, m2, A, B):
        return ref_hsic_unbiased(m1 * m2 * A, m1 * m2 * B)

    return sim(ma, mb, K, L) / np.sqrt(sim(ma, ma, K, K) * sim(mb, mb, L, L))


REF = {"mutual_knn": ref_mutual_knn, "cknna": ref_cknna}


def reference(xs, ys, measure: str, o: MeasureOptions | None = None) -> float:
    """Mean over minibatches of the per-minibatch value."""
    o = o or MeasureOptions()
    return float(np.mean([REF[measure](x, y, o) for x, y in zip(xs, ys, strict=True)]))


# ----------------------------------------------------------------------------- Huh et al.'s code, in numpy
def huh_normalize(f: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize(f, p=2, dim=-1)."""
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def huh_mutual_knn(fa: np.ndarray, fb: np.ndarray, topk: int) -> float:
    def nn(f):
        s = f @ f.T
        np.fill_diagonal(s, -1e8)
        return np.argsort(-s, axis=1, kind="stable")[:, :topk]

    ka, kb = nn(fa), nn(fb)
    n = len(ka)
    ma, mb = np.zeros((n, n)), np.zeros((n, n))
    ma[np.arange(n)[:, None], ka] = 1.0
    mb[np.arange(n)[:, None], kb] = 1.0
    return float(((ma * mb).sum(1) / topk).mean())


def huh_cknna(fa: np.ndarray, fb: np.ndarray, topk: int, eps: float = 0.0) -> float:
    """Their `cknna(..., distance_agnostic=False, unbiased=True)`; they add eps = 1e-6 to the denominator."""
    n = len(fa)
    K, L = fa @ fa.T, fb @ fb.T

    def similarity(K, L):
        kh, lh = K.copy(), L.copy()
        np.fill_diagonal(kh, -np.inf)
        np.fill_diagonal(lh, -np.inf)
        mk, ml = np.zeros((n, n)), np.zeros((n, n))
        np.put_along_axis(mk, np.argsort(-kh, axis=1, kind="stable")[:, :topk], 1.0, axis=1)
        np.put_along_axis(ml, np.argsort(-lh, axis=1, kind="stable")[:, :topk], 1.0, axis=1)
        mask = mk * ml
        return ref_hsic_unbiased(mask * K, mask * L)

    return similarity(K, L) / (np.sqrt(similarity(K, K) * similarity(L, L)) + eps)


# ----------------------------------------------------------------------------- data
def make_taps(seed: int, sizes=SIZES):
    """Two 'models' of three taps each, all driven by one latent per image (every pair related): the similarity
    tests' generator at this file's minibatch sizes."""
    return make_related_taps(seed, sizes=sizes)


def related_pair(seed: int, sizes=SIZES, p=(8, 6)):
    r = np.random.default_rng(seed)
    xs, ys = [], []
    for n in sizes:
        z = r.standard_normal((n, 3))
        xs.append(z @ r.standard_normal((3, p[0])) + 0.5 * r.standard_normal((n, p[0])))
        ys.append(np.tanh(z @ r.standard_normal((3, p[1]))) + 0.5 * r.standard_normal((n, p[1])))
    return xs, ys


def assert_tie_free(batches, o: MeasureOptions) -> None:
    for x in batches:
        assert kth_gap(ref_scores(x, o.knn_metric), o.knn_k) > 1e-8


# ----------------------------------------------------------------------------- the references themselves
def test_reference_sanity():
    """The references by second routes: masks = argsort, identical representations give 1, cknna's HSIC of a
    symmetric pair = the U-centring form (seelike.cka.hsic1, another implementation)."""
    from seelike.cka import hsic1

    xs, ys = related_pair(1, sizes=(20,))
    x, y = xs[0], ys[0]
    s = ref_scores(x, "cosine")
    np.fill_diagonal(s, -np.inf)
    want = np.zeros_like(s)
    np.put_along_axis(want, np.argsort(-s, axis=1)[:, :5], 1.0, axis=1)
    np.testing.assert_array_equal(ref_mask(ref_scores(x, "cosine"), 5), want)
    o = MeasureOptions(knn_k=5)
    assert ref_mutual_knn(x, x, o) == 1.0 and ref_cknna(x, x, o) == pytest.approx(1.0, abs=1e-12)
    K, L = ref_cosine(x), ref_cosine(y)
    assert ref_hsic_unbiased(K, L) == pytest.approx(hsic1(K, L), rel=1e-10)
    # independent of the data's scale and of a shared offset: the references centre
    assert ref_cknna(3 * x + 5, y, o) == pytest.approx(ref_cknna(x, y, o), abs=1e-12)


# ----------------------------------------------------------------------------- agreement with references
@pytest.mark.parametrize("o", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("measure", KNN)
def test_similarity_matrix_matches_reference(measure, o):
    a, b = make_taps(11)
    for taps in (a, b):
        for xs in taps.values():
            assert_tie_free(xs, o)
    cross = similarity_matrix(a, b, measure=measure, options=o)
    assert list(cross.index) == list(a) and list(cross.columns) == list(b)
    want = np.array([[reference(xs, ys, measure, o) for ys in b.values()] for xs in a.values()])
    np.testing.assert_allclose(cross.to_numpy(), want, rtol=0, atol=TOL)
    assert want.min() > 0.1  # related: agreement is not agreement at 0
    self_ = similarity_matrix(a, measure=measure, options=o)
    want = np.array([[reference(xs, ys, measure, o) for ys in a.values()] for xs in a.values()])
    np.testing.assert_allclose(self_.to_numpy(), want, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.diag(self_.to_numpy()), 1.0, atol=TOL)


def test_mean_over_minibatches_and_options_are_used():
    """The value is the mean of the per-minibatch values; k and the metric change it; the default options are
    k = 10, cosine; torch float64 inputs give the same."""
    xs, ys = related_pair(12)
    for measure in KNN:
        per_batch = [REF[measure](x, y, MeasureOptions()) for x, y in zip(xs, ys, strict=True)]
        got = minibatch_similarity(xs, ys, measure)
        assert got == pytest.approx(np.mean(per_batch), abs=TOL)
        assert np.ptp(per_batch) > 0.01  # the minibatches differ: the mean is a real mean
        tx, ty = [torch.from_numpy(x) for x in xs], [torch.from_numpy(y) for y in ys]
        assert minibatch_similarity(tx, ty, measure) == pytest.approx(got, abs=1e-14)
        vals = [minibatch_similarity(xs, ys, measure, o) for o in OPTIONS]
        assert min(abs(v - w) for i, v in enumerate(vals) for w in vals[:i]) > 1e-3, vals


def test_jackknife_se_is_the_sd_of_the_minibatch_values_over_root_k():
    xs, ys = related_pair(13, sizes=(20, 18, 22, 25))
    o = MeasureOptions(knn_k=4)
    for measure in KNN:
        acc = make_accumulator(measure, 1, 1, o)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            acc.add(gram(x)[None], gram(y)[None], batch_id=i)
        per_batch = [REF[measure](x, y, o) for x, y in zip(xs, ys, strict=True)]
        assert acc.result()[0, 0] == pytest.approx(np.mean(per_batch), abs=TOL)
        want = np.std(per_batch, ddof=1) / np.sqrt(len(per_batch))
        assert acc.jackknife_se()[0, 0] == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------------- Huh et al.'s definition
@pytest.mark.parametrize("k", [3, 10])
def test_equals_huh_et_al_on_features_with_zero_minibatch_mean(k):
    """For features already centred over the minibatch, the values are those of a direct port of Huh et al.'s
    `mutual_knn` and `cknna` (normalise, top-k, hsic_unbiased), except their +1e-6 in cknna's denominator.
    Uncentred features (a shared offset, as post-ReLU features carry) change theirs, not ours."""
    xs, ys = related_pair(14, sizes=(30,), p=(16, 12))
    x, y = xs[0] - xs[0].mean(0), ys[0] - ys[0].mean(0)
    o = MeasureOptions(knn_k=k)
    fa, fb = huh_normalize(x), huh_normalize(y)
    assert minibatch_similarity([x], [y], "mutual_knn", o) == pytest.approx(
        huh_mutual_knn(fa, fb, k), abs=TOL
    )
    ours = minibatch_similarity([x], [y], "cknna", o)
    assert ours == pytest.approx(huh_cknna(fa, fb, k), abs=TOL)
    assert ours == pytest.approx(huh_cknna(fa, fb, k, eps=1e-6), rel=1e-4)
    # a large shared offset: all uncentred cosines near 1, their neighbour sets decided by what is left
    off_x, off_y = x + 4.0 * np.abs(x).max(), y + 4.0 * np.abs(y).max()
    assert minibatch_similarity([off_x], [off_y], "cknna", o) == pytest.approx(ours, abs=TOL)
    theirs = huh_cknna(huh_normalize(off_x), huh_normalize(off_y), k)
    assert abs(theirs - ours) > 1e-3


# ----------------------------------------------------------------------------- invariances and symmetry
@pytest.mark.parametrize("o", OPTIONS[1:3], ids=OPTION_IDS[1:3])
@pytest.mark.parametrize("measure", KNN)
def test_invariances(measure, o):
    """Orthogonal maps, isotropic scaling, a shared offset and a joint image permutation leave both unchanged;
    permuting one side's images does not."""
    xs, ys = related_pair(15)
    r = np.random.default_rng(16)
    base = minibatch_similarity(xs, ys, measure, o)
    qx, _ = np.linalg.qr(r.standard_normal((8, 8)))
    qy, _ = np.linalg.qr(r.standard_normal((6, 6)))
    edits = [
        ([x @ qx for x in xs], [y @ qy for y in ys]),
        ([7.5 * x for x in xs], [0.01 * y for y in ys]),
        ([x + 3.0 for x in xs], [y - 2.0 * r.standard_normal(6) for y in ys]),
    ]
    perms = [r.permutation(len(x)) for x in xs]
    edits.append(
        (
            [x[p] for x, p in zip(xs, perms, strict=True)],
            [y[p] for y, p in zip(ys, perms, strict=True)],
        )
    )
    for ex, ey in edits:
        assert minibatch_similarity(ex, ey, measure, o) == pytest.approx(base, abs=1e-10)
    one_side = [x[p] for x, p in zip(xs, perms, strict=True)]
    assert abs(minibatch_similarity(one_side, ys, measure, o) - base) > 0.05


def test_symmetry_in_the_two_models():
    """mutual_knn(A, B) = mutual_knn(B, A). cknna is Huh et al.'s, which is not exactly symmetric: its mask is,
    but the Σ(K̃L̃) term of HSIC_unbiased differs from Σ(L̃K̃) for the asymmetric masked kernels; each order
    matches the reference in that order, and the two differ by little."""
    a, b = make_taps(17)
    o = MeasureOptions(knn_k=4)
    ab = similarity_matrix(a, b, "mutual_knn", o).to_numpy()
    np.testing.assert_allclose(
        ab, similarity_matrix(b, a, "mutual_knn", o).to_numpy().T, atol=1e-15
    )
    ab = similarity_matrix(a, b, "cknna", o).to_numpy()
    ba = similarity_matrix(b, a, "cknna", o).to_numpy()
    want_ba = np.array([[reference(ys, xs, "cknna", o) for xs in a.values()] for ys in b.values()])
    np.testing.assert_allclose(ba, want_ba, atol=TOL)
    assert 0 < np.abs(ab - ba.T).max() < 0.05


# ----------------------------------------------------------------------------- permutation null
def stacked_grams(taps: dict, i: int) -> torch.Tensor:
    return torch.stack([gram(v[i]) for v in taps.values()])


def run(measure, a, b, o, permutations=0, seed=0):
    acc = make_accumulator(measure, len(a), len(b), o, permutations=permutations, seed=seed)
    for i in range(len(next(iter(a.values())))):
        acc.add(stacked_grams(a, i), stacked_grams(b, i), batch_id=i)
    return acc


def p_values(value: np.ndarray, null: np.ndarray) -> np.ndarray:
    return (1 + (null >= value[None]).sum(0)) / (len(null) + 1)


def test_null_is_the_statistic_of_the_permuted_second_model():
    """Null draw p is the measure with the second model's images permuted within each minibatch by
    default_rng([seed, minibatch]).permutation(n), drawn in order (as rsa and CKA)."""
    a, b = make_taps(18, sizes=(20, 16))
    o = MeasureOptions(knn_k=4)
    for measure in KNN:
        acc = run(measure, a, b, o, permutations=3, seed=5)
        null = acc.null()
        rngs = [np.random.default_rng([5, i]) for i in range(2)]
        perms = [[rng.permutation(len(b["b5"][i])) for _ in range(3)] for i, rng in enumerate(rngs)]
        for p in range(3):
            permuted = {t: [v[i][perms[i][p]] for i in range(2)] for t, v in b.items()}
            want = [
                [reference(xs, ys, measure, o) for ys in permuted.values()] for xs in a.values()
            ]
            np.testing.assert_allclose(null[p], want, atol=TOL, err_msg=measure)


def test_null_of_independent_representations():
    """Independent random taps: the observed mutual_knn and its null both centre on the chance overlap
    k/(n−1), cknna's observed and null means agree, and the p-values are not systematically small; a related
    pair is far above its null."""
    r = np.random.default_rng(19)
    n, k, sizes = 40, 5, (40, 40, 40)
    a = {f"a{t}": [r.standard_normal((n, 10)) for _ in sizes] for t in range(5)}
    b = {f"b{t}": [r.standard_normal((n, 12)) for _ in sizes] for t in range(5)}
    o = MeasureOptions(knn_k=k)
    for measure in KNN:
        acc = run(measure, a, b, o, permutations=40, seed=3)
        value, null = acc.result(), acc.null()
        if measure == "mutual_knn":
            chance = k / (n - 1)
            assert value.mean() == pytest.approx(chance, abs=0.02)
            assert null.mean() == pytest.approx(chance, abs=0.005)
        else:
            assert abs(value.mean() - null.mean()) < 0.03
        p = p_values(value, null)
        assert (p < 0.05).mean() <= 0.2 and 0.3 < p.mean() < 0.8, (measure, p)
    xs, ys = related_pair(20, sizes=sizes)
    for measure in KNN:
        acc = run(measure, {"x": xs}, {"y": ys}, o, permutations=20, seed=3)
        assert acc.result()[0, 0] > acc.null().max() + 0.1


# ----------------------------------------------------------------------------- ties, constants, errors
def test_ties_are_broken_towards_the_lower_index():
    s = torch.tensor(
        [
            [-np.inf, 0.5, 0.5, 0.9, 0.5, 0.1],
            [0.2, -np.inf, 0.2, 0.2, 0.2, 0.2],
            [0.3, 0.7, -np.inf, 0.7, 0.7, 0.7],
        ],
        dtype=torch.float64,
    )[None]
    got = knn_indices(s, 3)[0].tolist()
    assert got == [[1, 2, 3], [0, 2, 3], [1, 3, 4]]
    assert knn_indices(s, 1)[0].tolist() == [[3], [0], [1]]


@pytest.mark.parametrize("measure", KNN)
def test_constant_tap_is_reported_as_zero_not_nan(measure):
    xs, _ = related_pair(21)
    taps = {
        "x": xs,
        "const": [np.full_like(x, 3.0) for x in xs],
        "zero": [np.zeros_like(x) for x in xs],
    }
    with pytest.warns(ConstantRepresentationWarning, match="const"):
        df = similarity_matrix(taps, measure=measure)
    assert not df.isna().any().any()
    assert (
        df.loc["const", "x"] == 0.0 and df.loc["x", "zero"] == 0.0 and df.loc["zero", "zero"] == 0.0
    )
    assert df.loc["x", "x"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("measure", KNN)
def test_knn_k_must_leave_an_image_out(measure):
    xs, ys = related_pair(22, sizes=(12, 12))
    assert minibatch_similarity(xs, ys, measure, MeasureOptions(knn_k=10)) > 0
    with pytest.raises(ValueError, match="cka.knn_k is 11") as e:
        minibatch_similarity(xs, ys, measure, MeasureOptions(knn_k=11))
    assert "lower cka.knn_k to at most 10" in str(e.value)


@pytest.mark.parametrize(
    "kwargs,key",
    [({"knn_k": 0}, "knn_k"), ({"knn_k": 2.5}, "knn_k"), ({"knn_metric": "l1"}, "knn_metric")],
)
def test_bad_options(kwargs, key):
    with pytest.raises(ValueError, match=f"cka.{key}"):
        MeasureOptions(**kwargs)


def test_memory_blocks_give_the_same_values(monkeypatch):
    """Blocks of one tap (tiny dense / gather budgets) give the values of one block of all taps."""
    import seelike.similarity as sim

    a, b = make_taps(23, sizes=(20, 18))
    o = MeasureOptions(knn_k=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = {m: run(m, a, b, o, permutations=2).null() for m in KNN}
        monkeypatch.setattr(sim, "KNN_DENSE_VALUES", 1)
        monkeypatch.setattr(sim, "KNN_GATHER_VALUES", 1)
        for m in KNN:
            np.testing.assert_allclose(run(m, a, b, o, permutations=2).null(), whole[m], atol=1e-14)
