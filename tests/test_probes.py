"""Linear probes: the ridge solver against a float64 lstsq reference, λ selection on a problem whose best λ is
known analytically, k-shot sampling, aggregations, and the streaming feature pass on a tiny timm model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import tiny_resnet, tiny_vit

from seelike.analyses.probes import (
    ProbeDataError,
    aggregate,
    aggregation_names,
    extract_probe_features,
    final_grid,
    normalised_depth,
    probe_sample_plan,
    probe_table,
    token_positions,
)
from seelike.analyses.ridge import (
    DEFAULT_LAMBDAS,
    Standardiser,
    fit_probe,
    heldout_accuracies,
    holdout_split,
    kshot_indices,
    one_hot_pm1,
    pick_lambda,
    ridge_solve,
    select_lambda,
)


# ----------------------------------------------------------------------------- float64 references
def ref_ridge(x: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """Ridge as ordinary least squares on the augmented system [X; √λ I] W = [T; 0] (numpy lstsq, float64)."""
    d = x.shape[1]
    a = np.vstack([x, np.sqrt(lam) * np.eye(d)])
    b = np.vstack([t, np.zeros((d, t.shape[1]))])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def ref_probe_predict(x_fit, y_fit, x_q, lam_per_example):
    """The documented probe written from the formulas: z-score with fit statistics, centre ±1 targets,
    ridge with penalty λ·n via lstsq, add back the mean target, argmax."""
    classes = np.unique(y_fit)
    mu, sd = x_fit.mean(0), x_fit.std(0)
    sd = np.where(sd <= 1e-12 * (1 + np.abs(mu)), 1.0, sd)
    xs = (x_fit - mu) / sd
    t = np.where(y_fit[:, None] == classes[None, :], 1.0, -1.0)
    tm = t.mean(0)
    w = ref_ridge(xs, t - tm, lam_per_example * len(x_fit))
    return classes[np.argmax(((x_q - mu) / sd) @ w + tm, axis=1)]


def _problem(n, d, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.integers(0, c, n)
    return x, y


# ----------------------------------------------------------------------------- solver
@pytest.mark.parametrize("n,d", [(50, 7), (12, 40), (30, 30)])
@pytest.mark.parametrize("lam", [1e-2, 1.0, 37.0])
@pytest.mark.parametrize("form", ["primal", "dual", "auto"])
def test_ridge_matches_lstsq(n, d, lam, form):
    x, y = _problem(n, d, seed=n + d)
    t = one_hot_pm1(y, [0, 1, 2])
    ours = ridge_solve(x, t, lam, form=form)
    ref = ref_ridge(x, t, lam)
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-8)


def test_ridge_primal_equals_dual_and_float32_input():
    x, y = _problem(20, 60, seed=3)
    t = one_hot_pm1(y, [0, 1, 2])
    p = ridge_solve(x, t, 0.5, form="primal")
    d = ridge_solve(torch.from_numpy(x).float(), t, 0.5, form="dual")  # float32 in, float64 solve
    np.testing.assert_allclose(p, d, rtol=1e-5, atol=1e-5)


def test_ridge_rejects_nonpositive_lambda():
    with pytest.raises(ValueError, match="λ must be > 0"):
        ridge_solve(np.ones((3, 2)), np.ones((3, 1)), 0.0)


def test_one_hot_pm1():
    t = one_hot_pm1([2, 0, 2], [0, 1, 2])
    np.testing.assert_array_equal(t, [[-1, -1, 1], [1, -1, -1], [-1, -1, 1]])


def test_standardiser_uses_train_stats_and_keeps_constant_features_zero():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]], dtype=torch.float64)
    s = Standardiser.fit(x)
    np.testing.assert_allclose(s(x).numpy(), [[-1, 0], [1, 0]])
    np.testing.assert_allclose(s(torch.tensor([[5.0, 7.0]], dtype=torch.float64)).numpy(), [[3, 2]])


@pytest.mark.parametrize("n,d", [(40, 6), (15, 50)])
def test_probe_predictions_match_reference(n, d):
    """Standardisation, centring and the λ·n penalty, against the formula-level float64 reference."""
    x, y = _problem(n + 25, d, seed=7)
    x[:, 0] = 4.0  # a constant feature
    x[:, 1] *= 100.0  # badly scaled
    lams = [1e-2, 0.3, 10.0]
    acc = heldout_accuracies(x[:n], y[:n], x[n:], y[n:], lams)
    ref = [np.mean(ref_probe_predict(x[:n], y[:n], x[n:], lam) == y[n:]) for lam in lams]
    np.testing.assert_allclose(acc, ref)
    fit = fit_probe(x[:n], y[:n], x[n:], y[n:], lambdas=[0.3])
    np.testing.assert_array_equal(fit.predictions, ref_probe_predict(x[:n], y[:n], x[n:], 0.3))
    assert fit.form == ("primal" if d <= n else "dual")


# ----------------------------------------------------------------------------- probe behaviour
def _clusters(n_per_class, d, c, seed, sep=8.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)) * sep
    y = np.repeat(np.arange(c), n_per_class)
    return centres[y] + rng.standard_normal((len(y), d)), y


@pytest.mark.parametrize("d", [16, 500])  # primal (d < n) and dual (d > n)
def test_separable_classes_are_recovered(d):
    x_tr, y_tr = _clusters(10, d, 5, seed=1)  # 10-shot, 5 classes
    rng = np.random.default_rng(1)
    centres = np.random.default_rng(1).standard_normal((5, d)) * 8.0
    y_te = rng.integers(0, 5, 400)
    x_te = centres[y_te] + rng.standard_normal((400, d))
    fit = fit_probe(x_tr, y_tr, x_te, y_te)
    assert fit.accuracy == 1.0
    assert fit.form == ("primal" if d <= 50 else "dual")
    assert fit.lam in DEFAULT_LAMBDAS


def test_random_labels_are_at_chance():
    rng = np.random.default_rng(5)
    c, n_te = 10, 3000
    x_tr, y_tr = rng.standard_normal((200, 64)), np.repeat(np.arange(c), 20)
    x_te, y_te = rng.standard_normal((n_te, 64)), rng.integers(0, c, n_te)
    fit = fit_probe(x_tr, y_tr, x_te, y_te)
    # binomial tolerance: 4 standard deviations of the accuracy of a chance classifier
    sigma = np.sqrt(0.1 * 0.9 / n_te)
    assert abs(fit.accuracy - 1 / c) < 4 * sigma


def test_pick_lambda_prefers_larger_on_ties():
    assert pick_lambda([0.1, 1.0, 10.0, 100.0], [0.5, 0.9, 0.9, 0.7]) == 10.0
    assert pick_lambda([0.1, 1.0], [0.8, 0.2]) == 0.1


def _threshold(x_fit, y_fit, lam):
    """1-D, two classes, fit features with mean 0 and variance 1 (standardisation is the identity):
    class 1 is predicted where w·x + t̄ > 0 with w = Σ x t / (Σ x² + λ n), t̄ = mean(t), t = ±1 for class 1."""
    t = np.where(y_fit == 1, 1.0, -1.0)
    n = len(x_fit)
    w = (x_fit @ (t - t.mean())) / (x_fit @ x_fit + lam * n)
    return -t.mean() / w


def test_lambda_selection_picks_known_best():
    """Imbalanced classes: ridge shrinkage moves the decision threshold monotonically with λ, so validation
    points placed between neighbouring thresholds make exactly one grid value the best (known analytically)."""
    raw = np.array([-1.5, -1.0, -0.7, -0.2, 0.3, 0.6, 1.1, 1.4])
    y_fit = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    x_fit = (raw - raw.mean()) / raw.std()
    lams = list(np.logspace(-2, 1, 7))
    thr = np.array([_threshold(x_fit, y_fit, lam) for lam in lams])
    assert np.all(
        np.diff(thr) > 0
    )  # larger λ → more shrinkage → threshold moves away, toward majority
    for k in (1, 3, 5):
        p_lo, p_hi = (thr[k - 1] + thr[k]) / 2, (thr[k] + thr[k + 1]) / 2
        # labels as λ_k classifies them; λ_{k−1} (lower threshold) misses p_lo, λ_{k+1} misses p_hi
        x_val = np.array([p_lo, p_hi])
        y_val = np.array([int(p_lo > thr[k]), int(p_hi > thr[k])])
        assert list(y_val) == [0, 1]  # p_lo under λ_k's threshold, p_hi over it
        acc = heldout_accuracies(x_fit[:, None], y_fit, x_val[:, None], y_val, lams)
        assert acc[k] == 1.0 and np.sum(acc == 1.0) == 1
        assert pick_lambda(lams, acc) == pytest.approx(lams[k])


def test_select_lambda_uses_stratified_heldout_split():
    x, y = _clusters(10, 30, 4, seed=2, sep=0.7)
    lams = [1e-2, 1.0, 100.0]
    lam, acc = select_lambda(x, y, lams, holdout=0.2, seed=3)
    fit_idx, val_idx = holdout_split(y, 0.2, seed=3)
    ref = [
        np.mean(ref_probe_predict(x[fit_idx], y[fit_idx], x[val_idx], v) == y[val_idx])
        for v in lams
    ]
    np.testing.assert_allclose(acc, ref)
    assert lam == pick_lambda(lams, ref)


def test_holdout_split_is_stratified_and_disjoint():
    y = np.repeat(np.arange(4), 10)
    fit, val = holdout_split(y, 0.2, seed=0)
    assert len(set(fit) & set(val)) == 0 and len(fit) + len(val) == 40
    assert np.all(np.bincount(y[val]) == 2)
    with pytest.raises(ProbeDataError, match="≥ 2"):
        holdout_split(np.array([0, 1, 1]), 0.2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        holdout_split(y, 1.0)


# ----------------------------------------------------------------------------- sampling
def test_kshot_exact_seeded_nested():
    y = np.random.default_rng(0).integers(0, 5, 300)
    a = kshot_indices(y, 10, seed=1)
    assert np.all(np.bincount(y[a]) == 10)
    np.testing.assert_array_equal(a, kshot_indices(y, 10, seed=1))
    assert not np.array_equal(a, kshot_indices(y, 10, seed=2))
    assert set(kshot_indices(y, 4, seed=1)) <= set(a)
    with pytest.raises(ProbeDataError, match="lower probes.shots"):
        kshot_indices(y, 1000)


def test_probe_sample_plan():
    rng = np.random.default_rng(0)
    samples = pd.DataFrame(
        {"id": [f"i{i}" for i in range(200)], "label": rng.integers(0, 4, 200),
         "split": ["train"] * 150 + ["test"] * 50}
    )  # fmt: skip
    rows, sets = probe_sample_plan(samples, [2, 5], n_test=20, seed=0)
    assert list(rows["split"]).count("test") == 20 and set(sets) == {"2", "5"}
    assert set(sets["2"]) <= set(sets["5"]) and len(rows) == 20 + 20
    assert np.all(np.bincount(rows["label"].to_numpy()[sets["5"]]) == 5)
    rows_all, sets_all = probe_sample_plan(samples, [5, "all"], n_test=None, seed=0)
    assert len(sets_all["all"]) == 150 and len(rows_all) == 200
    # the 5-shot set is the same images whatever else is configured
    ids5 = set(rows["id"].to_numpy()[sets["5"]])
    assert ids5 == set(rows_all["id"].to_numpy()[sets_all["5"]])
    with pytest.raises(ProbeDataError, match="max_test"):
        probe_sample_plan(samples, [2], n_test=51)


# ----------------------------------------------------------------------------- aggregations
def _tap(layout, grid_hw=None, prefix=0, name="t", index=0):
    from seelike.models.taps import Tap

    return Tap(
        name,
        "block",
        name,
        "output",
        None,
        index,
        layout=layout,
        grid_hw=grid_hw,
        num_prefix_tokens=prefix,
    )


def test_aggregations_tokens():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    tap = _tap("tokens", (2, 2), 1)
    out = aggregate(tap, x)
    assert set(out) == {"cls", "mean_spatial", "mean_all"}
    torch.testing.assert_close(out["cls"], x[:, 0])
    torch.testing.assert_close(out["mean_spatial"], x[:, 1:].mean(1))
    torch.testing.assert_close(out["mean_all"], x.mean(1))
    assert set(aggregate(_tap("tokens", (1, 5), 0), x)) == {"mean_spatial", "mean_all"}
    assert aggregation_names(tap, None) == ["cls", "mean_spatial", "mean_all"]
    torch.testing.assert_close(token_positions(tap, x), x[:, 1:])


def test_aggregations_cnn_pool_to_final_stage():
    x = torch.randn(2, 3, 8, 8)
    tap = _tap("nchw", (8, 8))
    out = aggregate(tap, x, pool_hw=(2, 2))
    # block averages of 4×4 regions, flattened channel-major as torch's flatten(1) of (C, 2, 2)
    ref = x.reshape(2, 3, 2, 4, 2, 4).mean(dim=(3, 5)).reshape(2, 12)
    torch.testing.assert_close(out["pool_final"], ref)
    torch.testing.assert_close(out["mean_spatial"], x.mean(dim=(2, 3)))
    assert "pool_final" not in aggregate(tap, x, pool_hw=(1, 1))  # the same as the global mean
    assert aggregation_names(tap, (2, 2)) == ["pool_final", "mean_spatial"]
    taps = [
        _tap("nchw", name="a", index=0),
        _tap("nchw", name="b", index=1),
        _tap("vector", name="c", index=2),
    ]
    assert final_grid(taps, {"a": (8, 8), "b": (4, 4), "c": None}) == (4, 4)
    torch.testing.assert_close(token_positions(tap, x)[:, 9], x[:, :, 1, 1])


def test_aggregations_per_layout_match_numpy():
    """Each layout against an independent float64 numpy computation: NHWC maps pool and average over their
    (H, W) axes, not over (W, C); tokens drop exactly the tap's prefix; vectors are kept whole."""
    g = torch.Generator().manual_seed(0)
    nhwc = torch.randn(3, 4, 6, 5, generator=g, dtype=torch.float64)  # (B, H, W, C)
    a = nhwc.numpy()
    out = aggregate(_tap("nhwc", (4, 6)), nhwc, pool_hw=(2, 3))
    pooled = a.reshape(3, 2, 2, 3, 2, 5).mean(axis=(2, 4))  # (B, 2, 3, C): 2×2 blocks
    np.testing.assert_allclose(
        out["pool_final"].numpy(), pooled.transpose(0, 3, 1, 2).reshape(3, -1)
    )
    np.testing.assert_allclose(out["mean_spatial"].numpy(), a.mean(axis=(1, 2)))
    nchw = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    same = aggregate(_tap("nchw", (4, 6)), nchw, pool_hw=(2, 3))
    for k in ("pool_final", "mean_spatial"):  # one image, either layout: the same features
        np.testing.assert_allclose(same[k].numpy(), out[k].numpy())
    toks = torch.randn(3, 2 + 12, 5, generator=g, dtype=torch.float64)
    t = toks.numpy()
    out = aggregate(_tap("tokens", (3, 4), 2), toks)
    np.testing.assert_allclose(out["cls"].numpy(), t[:, 0])
    np.testing.assert_allclose(out["mean_spatial"].numpy(), t[:, 2:].mean(1))
    np.testing.assert_allclose(out["mean_all"].numpy(), t.mean(1))
    gridless = _tap("tokens", None, 1)  # e.g. a class-attention block: no grid, no spatial mean
    assert aggregation_names(gridless, None) == ["cls", "mean_all"]
    vec = torch.randn(3, 7, generator=g, dtype=torch.float64)
    np.testing.assert_array_equal(aggregate(_tap("vector"), vec)["flat"].numpy(), vec.numpy())
    with pytest.raises(ValueError, match="spatial"):
        token_positions(_tap("vector"), vec)


def test_normalised_depth():
    assert normalised_depth([4, 0, 9]) == {0: 0.0, 4: 0.5, 9: 1.0}
    assert normalised_depth([3]) == {3: 1.0}


# ----------------------------------------------------------------------------- streaming pass
def _tiny_vit():
    return tiny_vit(img_size=16, patch_size=4, embed_dim=16, num_heads=2, num_classes=3)


def _tiny_resnet():
    return tiny_resnet(num_classes=3, channels=[4, 8, 8, 8])


def _batches(n, bs, hw, seed=0):
    hw = (hw, hw) if isinstance(hw, int) else tuple(hw)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, *hw, generator=g)
    y = torch.arange(n) % 3
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)], x, y


def test_extract_features_vit_matches_direct_forward(tmp_path):
    from seelike.models.taps import discover_taps, record_taps

    model = _tiny_vit()
    taps = [t for t in discover_taps(model) if t.kind in ("embed", "block")]
    batches, x, y = _batches(10, 4, 16)
    meta = extract_probe_features(
        model, batches, 10, tmp_path / "f", taps, token_taps=[taps[-1].name],
        extra_meta={"splits": ["train"] * 6 + ["test"] * 4},
    )  # fmt: skip
    acts = {}
    with (
        record_taps(model, taps, lambda t, a: acts.__setitem__(t.name, a.clone())),
        torch.no_grad(),
    ):
        model(x)
    last = taps[-1]
    assert meta["taps"][-1]["aggregations"] == ["cls", "mean_spatial", "mean_all"]
    assert meta["taps"][-1]["grid_hw"] == [4, 4]
    got = np.load(tmp_path / "f" / f"{last.index:03d}_mean_spatial.npy")
    np.testing.assert_allclose(got, acts[last.name][:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)
    tok = np.load(tmp_path / "f" / f"{last.index:03d}_token.npy")
    assert tok.shape == (10, 16, 16)
    np.testing.assert_allclose(tok, acts[last.name][:, 1:].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "f" / "labels.npy"), y.numpy())


def test_extract_features_cnn_pools_to_final_stage(tmp_path):
    from seelike.models.taps import discover_taps

    model = _tiny_resnet()
    taps = [t for t in discover_taps(model) if t.kind in ("stem", "out")]
    batches, _, _ = _batches(6, 3, 64)
    meta = extract_probe_features(model, batches, 6, tmp_path / "f", taps)
    assert meta["pool_hw"] == [2, 2]  # 64 px / 32
    stem = meta["taps"][0]
    assert stem["aggregations"] == ["pool_final", "mean_spatial"]
    assert np.load(tmp_path / "f" / f"{stem['index']:03d}_pool_final.npy").shape == (
        6,
        stem["shape"][0] * 2 * 2,
    )


def test_probe_table_end_to_end(tmp_path):
    """Features of a random-weight ViT on images whose class is their colour: the table is tidy and the
    final-block probe beats chance."""
    from seelike.models.taps import discover_taps

    model = _tiny_vit()
    taps = [t for t in discover_taps(model) if t.kind in ("embed", "block")]
    g = torch.Generator().manual_seed(1)
    n = 90
    y = torch.arange(n) % 3
    x = 0.3 * torch.randn(n, 3, 16, 16, generator=g)
    x[torch.arange(n), y] += 1.5  # the class is the image's colour: linear in the patch embedding
    batches = [(x[i : i + 30], y[i : i + 30]) for i in range(0, n, 30)]
    splits = ["train"] * 30 + ["test"] * 60
    sets = {"5": list(kshot_indices(y[:30].numpy(), 5, 0)), "10": list(range(30))}
    extract_probe_features(
        model, batches, n, tmp_path / "f", taps, token_taps=[taps[-1].name],
        extra_meta={"splits": splits, "train_sets": sets, "model": "tiny"},
    )  # fmt: skip
    df = probe_table(tmp_path / "f", lambdas=[1e-2, 1.0, 100.0])
    assert set(df["shots"]) == {"5", "10"} and (df["model"] == "tiny").all()
    agg = df[df.aggregation != "token"]
    assert len(agg) == 2 * 3 * 3  # shots × taps × (cls, mean_spatial, mean_all)
    assert (df[df.aggregation == "token"].groupby("shots").size() == 16).all()
    assert set(agg["depth"]) == {0.0, 0.5, 1.0}
    assert df["accuracy"].between(0, 1).all() and (df["chance"] == 1 / 3).all()
    assert df["lam"].isin([1e-2, 1.0, 100.0]).all()
    embed = agg[(agg.shots == "10") & (agg.depth == 0.0)].set_index("aggregation")["accuracy"]
    assert embed["mean_spatial"] > 0.9
    # the embedding's CLS token is the same for every image: nothing to learn
    assert embed["cls"] == pytest.approx(1 / 3, abs=0.05)
    # SE over the 60 test images, and which of them each pooled probe got right
    from seelike.tables import PROBE_CORRECT, unpack_correct

    p = df["accuracy"].to_numpy()
    np.testing.assert_allclose(df["accuracy_se"], np.sqrt(p * (1 - p) / 60), rtol=1e-12)
    for _, row in agg.iterrows():
        assert unpack_correct(row[PROBE_CORRECT], 60).mean() == pytest.approx(row["accuracy"])
    assert df.loc[df.aggregation == "token", PROBE_CORRECT].isna().all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_solver_on_gpu_matches_cpu():
    x, y = _clusters(10, 300, 4, seed=4, sep=0.5)
    x_te, y_te = _clusters(20, 300, 4, seed=5, sep=0.5)
    cpu = fit_probe(x, y, x_te, y_te, device="cpu")
    gpu = fit_probe(x, y, x_te, y_te, device="cuda")
    assert gpu.lam == cpu.lam and gpu.form == cpu.form == "dual"
    np.testing.assert_array_equal(gpu.predictions, cpu.predictions)
    t = one_hot_pm1(y, [0, 1, 2, 3])
    np.testing.assert_allclose(
        ridge_solve(x, t, 2.0, device="cuda"), ref_ridge(x, t, 2.0), rtol=1e-8, atol=1e-8
    )


HW = (64, 96)


def _layout_model(arch, **kw):
    import timm

    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=3, **kw).eval()


@pytest.mark.parametrize(
    "arch,kw,layout,grid,aggs",
    [
        ("swin_tiny_patch4_window7_224",
         {"img_size": HW, "window_size": 4, "embed_dim": 24, "depths": (1, 1), "num_heads": (1, 1)},
         "nhwc", (8, 12), ["pool_final", "mean_spatial"]),
        # CaiT declares a CLS token that its patch blocks do not hold: no cls, the spatial mean over all 24
        ("cait_xxs24_224",
         {"img_size": HW, "depth": 2, "embed_dim": 48, "num_heads": 2, "depth_token_only": 1},
         "tokens", (4, 6), ["mean_spatial", "mean_all"]),
        ("pvt_v2_b0", {"depths": (1, 1, 1, 1)}, "tokens", (2, 3), ["mean_spatial", "mean_all"]),
        ("convnext_atto", {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}, "nchw", (2, 3),
         ["pool_final", "mean_spatial"]),
    ],
)  # fmt: skip
def test_extract_features_every_layout(tmp_path, arch, kw, layout, grid, aggs):
    """The last block output of each layout: its aggregations, its grid in the metadata, and its features equal
    to a numpy computation on the hooked activation with the layout written out per model."""
    from seelike.models.taps import discover_taps, record_taps

    model = _layout_model(arch, **kw)
    taps = [t for t in discover_taps(model, HW) if t.kind in ("stem", "embed", "block")]
    last = taps[-1]
    assert last.layout == layout
    batches, x, _ = _batches(6, 3, HW)
    meta = extract_probe_features(model, batches, 6, tmp_path / "f", taps, token_taps=[last.name])
    rec = meta["taps"][-1]
    assert rec["aggregations"] == aggs and rec["grid_hw"] == list(grid)
    acts = {}
    with (
        record_taps(model, [last], lambda t, a: acts.__setitem__(t.name, a.double().numpy())),
        torch.no_grad(),
    ):
        model(x)
    a = acts[last.name]
    positions = {
        "nhwc": lambda a: a.reshape(len(a), -1, a.shape[-1]),
        "nchw": lambda a: a.reshape(len(a), a.shape[1], -1).transpose(0, 2, 1),
        "tokens": lambda a: a,  # no prefix tokens in these blocks
    }[layout](a)
    assert positions.shape[1] == grid[0] * grid[1]
    got = np.load(tmp_path / "f" / f"{last.index:03d}_mean_spatial.npy")
    np.testing.assert_allclose(got, positions.mean(1), rtol=1e-4, atol=1e-5)
    tok = np.load(tmp_path / "f" / f"{last.index:03d}_token.npy")
    np.testing.assert_allclose(tok, positions, rtol=1e-4, atol=1e-5)
    if "mean_all" in aggs:
        np.testing.assert_allclose(
            np.load(tmp_path / "f" / f"{last.index:03d}_mean_all.npy"),
            a.mean(1),
            rtol=1e-4,
            atol=1e-5,
        )
    if (
        "pool_final" in aggs
    ):  # the final grid is the last block's own: pooling changes nothing but the order
        pooled = np.load(tmp_path / "f" / f"{last.index:03d}_pool_final.npy")
        np.testing.assert_allclose(
            pooled, positions.transpose(0, 2, 1).reshape(6, -1), rtol=1e-4, atol=1e-5
        )


def test_probes_support_matches_the_tap_choice():
    from torch import nn

    from seelike.analyses.probes import probes_support, select_probe_taps
    from seelike.models.families import analysis_support, family_of
    from seelike.models.taps import discover_taps

    gen = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    taps = discover_taps(gen, (8, 8))
    fam = family_of(gen).name
    why = analysis_support(fam, taps, "probes")
    assert why is not None and "probes.taps" in why
    with pytest.raises(ValueError, match="no taps of kinds"):
        select_probe_taps(taps, {"tap_kinds": ["embed", "stem", "block", "out"]}, "gen")
    assert analysis_support(fam, taps, "probes", ["1", "4"]) is None
    assert "not taps" in analysis_support(fam, taps, "probes", ["nope"])
    assert probes_support(taps, tap_kinds=None) is None  # every tap
    vit = _tiny_vit()
    assert analysis_support(family_of(vit).name, discover_taps(vit), "probes") is None


# ------------------------------------------------------------------------------------------------ standard errors
def test_accuracy_contrast_binomial_and_paired():
    from seelike.tables import accuracy_contrast, pack_correct, unpack_correct

    rng = np.random.default_rng(0)
    n = 203  # not a multiple of 8: the packing pads
    a = rng.random(n) < 0.7
    b = a.copy()
    flip = rng.choice(n, 40, replace=False)
    b[flip] = ~b[flip]
    assert np.array_equal(unpack_correct(pack_correct(a), n), a)
    assert len(pack_correct(a)) == (n + 7) // 8
    # one probe: the binomial SE
    p = a.mean()
    value, se = accuracy_contrast(a[None], [1.0])
    assert value == pytest.approx(p) and se == pytest.approx(math.sqrt(p * (1 - p) / n), rel=1e-12)
    # a difference: McNemar's discordant counts, n10 (a right, b wrong) and n01
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    d = (n10 - n01) / n
    value, se = accuracy_contrast(np.stack([a, b]), [1.0, -1.0])
    assert value == pytest.approx(a.mean() - b.mean())
    assert se == pytest.approx(math.sqrt(((n10 + n01) / n - d * d) / n), rel=1e-12)
    # far below the independent-binomial SE: the probes agree on most images
    pb = b.mean()
    assert se < 0.7 * math.sqrt(p * (1 - p) / n + pb * (1 - pb) / n)
    # invariants: a probe against itself has no spread; all right or all wrong has none either
    assert accuracy_contrast(np.stack([a, a]), [1.0, -1.0]) == (0.0, 0.0)
    assert accuracy_contrast(np.ones((1, n)), [1.0])[1] == 0.0
    # the same images 4 times: SE × 1/2
    rep = accuracy_contrast(np.tile(np.stack([a, b]), 4), [1.0, -1.0])[1]
    assert rep == pytest.approx(se / 2, rel=1e-12)
