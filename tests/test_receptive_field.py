"""Effective receptive fields: exact supports of small conv stacks, float64 finite-difference references,
ViT token taps and in-place-safe ResNet branch taps."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from seelike.analyses.receptive_field import (
    ErfTapsError,
    auto_erf_taps,
    centre_activation,
    choose_erf_taps,
    effective_receptive_fields,
    erf_size,
    erf_sizes_frame,
    erf_support,
)
from seelike.models.families import analysis_support, family_of
from seelike.models.taps import Tap, discover_taps, tap_family

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")


def tap(path: str, where: str = "output") -> Tap:
    return Tap(path, "out", path, where, None, 0, layout="nchw")


def conv_stack(*specs: tuple[int, int], cin: int = 3, width: int = 4) -> nn.Sequential:
    """Convs without bias, 'same' padding; specs are (kernel, dilation)."""
    torch.manual_seed(0)
    layers = []
    for k, d in specs:
        layers.append(nn.Conv2d(cin, width, k, padding=d * (k // 2), dilation=d, bias=False))
        cin = width
    return nn.Sequential(*layers).eval()


def support(m: np.ndarray) -> np.ndarray:
    return m > 1e-12 * m.max()


@pytest.mark.parametrize("mode", ["grad_of_mean", "mean_of_abs"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_single_conv_support_is_k_by_k(k, mode):
    model = conv_stack((k, 1))
    x = torch.randn(2, 3, 11, 11)
    res = effective_receptive_fields(model, [x], [tap("0")], channel_reduce=mode)
    s = support(res.maps["0"])
    rows, cols = np.nonzero(s)
    assert s.sum() == k * k
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (
        5 - k // 2,
        5 + k // 2,
        5 - k // 2,
        5 + k // 2,
    )
    # a linear layer's ERF is the weights: grad_of_mean = sum_i |mean_c w[c, i]|, independent of the input
    w = model[0].weight.detach().double()
    expected = w.mean(0).abs().sum(0) if mode == "grad_of_mean" else w.abs().sum(1).mean(0)
    np.testing.assert_allclose(
        res.maps["0"][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1],
        expected.numpy(),
        rtol=1e-5,
    )


def test_stack_grows():
    x = torch.randn(1, 3, 15, 15)
    two = effective_receptive_fields(conv_stack((3, 1), (3, 1)), [x], [tap("0"), tap("1")])
    assert support(two.maps["0"]).sum() == 9
    assert support(two.maps["1"]).sum() == 25  # 3x3 then 3x3 → 5x5
    three = effective_receptive_fields(conv_stack((3, 1), (3, 1), (3, 1)), [x], [tap("2")])
    assert support(three.maps["2"]).sum() == 49
    dil = effective_receptive_fields(conv_stack((3, 2)), [x], [tap("0")])
    r, c = np.nonzero(support(dil.maps["0"]))
    assert (
        len(r) == 9 and set(r) == {5, 7, 9} and set(c) == {5, 7, 9}
    )  # dilation 2: holes between taps
    mixed = effective_receptive_fields(conv_stack((3, 2), (3, 1)), [x], [tap("1")])
    assert (
        support(mixed.maps["1"]).sum() == 49
    )  # 3x3 dilated by 2 (span 5) then 3x3 → span 7, no holes


def finite_difference_erf(
    model: nn.Module, x: torch.Tensor, path: str, mode: str, eps: float = 1e-6
):
    """Central differences in float64 of the centre activation w.r.t. every input pixel (independent of autograd)."""
    model = model.double()
    mods = dict(model.named_modules())
    store: list[torch.Tensor] = []
    h = mods[path].register_forward_hook(lambda _m, _i, o: store.append(o.clone()))

    def centre(xx: torch.Tensor) -> torch.Tensor:
        store.clear()
        with torch.no_grad():
            model(xx)
        return centre_activation(tap(path), store[0])  # (B, C)

    x = x.double()
    out = np.zeros(x.shape[-2:])
    for b in range(x.shape[0]):
        for idx in np.ndindex(*x.shape[1:]):
            xp, xm = x[b : b + 1].clone(), x[b : b + 1].clone()
            xp[(0, *idx)] += eps
            xm[(0, *idx)] -= eps
            g = ((centre(xp) - centre(xm)) / (2 * eps))[0]  # (C,)
            val = g.mean().abs() if mode == "grad_of_mean" else g.abs().mean()
            out[idx[1:]] += val.item()
    h.remove()
    model.float()
    return out / x.shape[0]


@pytest.mark.parametrize("mode", ["grad_of_mean", "mean_of_abs"])
def test_matches_finite_differences_nonlinear(mode):
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.GELU()
    ).eval()
    x = torch.randn(2, 2, 7, 7)
    res = effective_receptive_fields(model, [x[:1], x[1:]], [tap("3")], channel_reduce=mode)
    ref = finite_difference_erf(model, x, "3", mode)
    np.testing.assert_allclose(res.maps["3"], ref, rtol=1e-4, atol=1e-7)
    assert res.n_images == 2


from tiny_models import tiny_vit


@pytest.mark.parametrize(
    "kw,img", [({}, (32, 32)), ({"reg_tokens": 2, "img_size": (24, 40)}, (24, 40))]
)
def test_vit_embed_tap_is_the_centre_patch(kw, img):
    """Before any attention, the centre token depends on its own patch only: support = that patch."""
    model = tiny_vit(**kw)
    taps = discover_taps(model)
    by = {t.name: t for t in taps}
    x = torch.randn(2, 3, *img)
    res = effective_receptive_fields(
        model, [x], [by["embed"], by["blocks.0.attn_res"], by["blocks.1.mlp"]]
    )
    gh, gw = img[0] // 8, img[1] // 8
    r, c = np.nonzero(support(res.maps["embed"]))
    assert (r.min(), r.max()) == ((gh // 2) * 8, (gh // 2) * 8 + 7)
    assert (c.min(), c.max()) == ((gw // 2) * 8, (gw // 2) * 8 + 7)
    # after attention, every patch contributes
    assert support(res.maps["blocks.0.attn_res"]).all()
    assert support(res.maps["blocks.1.mlp"]).all()


def test_resnet_branch_tap_is_inplace_safe():
    """timm BasicBlock: bn2 output (the branch) is modified by `x += shortcut`; the ERF must be the branch's."""
    torch.manual_seed(0)
    model = timm.create_model(
        "resnet18", pretrained=False, num_classes=0, zero_init_last=False
    ).eval()
    taps = {t.name: t for t in discover_taps(model)}
    x = torch.randn(2, 3, 32, 32)
    res = effective_receptive_fields(model, [x], [taps["layer1.0.branch"], taps["layer1.0.out"]])

    # reference: the branch recomputed by calling the submodules directly, autograd in float64
    m = model.double()
    xx = x.double().requires_grad_(True)
    stem = m.maxpool(m.act1(m.bn1(m.conv1(xx))))
    b0 = m.layer1[0]
    branch = b0.bn2(b0.conv2(b0.act1(b0.bn1(b0.conv1(stem)))))
    out = torch.relu(branch + stem)
    refs = {}
    for name, y in (("layer1.0.branch", branch), ("layer1.0.out", out)):
        (g,) = torch.autograd.grad(
            y[:, :, y.shape[2] // 2, y.shape[3] // 2].mean(1).sum(), xx, retain_graph=True
        )
        refs[name] = (g.abs().sum(1).sum(0) / 2).numpy()
    model.float()
    for name, ref in refs.items():
        np.testing.assert_allclose(res.maps[name], ref, rtol=1e-4, atol=1e-8 * ref.max())
    assert res.maps["layer1.0.branch"].max() > 0
    assert not np.allclose(res.maps["layer1.0.branch"], res.maps["layer1.0.out"])


def test_auto_taps():
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=12
    )
    names = [t.name for t in auto_erf_taps(discover_taps(vit), tap_family(vit))]
    assert names == [f"blocks.{i}.attn_res" for i in (0, 2, 5, 8, 11)]
    pre = [t.name for t in auto_erf_taps(discover_taps(vit), "vit", "pre")]
    assert pre == [f"blocks.{i}.attn" for i in (0, 2, 5, 8, 11)]
    r50 = timm.create_model("resnet50", pretrained=False)
    names = [t.name for t in auto_erf_taps(discover_taps(r50), tap_family(r50))]
    assert names == ["stem", "layer1.2.out", "layer2.3.out", "layer3.5.out", "layer4.2.out"]
    with pytest.raises(ValueError, match="erf.taps"):
        auto_erf_taps([], "generic")


def test_erf_size_known_maps():
    m = np.zeros((9, 9))
    m[4, 4] = 1.0
    s = erf_size(m)
    assert (
        s["r50_px"] == 0
        and s["r90_px"] == 0
        and (s["centroid_row"], s["centroid_col"]) == (4.5, 4.5)
    )
    m[4, 3] = m[4, 5] = m[3, 4] = m[5, 4] = 1.0  # a plus: 1/5 at the centre, 4/5 at distance 1
    s = erf_size(m)
    assert s["r50_px"] == 1.0 and s["r90_px"] == 1.0
    assert s["sigma_px"] == pytest.approx(np.sqrt(4 / 5))
    # uniform disc-free check: a uniform map's r90 exceeds its r50
    u = erf_size(np.ones((20, 20)))
    assert 0 < u["r50_px"] < u["r90_px"]
    z = erf_size(np.zeros((4, 4)))
    assert z["total_mass"] == 0 and np.isnan(z["r50_px"])
    with pytest.raises(ValueError, match="non-negative"):
        erf_size(-np.ones((3, 3)))


def test_sizes_frame_and_errors():
    model = conv_stack((3, 1), (3, 1))
    taps = [tap("0"), tap("1")]
    res = effective_receptive_fields(model, [torch.randn(3, 3, 9, 9)], taps, n_images=2)
    assert res.n_images == 2
    df = erf_sizes_frame(res, taps)
    assert list(df["tap"]) == ["0", "1"]
    assert (df["r90_px"].diff().dropna() > 0).all()  # the deeper tap's ERF is wider
    with pytest.raises(ValueError, match="channel_reduce"):
        effective_receptive_fields(model, [torch.randn(1, 3, 9, 9)], taps, channel_reduce="max")
    with pytest.raises(ValueError, match="empty"):
        effective_receptive_fields(model, [], taps)
    vec = Tap("0", "out", "0", "output", None, 0, layout="vector")
    with pytest.raises(ValueError, match="no spatial map"):
        effective_receptive_fields(model, [torch.randn(1, 3, 9, 9)], [vec])
    tokens = Tap(
        "0", "out", "0", "output", None, 0, layout="tokens", grid_hw=(2, 2), num_prefix_tokens=1
    )
    with pytest.raises(ValueError, match="do not form a grid"):
        centre_activation(
            tokens, torch.randn(1, 7, 3)
        )  # 6 tokens after the prefix: not the 2x2 grid


# ----------------------------------------------------------------------------- every layout: NCHW, NHWC, tokens
HW = (64, 96)  # not square: rows and columns cannot be swapped unnoticed
# (arch, kwargs, channels-last maps, prefix tokens in the block taps, patch embedding (kernel, stride, padding))
LAYOUT_MODELS = {
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"img_size": HW, "window_size": 4, "embed_dim": 24, "depths": (1, 1), "num_heads": (1, 1)},
        True, 0, (4, 4, 0),
    ),
    # layer scale 1 (timm: 1e-6): else each block is its LayerNorm-ed input, whose channel mean has no gradient
    "convnext": (
        "convnext_atto", {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32), "ls_init_value": 1.0}, False, 0,
        (4, 4, 0),
    ),
    "pvt": ("pvt_v2_b0", {"depths": (1, 1, 1, 1)}, False, 0, (7, 4, 3)),
    # CaiT declares one prefix token (its CLS joins only in the class-attention blocks): the blocks have none
    "cait": (
        "cait_xxs24_224",
        {"img_size": HW, "depth": 2, "embed_dim": 48, "num_heads": 2, "depth_token_only": 1},
        False, 0, (16, 16, 0),
    ),
    "sam": (
        "samvit_base_patch16",
        {"img_size": HW, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,),
         "window_size": 2, "use_rel_pos": False},
        True, 0, (16, 16, 0),
    ),
}  # fmt: skip
_BUILT: dict = {}


def layout_model(name: str):
    """(model, taps at HW) of a tiny random-init model, built once per session."""
    if name not in _BUILT:
        arch, kw = LAYOUT_MODELS[name][:2]
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=3, **kw).eval()
        _BUILT[name] = (model, discover_taps(model, HW))
    return _BUILT[name]


def ref_centre(
    act: torch.Tensor, channels_last: bool, n_prefix: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The centre position's (B, C) activation and the (rows, cols) grid, written from each model's known layout
    (independent of seelike.models.layout): maps by their declared channel axis, tokens as `n_prefix` tokens then
    a row-major grid of the input's aspect."""
    if act.ndim == 4:
        if channels_last:
            gh, gw = act.shape[1], act.shape[2]
            return act[:, gh // 2, gw // 2, :], (gh, gw)
        gh, gw = act.shape[2], act.shape[3]
        return act[:, :, gh // 2, gw // 2], (gh, gw)
    n = act.shape[1] - n_prefix
    stride = round((HW[0] * HW[1] / n) ** 0.5)
    gh, gw = HW[0] // stride, HW[1] // stride
    assert gh * gw == n
    return act[:, n_prefix + (gh // 2) * gw + gw // 2], (gh, gw)


def ref_erf(model: nn.Module, t: Tap, x: torch.Tensor, channels_last: bool, n_prefix: int):
    """float64 ERF (grad_of_mean) of tap `t` by a hook on its module and `ref_centre`; and the tap's grid."""
    model = model.double()
    mod = dict(model.named_modules())[t.module_path]
    seen: list[torch.Tensor] = []

    def grab(v):
        if len(seen) == t.occurrence:
            seen.append(v[0] if isinstance(v, tuple) else v)
        else:
            seen.append(None)

    if t.where == "output":
        h = mod.register_forward_hook(lambda _m, _i, o: grab(o))
    else:
        h = mod.register_forward_pre_hook(lambda _m, i: grab(i))
    try:
        xx = x.double().requires_grad_(True)
        model(xx)
        centre, grid = ref_centre(seen[t.occurrence], channels_last, n_prefix)
        (g,) = torch.autograd.grad(centre.mean(1).sum(), xx)
    finally:
        h.remove()
        model.float()
    return (g.abs().sum(1).sum(0) / len(x)).numpy(), grid


@pytest.mark.parametrize("name", list(LAYOUT_MODELS))
def test_erf_centre_per_layout_matches_float64_reference(name):
    """The ERF of every default tap (post and pre) is that of the centre of the tap's own grid, read on the
    right axes (NHWC Swin / SAM maps, prefix-free CaiT blocks, PVT tokens), and its mass is centred within one
    stride of the centre of that position's receptive region."""
    model, taps = layout_model(name)
    _, _, channels_last, n_prefix, _ = LAYOUT_MODELS[name]
    chosen = choose_erf_taps(taps, family_of(model).name, None, ("post", "pre"), name)
    assert set(chosen) == {"post", "pre"}
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(1))
    distinct = list({t.name: t for ts in chosen.values() for t in ts}.values())
    res = effective_receptive_fields(model, [x], distinct)
    for t in distinct:
        ref, (gh, gw) = ref_erf(model, t, x, channels_last, n_prefix)
        assert t.grid_hw == (gh, gw), t.name
        if (
            t.kind == "stem"
        ):  # ends in a LayerNorm: Σ_c ∂LN_c/∂x = 0, the map is rounding noise (next test)
            continue
        np.testing.assert_allclose(
            res.maps[t.name], ref, rtol=2e-3, atol=2e-3 * ref.max(), err_msg=t.name
        )
        sh, sw = HW[0] / gh, HW[1] / gw
        size = erf_size(res.maps[t.name])
        assert abs(size["centroid_row"] - (gh // 2 + 0.5) * sh) <= sh, t.name
        assert abs(size["centroid_col"] - (gw // 2 + 0.5) * sw) <= sw, t.name


@pytest.mark.parametrize("name", list(LAYOUT_MODELS))
def test_stem_erf_is_the_centre_patch(name):
    """Before any block, the centre position sees exactly its own patch: rows r·s − p … r·s − p + k − 1 (clipped
    to the image) of the patch embedding (kernel k, stride s, padding p), r = gh // 2; likewise for columns."""
    model, taps = layout_model(name)
    k, s, p = LAYOUT_MODELS[name][4]
    stem = next(t for t in taps if t.kind in ("stem", "embed"))
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(2))
    m = effective_receptive_fields(model, [x], [stem], channel_reduce="mean_of_abs").maps[stem.name]
    gh, gw = HW[0] // s, HW[1] // s
    rows, cols = np.nonzero(m > 0)
    assert (rows.min(), rows.max()) == (
        max(0, (gh // 2) * s - p),
        min(HW[0], (gh // 2) * s - p + k) - 1,
    )
    assert (cols.min(), cols.max()) == (
        max(0, (gw // 2) * s - p),
        min(HW[1], (gw // 2) * s - p + k) - 1,
    )
    assert (m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] > 0).all()


def test_centre_activation_reads_each_layout():
    """The centre (gh//2, gw//2) of a 3×5 grid through each layout, against explicit indexing."""
    x = torch.randn(2, 4, 3, 5)
    nchw = Tap("t", "block", "t", "output", None, layout="nchw", grid_hw=(3, 5))
    nhwc = Tap("t", "block", "t", "output", None, layout="nhwc", grid_hw=(3, 5))
    toks = Tap(
        "t", "block", "t", "output", None, layout="tokens", grid_hw=(3, 5), num_prefix_tokens=2
    )
    torch.testing.assert_close(centre_activation(nchw, x), x[:, :, 1, 2])
    y = x.permute(0, 2, 3, 1)
    torch.testing.assert_close(centre_activation(nhwc, y), y[:, 1, 2, :])
    seq = torch.cat(
        [torch.randn(2, 2, 4), x.flatten(2).transpose(1, 2)], 1
    )  # 2 prefix tokens, then the grid
    torch.testing.assert_close(centre_activation(toks, seq), x[:, :, 1, 2])


def test_default_taps_per_family_and_refusals():
    swin = layout_model("swin")[1]
    assert [t.name for t in auto_erf_taps(swin, "swin", "post")] == [
        "stem", "layers.0.blocks.0.block", "layers.1.blocks.0.block",
    ]  # fmt: skip
    assert [t.name for t in auto_erf_taps(swin, "swin", "pre")] == [
        "stem", "layers.0.blocks.0.branch2", "layers.1.blocks.0.branch2",
    ]  # fmt: skip
    sam = layout_model("sam")[
        1
    ]  # one stage: block 0 and the quarter ends; windowed block 0 has no branch
    assert [t.name for t in auto_erf_taps(sam, "timm_stages", "post")] == [
        "stem",
        "blocks.0.block",
        "blocks.1.block",
    ]
    assert [t.name for t in auto_erf_taps(sam, "timm_stages", "pre")] == [
        "stem",
        "blocks.1.branch2",
    ]
    # generic: leaf modules; the first spatial one and the last before each change of grid; no pre
    from tiny_models import tiny_generic

    gen = tiny_generic()
    taps = discover_taps(gen, (16, 16))
    fam = family_of(gen).name
    assert fam == "generic"
    assert [t.name for t in auto_erf_taps(taps, fam, "post")] == ["0", "1", "3"]
    with pytest.raises(ErfTapsError, match="pre-residual"):
        auto_erf_taps(taps, fam, "pre")
    with pytest.warns(UserWarning, match="no pre-residual ERF"):
        assert set(choose_erf_taps(taps, fam, None, ("post", "pre"), "gen")) == {"post"}
    assert analysis_support(fam, taps, "erf") is None
    assert "pre-residual" in erf_support(taps, fam, residual=("pre",))
    # listed taps: unknown or without a grid are refused, by the dry run and the rule alike
    assert "not taps" in analysis_support(fam, taps, "erf", ["nope"])
    assert "without a spatial map" in analysis_support(
        fam, taps, "erf", ["6"]
    )  # the linear head: a vector
    with pytest.raises(ErfTapsError, match="without a spatial map"):
        choose_erf_taps(taps, fam, ["6"], ("post",), "gen")
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4), nn.ReLU())
    ftaps = discover_taps(flat, (8, 8))
    assert "spatial" in analysis_support(family_of(flat).name, ftaps, "erf")


# ----------------------------------------------------------------------------- jackknife of the ERF sizes
def ref_sizes(m: np.ndarray, qs=(0.5, 0.9)) -> dict[str, float]:
    """ERF sizes from their definition, in float64: mass centroid at pixel centres, σ = √(Σ p d²), and r_q the
    smallest pixel distance d whose disc {d_i ≤ d} holds at least q of the mass."""
    p = m / m.sum()
    rows, cols = np.indices(m.shape) + 0.5
    cr, cc = (p * rows).sum(), (p * cols).sum()
    d = np.hypot(rows - cr, cols - cc)
    out = {"sigma_px": float(np.sqrt((p * d**2).sum()))}
    for q in qs:
        out[f"r{round(q * 100)}_px"] = float(
            min(r for r in np.unique(d) if p[d <= r].sum() >= q - 1e-12)
        )
    return out


def ref_jackknife_se(reps) -> float:
    k = len(reps)
    mean = sum(reps) / k
    return float(np.sqrt((k - 1) / k * sum((r - mean) ** 2 for r in reps)))


def per_image_erf(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(N, H, W) |∂ mean_c y_c(centre) / ∂ x| summed over input channels, one image at a time, float64, from the
    model's output (no hooks, no batching)."""
    import copy

    m = copy.deepcopy(model).double()
    out = []
    for i in range(len(x)):
        xi = x[i : i + 1].double().requires_grad_(True)
        y = m(xi)
        centre = y[0, :, y.shape[2] // 2, y.shape[3] // 2]
        (g,) = torch.autograd.grad(centre.mean(), xi)
        out.append(g[0].abs().sum(0).numpy())
    return np.stack(out)


def test_erf_size_jackknife_matches_a_float64_delete_one_group_reference():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, padding=1), nn.GELU()
    ).eval()
    x = torch.randn(7, 2, 9, 9) * 2
    res = effective_receptive_fields(model, [x[:3], x[3:]], [tap("3")], groups=3)
    # image i in group i mod 3, whatever the batch boundaries
    per = per_image_erf(model, x)
    sums = np.stack([per[g::3].sum(0) for g in range(3)])
    np.testing.assert_array_equal(res.group_sizes, [3, 2, 2])
    np.testing.assert_allclose(res.group_sums["3"], sums, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(res.maps["3"], per.mean(0), rtol=1e-5, atol=1e-9)
    loo = [(per.sum(0) - sums[g]) / (7 - len(per[g::3])) for g in range(3)]
    np.testing.assert_allclose(res.leave_one_out("3"), np.stack(loo), rtol=1e-5, atol=1e-9)
    row = erf_sizes_frame(res, [tap("3")]).iloc[0]
    assert row["n_groups"] == 3 and row["n_images"] == 7
    reps = [ref_sizes(m) for m in loo]
    for size in ("sigma_px", "r50_px", "r90_px"):
        values = [r[size] for r in reps]
        assert row[f"{size}_se"] == pytest.approx(ref_jackknife_se(values), rel=1e-4, abs=1e-9)
        if size != "sigma_px":
            np.testing.assert_allclose(row[f"{size}_jk"], values, rtol=1e-5)
    assert row["sigma_px_se"] > 0  # the maps differ between images: a spread to measure
    full = ref_sizes(per.mean(0))
    assert row["r50_px"] == pytest.approx(full["r50_px"], rel=1e-5)


def test_erf_groups_are_capped_and_an_input_independent_erf_has_no_spread():
    # a linear map: every image's ERF is the weights, so every replicate is the same map and every SE 0
    model = conv_stack((3, 1), (3, 1))
    taps = [tap("0"), tap("1")]
    res = effective_receptive_fields(model, [torch.randn(30, 3, 9, 9)], taps)
    assert len(res.group_sizes) == 20 and res.group_sizes.sum() == 30
    assert set(res.group_sizes.tolist()) == {1, 2}  # interleaved: sizes differ by at most one
    df = erf_sizes_frame(res, taps)
    assert (df["n_groups"] == 20).all()
    for size in ("sigma_px", "r50_px", "r90_px"):
        np.testing.assert_allclose(df[f"{size}_se"], 0.0, atol=1e-9)
    # fewer images than groups: one group per image
    few = effective_receptive_fields(model, [torch.randn(2, 3, 9, 9)], taps)
    np.testing.assert_array_equal(few.group_sizes, [1, 1])
    # one image: no jackknife (NaN SE, no replicates), the sizes themselves unchanged
    one = erf_sizes_frame(effective_receptive_fields(model, [torch.randn(1, 3, 9, 9)], taps), taps)
    assert one["r50_px_se"].isna().all() and all(len(r) == 0 for r in one["r50_px_jk"])
    assert np.isfinite(one["r50_px"]).all()
    with pytest.raises(ValueError, match="groups"):
        effective_receptive_fields(model, [torch.randn(1, 3, 9, 9)], taps, groups=0)
