"""Effective receptive fields: exact supports of small conv stacks, float64 finite-difference references,
ViT token taps and in-place-safe ResNet branch taps."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from seelike.analyses.receptive_field import (
    auto_erf_taps,
    centre_activation,
    effective_receptive_fields,
    erf_size,
    erf_sizes_frame,
)
from seelike.models.taps import Tap, discover_taps, tap_family

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")


def tap(path: str, where: str = "output") -> Tap:
    return Tap(path, "out", path, where, None, 0)


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
        return centre_activation(store[0])  # (B, C)

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


def tiny_vit(**kw) -> nn.Module:
    args = {
        "pretrained": False,
        "img_size": 32,
        "patch_size": 8,
        "depth": 2,
        "embed_dim": 24,
        "num_heads": 3,
    }
    args.update(kw)
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", **args).eval()


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
        (g,) = torch.autograd.grad(centre_activation(y).mean(1).sum(), xx, retain_graph=True)
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
    with pytest.raises(ValueError, match="TokenGrid"):
        centre_activation(torch.randn(1, 5, 3))
