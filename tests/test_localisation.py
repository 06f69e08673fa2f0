"""Localisation maps: patch cutting, CKA against an independent float64 reference, and tokens that copy their
own patch (synthetic, and a timm ViT whose blocks are switched off) peaking at their own position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seelike.analyses.localisation import (
    default_localisation_tap,
    default_plot_tokens,
    localisation_cka,
    localisation_maps,
    patches,
    position_features,
    token_indices,
)
from seelike.cka import minibatch_cka
from seelike.models.geometry import PositionGrid, cnn_position_grid, vit_position_grid


# ----------------------------------------------------------------------------- float64 reference
def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5 term by term."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def ref_cka(xs, ys) -> float:
    kl = kk = ll = 0.0
    for x, y in zip(xs, ys, strict=True):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        y = np.asarray(y, np.float64).reshape(len(y), -1)
        K, L = x @ x.T, y @ y.T
        kl, kk, ll = kl + ref_hsic1(K, L), kk + ref_hsic1(K, K), ll + ref_hsic1(L, L)
    return kl / np.sqrt(kk * ll)


def _grid(h=4, w=4, p=4) -> PositionGrid:
    regions = tuple((i * p, i * p + p, j * p, j * p + p) for i in range(h) for j in range(w))
    return PositionGrid((h, w), (h * p, w * p), 1, regions, (p, p), (p, p))


def _copy_batches(grid, n_batches=3, bs=16, seed=0, mix=0.0, dim=64):
    """Tokens (G, B, dim) = a random orthogonal map of their own flattened patch (+ `mix` × the mean patch)."""
    g = torch.Generator().manual_seed(seed)
    p = 3 * grid.kernel[0] * grid.kernel[1]
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    out = []
    for _ in range(n_batches):
        x = torch.randn(bs, 3, *grid.img_hw, generator=g)
        pt = patches(x, grid)  # (G, B, p)
        src = pt + mix * pt.mean(0, keepdim=True)
        feats = (torch.nn.functional.pad(src, (0, dim - p)).double() @ q).float()
        out.append((feats, x))
    return out


# ----------------------------------------------------------------------------- patches and grids
def test_patches_match_slices_row_major():
    grid = _grid(3, 2, 5)
    x = torch.randn(2, 3, 15, 10)
    pt = patches(x, grid)
    assert pt.shape == (6, 2, 75)
    for g, (r0, r1, c0, c1) in enumerate(grid.regions):
        # unfold flattens each patch channel-major: the same set of pixels as the slice, in that order
        torch.testing.assert_close(pt[g], x[:, :, r0:r1, c0:c1].reshape(2, -1))
    assert grid.rc(5) == (2, 1)


def test_cnn_grid_regular_and_irregular():
    reg = cnn_position_grid((4, 4), (32, 32))
    assert reg.kernel == (8, 8) and reg.regions[5] == (8, 16, 8, 16)
    irr = cnn_position_grid((3, 3), (10, 10))
    assert irr.kernel is None
    assert irr.regions[0] == (0, 4, 0, 4) and irr.regions[-1] == (6, 10, 6, 10)
    x = torch.randn(2, 3, 10, 10)
    parts = patches(x, irr)
    assert len(parts) == 9 and parts[4].shape == (2, 3 * 4 * 4)  # rows 3..7, cols 3..7
    covered = np.zeros((10, 10), bool)
    for r0, r1, c0, c1 in irr.regions:
        covered[r0:r1, c0:c1] = True
    assert covered.all()


def _tap(layout, grid_hw, prefix=0):
    from seelike.models.taps import Tap

    return Tap(
        "t", "block", "t", "output", None, layout=layout, grid_hw=grid_hw, num_prefix_tokens=prefix
    )


def test_position_features_vit_and_cnn():
    grid = _grid(2, 2, 4)
    act = torch.randn(3, 5, 7)
    tok = _tap("tokens", (2, 2), 1)
    torch.testing.assert_close(position_features(tok, act, grid)[2], act[:, 3])
    cgrid = cnn_position_grid((2, 3), (8, 12))
    m = torch.randn(3, 7, 2, 3)
    torch.testing.assert_close(position_features(_tap("nchw", (2, 3)), m, cgrid)[4], m[:, :, 1, 1])
    with pytest.raises(ValueError, match="grid"):
        position_features(tok, torch.randn(3, 6, 7), grid)  # 5 tokens after the prefix: no 2x2 grid
    with pytest.raises(ValueError, match="no spatial positions"):
        position_features(_tap("vector", None), torch.randn(3, 7), grid)


def test_position_features_nhwc_match_float64_reference():
    """A channels-last (B, H, W, C) map: position g = (g // W, g % W) is act[:, g // W, g % W, :] (float64), not
    a slice of the wrong axes, and the grid is the map's (3, 5), not (5, C)."""
    act = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    tap = _tap("nhwc", (3, 5))
    grid = cnn_position_grid((3, 5), (12, 20))
    feats = position_features(tap, act, grid)
    assert feats.shape == (15, 4, 6) and feats.dtype == torch.float64
    a = act.numpy()
    ref = np.stack([a[:, g // 5, g % 5, :] for g in range(15)])
    np.testing.assert_array_equal(feats.numpy(), ref)
    with pytest.raises(ValueError, match="grid"):
        position_features(tap, act, cnn_position_grid((5, 6), (20, 24)))


def test_default_plot_tokens():
    assert default_plot_tokens((8, 8)) == [0, 4, 18, 36, 54, 63]
    assert default_plot_tokens((1, 1)) == [0]


# ----------------------------------------------------------------------------- CKA
def test_localisation_cka_matches_reference():
    grid = _grid(2, 2, 3)
    batches = _copy_batches(grid, n_batches=2, bs=12, mix=0.7, dim=32)
    m = localisation_cka(batches, grid, tokens=[0, 3])
    cka = m.cka
    assert cka.shape == (2, 4) and m.n_images == 24 and m.dropped == []
    assert not m.patch_constant.any() and not m.token_constant.any()
    for i, t in enumerate([0, 3]):
        for g in range(4):
            xs = [f[t].numpy() for f, _ in batches]
            ys = [patches(x, grid)[g].numpy() for _, x in batches]
            ref = ref_cka(xs, ys)
            assert cka[i, g] == pytest.approx(ref, abs=1e-6)
            assert cka[i, g] == pytest.approx(minibatch_cka(xs, ys), abs=1e-6)


def test_token_copying_its_patch_peaks_at_its_own_position():
    grid = _grid(4, 4, 4)
    cka = localisation_cka(_copy_batches(grid), grid).cka
    assert cka.shape == (16, 16)
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-6)  # orthogonal map of the patch: CKA 1
    assert (cka.argmax(1) == np.arange(16)).all()
    off = cka[~np.eye(16, dtype=bool)]
    assert np.abs(off).max() < 0.2  # independent pixels: unbiased CKA ≈ 0


def test_mixed_tokens_still_peak_at_own_position():
    grid = _grid(3, 3, 2)
    cka = localisation_cka(_copy_batches(grid, mix=0.5, dim=16), grid).cka
    assert (cka.argmax(1) == np.arange(9)).all()
    assert (np.diag(cka) < 1.0).all()


def test_short_batches_are_dropped_and_bad_tokens_refused():
    grid = _grid(2, 2, 2)
    batches = _copy_batches(grid, n_batches=2, bs=8, dim=12)
    f, x = batches[0]
    m = localisation_cka([*batches, (f[:, :3], x[:3])], grid)
    assert m.n_images == 16 and m.dropped == [2]
    with pytest.raises(ValueError, match="outside"):
        localisation_cka(batches, grid, tokens=[4])


def test_constant_patches_are_flagged():
    """A blank border (as in the digits images) makes those patches constant: CKA undefined, flagged, 0."""
    grid = _grid(3, 3, 2)
    batches = _copy_batches(grid, dim=16)
    for _, x in batches:
        x[:, :, :2, :] = 0.0  # first grid row blank
    with pytest.warns(UserWarning, match="constant"):
        m = localisation_cka(batches, grid)
    np.testing.assert_array_equal(m.patch_constant, [True] * 3 + [False] * 6)
    assert (m.cka[:, :3] == 0).all()
    assert (m.cka[3:].argmax(1) == np.arange(3, 9)).all()


def test_token_indices():
    grid = _grid(3, 4, 2)
    assert token_indices(None, grid) == list(range(12))
    assert token_indices([[0, 0], [-1, -1], [1, 2], 5, [1, 1]], grid) == [0, 11, 6, 5]
    with pytest.raises(ValueError, match="outside"):
        token_indices([[3, 0]], grid)


# ----------------------------------------------------------------------------- real timm models
def _identity_vit():
    """A timm ViT whose blocks add nothing (branch outputs zeroed): each token is its patch embedding."""
    import timm

    torch.manual_seed(0)
    m = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, depth=2, embed_dim=64,
        num_heads=2, num_classes=3,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for blk in m.blocks:
            for lin in (blk.attn.proj, blk.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    return m


def _image_batches(n_batches, bs, hw, seed=0):
    hw = (hw, hw) if isinstance(hw, int) else tuple(hw)
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(bs, 3, *hw, generator=g), torch.zeros(bs, dtype=torch.long))
        for _ in range(n_batches)
    ]


def test_vit_tokens_that_copy_their_patch_localise():
    model = _identity_vit()
    res = localisation_maps(model, _image_batches(3, 16, 16))
    assert res.tap == "blocks.1.block" and res.grid.grid_hw == (4, 4) and res.n_images == 48
    assert (res.cka.argmax(1) == np.arange(16)).all()
    assert (np.diag(res.cka) > 0.7).all()
    df = res.to_frame()
    assert len(df) == 16 * 16 and set(df.columns) >= {
        "token",
        "patch",
        "token_row",
        "patch_col",
        "cka",
    }
    own = df[df.token == df.patch]
    assert (own.token_row == own.patch_row).all()


def test_vit_grid_and_cnn_default_tap():
    import timm

    from seelike.models.taps import discover_taps, tap_family

    model = _identity_vit()
    grid = vit_position_grid(model, (16, 16))
    assert grid.grid_hw == (4, 4) and grid.num_prefix_tokens == 1 and grid.kernel == (4, 4)
    torch.manual_seed(0)
    cnn = timm.create_model(
        "resnet18", pretrained=False, num_classes=3, channels=[4, 8, 8, 8]
    ).eval()
    taps = discover_taps(cnn)
    assert default_localisation_tap(taps, tap_family(cnn)).name == "layer4.1.out"
    res = localisation_maps(cnn, _image_batches(2, 8, 64), tap="layer3.1.out", tokens=[0, 15])
    assert res.grid.grid_hw == (4, 4) and res.grid.kernel == (16, 16)
    assert res.cka.shape == (2, 16) and np.isfinite(res.cka).all()
    with pytest.raises(ValueError, match="not a tap"):
        localisation_maps(cnn, _image_batches(1, 8, 64), tap="nope")


# ----------------------------------------------------------------------------- every layout
HW = (64, 96)


def _build(arch, **kw):
    import timm

    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=3, **kw).eval()


def _swin():
    return _build(
        "swin_tiny_patch4_window7_224", img_size=HW, window_size=4, embed_dim=24, depths=(1, 1),
        num_heads=(1, 1),
    )  # fmt: skip


def test_swin_grid_is_the_taps_map_and_its_patches_localise():
    """Swin's channels-last stages: the default tap is the last block output and its grid is its map (8×12 at
    stride 8, not (12, C) from reading NHWC as NCHW); the patch-embedding stage's positions are 4×4 patches, and
    the stem (a LayerNorm of each patch's projection) is most similar to its own patch."""
    from seelike.models.taps import discover_taps

    model = _swin()
    taps = discover_taps(model)
    tap = default_localisation_tap(taps)
    assert (tap.name, tap.layout) == ("layers.1.blocks.0.block", "nhwc")
    res = localisation_maps(model, _image_batches(2, 8, HW), tokens=[[0, 0], [-1, -1]])
    assert res.tap == tap.name and res.grid.grid_hw == (8, 12) and res.grid.kernel == (8, 8)
    assert res.cka.shape == (2, 96) and np.isfinite(res.cka).all()
    toks = [[0, 0], [3, 5], [7, 11], [15, 23]]
    stem = localisation_maps(model, _image_batches(4, 24, HW), tap="stem", tokens=toks)
    assert stem.grid.grid_hw == (16, 24) and stem.grid.kernel == (4, 4)
    own = [r * 24 + c for r, c in toks]
    assert (stem.cka.argmax(1) == own).all()


def test_token_grids_take_the_taps_own_prefix_and_stride():
    """CaiT's blocks hold patch tokens only while the model declares a CLS token: positions are the 4×6 patches of
    the patch embedding, with no prefix; PVT-v2's padded, overlapping patch embedding is not a patch grid: its
    tokens get the tap's own 16×24 grid over the input."""
    cait = _build(
        "cait_xxs24_224", img_size=HW, depth=2, embed_dim=48, num_heads=2, depth_token_only=1
    )
    assert cait.num_prefix_tokens == 1
    res = localisation_maps(cait, _image_batches(1, 8, HW), tokens=[[0, 0]])
    assert res.tap == "blocks.1.block"
    assert (
        res.grid.grid_hw == (4, 6)
        and res.grid.kernel == (16, 16)
        and res.grid.num_prefix_tokens == 0
    )
    assert res.cka.shape == (1, 24)
    pvt = _build("pvt_v2_b0", depths=(1, 1, 1, 1))
    res = localisation_maps(
        pvt, _image_batches(1, 8, HW), tap="stages.0.blocks.0.block", tokens=[[0, 0]]
    )
    assert res.grid.grid_hw == (16, 24) and res.grid.kernel == (4, 4) and res.cka.shape == (1, 384)


def test_default_tap_is_never_a_pooled_head_and_refusals_match():
    from tiny_models import tiny_generic
    from torch import nn

    from seelike.models.families import analysis_support, family_of
    from seelike.models.taps import discover_taps

    gen = tiny_generic()
    taps = discover_taps(gen, (16, 16))
    fam = family_of(gen).name
    assert default_localisation_tap(taps).name == "3"  # not the 1×1 pool
    assert analysis_support(fam, taps, "localisation") is None
    assert "no spatial map" in analysis_support(fam, taps, "localisation", ["6"])
    assert "not a tap" in analysis_support(fam, taps, "localisation", ["nope"])
    with pytest.raises(ValueError, match="no spatial map"):
        localisation_maps(gen, [torch.randn(4, 3, 16, 16)], tap="6")
    pooled = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    why = analysis_support(
        "generic", discover_taps(pooled, (3, 3)), "localisation"
    )  # a 1×1 conv map
    assert why is not None and "larger than 1×1" in why


# ----------------------------------------------------------------------------- uncertainty: cells and summary
def ref_summary(cka: np.ndarray, grid: PositionGrid, tokens, patch_constant) -> dict[str, float]:
    """Figs 9/10 summary from a (T, G) map: interior tokens (off the border) whose own patch is not constant;
    own-patch mean, mean over tokens of the non-constant other patches' mean, share whose argmax is its own."""
    h, w = grid.grid_hw
    keep_g = ~np.asarray(patch_constant)
    own, other, hit = [], [], []
    for i, t in enumerate(tokens):
        r, c = divmod(t, w)
        if not (1 <= r <= h - 2 and 1 <= c <= w - 2) or not keep_g[t]:
            continue
        own.append(cka[i, t])
        others = [cka[i, g] for g in range(grid.size) if keep_g[g] and g != t]
        other.append(sum(others) / len(others))
        best = max((g for g in range(grid.size) if keep_g[g]), key=lambda g: cka[i, g])
        hit.append(best == t)
    own_m, other_m = float(np.mean(own)), float(np.mean(other))
    return {
        "own": own_m,
        "other": other_m,
        "own_minus_other": own_m - other_m,
        "own_is_argmax": float(np.mean(hit)),
    }


def ref_jackknife(reps) -> float:
    k = len(reps)
    mean = sum(reps) / k
    return float(np.sqrt((k - 1) / k * sum((r - mean) ** 2 for r in reps)))


def test_cell_and_summary_standard_errors_match_recomputation_with_a_minibatch_dropped():
    grid = _grid(4, 4, 2)
    batches = _copy_batches(grid, n_batches=5, bs=8, mix=2.0, dim=12, seed=5)
    tokens = [0, 5, 6, 9, 10]  # a corner (never in the summary) and the four interior positions
    m = localisation_cka(batches, grid, tokens=tokens, draws=50)
    # every replicate from scratch: the CKA of the other 4 minibatches (float64 reference, cell by cell)
    loo = []
    for j in range(5):
        rest = batches[:j] + batches[j + 1 :]
        rep = np.empty((len(tokens), grid.size))
        for i, t in enumerate(tokens):
            xs = [f[t].numpy() for f, _ in rest]
            for g in range(grid.size):
                rep[i, g] = ref_cka(xs, [patches(x, grid)[g].numpy() for _, x in rest])
        loo.append(rep)
    loo = np.stack(loo)
    cell_se = np.sqrt(4 / 5 * ((loo - loo.mean(0)) ** 2).sum(0))
    np.testing.assert_allclose(m.cka_se, cell_se, rtol=1e-4, atol=1e-7)
    reps = [ref_summary(r, grid, tokens, m.patch_constant) for r in loo]
    s = m.summary
    for key in ("own", "other", "own_minus_other"):
        want = ref_jackknife([r[key] for r in reps])
        assert s[f"summary_{key}_se"] == pytest.approx(want, rel=1e-4, abs=1e-9), key
    assert s["summary_n_groups"] == 5
    assert s["summary_own_se"] > 0 and s["summary_other_se"] > 0
    # the argmax share: a bootstrap SD and percentile interval, inside [0, 1]
    lo, hi = s["summary_own_is_argmax_ci_low"], s["summary_own_is_argmax_ci_high"]
    assert 0 <= lo <= hi <= 1 and s["summary_own_is_argmax_se"] >= 0
    again = localisation_cka(batches, grid, tokens=tokens, draws=50).summary
    assert m.summary == again  # seeded: reproducible


def test_summary_groups_are_capped_and_copies_are_certain():
    grid = _grid(3, 3, 2)
    # 22 minibatches: summed into 20 groups of consecutive minibatches
    m = localisation_cka(_copy_batches(grid, n_batches=22, bs=4, dim=16), grid, draws=20)
    assert m.summary["summary_n_groups"] == 20
    # tokens that are their patch: every resample has share 1, the interval is [1, 1]
    s = localisation_cka(_copy_batches(grid, n_batches=4, bs=16, dim=16), grid).summary
    assert (s["summary_own_is_argmax_ci_low"], s["summary_own_is_argmax_ci_high"]) == (1.0, 1.0)
    assert s["summary_own_is_argmax_se"] == 0.0
    # one minibatch: nothing to resample
    one = localisation_cka(_copy_batches(grid, n_batches=1, bs=16, dim=16), grid).summary
    assert all(np.isnan(v) for k, v in one.items() if k != "summary_n_groups")


def test_table_carries_cell_se_and_summary_columns():
    from seelike.analyses.localisation import SUMMARY_COLUMNS
    from seelike.claims.metrics import localisation_stats

    res = localisation_maps(_identity_vit(), _image_batches(3, 16, 16))
    df = res.to_frame()
    assert np.isfinite(df["cka_se"]).all() and (df["cka_se"] >= 0).all()
    for c in SUMMARY_COLUMNS:
        assert df[c].nunique() == 1, c  # one model-level number per table
    assert df["summary_own_is_argmax_ci_low"].iloc[0] <= localisation_stats(df)["own_is_argmax"]
