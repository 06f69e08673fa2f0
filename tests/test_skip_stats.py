"""Skip-connection statistics against float64 references recomputed from the blocks' own modules."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tiny_models
import torch
from torch import nn

from seelike.analyses.skip import ratio_and_cosine, skip_statistics
from seelike.models.families import analysis_support

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")


def tiny_vit(**kw) -> nn.Module:
    return tiny_models.tiny_vit(**{"depth": 3, **kw})


def test_ratio_and_cosine_known():
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    f = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    r, c = ratio_and_cosine(z, f, z + f)
    assert r[0].item() == 5.0 and r[1].item() == np.inf and np.isnan(r[2].item())
    assert c[0].item() == pytest.approx(5 / np.sqrt(9 + 25))
    assert np.isnan(c[1].item()) and np.isnan(c[2].item())
    assert r.dtype == torch.float64


@torch.no_grad()
def vit_reference(model: nn.Module, x: torch.Tensor):
    """Per block, (B, N) ratios and cosines for both sublayers, block by block in float64."""
    out = {}
    h = model._pos_embed(model.patch_embed(x))
    h = model.norm_pre(model.patch_drop(h))
    for i, blk in enumerate(model.blocks):
        z = h.double()
        f = blk.ls1(blk.attn(blk.norm1(h))).double()
        s = z + f
        out[(i, "attn")] = (
            z.norm(dim=-1) / f.norm(dim=-1),
            (s * f).sum(-1) / (s.norm(dim=-1) * f.norm(dim=-1)),
        )
        h = h + blk.ls1(blk.attn(blk.norm1(h)))
        z = h.double()
        f = blk.ls2(blk.mlp(blk.norm2(h))).double()
        s = z + f
        out[(i, "mlp")] = (
            z.norm(dim=-1) / f.norm(dim=-1),
            (s * f).sum(-1) / (s.norm(dim=-1) * f.norm(dim=-1)),
        )
        h = h + blk.ls2(blk.mlp(blk.norm2(h)))
    return out


@pytest.mark.parametrize("kw", [{}, {"reg_tokens": 2, "init_values": 0.1}])
def test_vit_matches_reference(kw):
    model = tiny_vit(**kw)
    x = torch.randn(5, 3, 32, 32)
    stats = skip_statistics(model, [(x[:2], None), (x[2:], None)], n_images=4)
    assert stats.n_images == 4
    df = stats.to_frame()
    ref = vit_reference(model, x[:4])
    n_tok = model.num_prefix_tokens + 16
    assert len(df) == 3 * 2 * n_tok
    for (b, branch), (r, c) in ref.items():
        sub = df[(df.block == b) & (df.branch == branch)].sort_values("token")
        np.testing.assert_allclose(sub["ratio_mean"], r.mean(0).numpy(), rtol=1e-5)
        np.testing.assert_allclose(sub["cosine_mean"], c.mean(0).numpy(), rtol=1e-4, atol=1e-6)
        # per token, over the 4 images: SD / √n
        np.testing.assert_allclose(sub["ratio_se"], r.std(0).numpy() / 2.0, rtol=1e-4)
    types = df[(df.block == 0) & (df.branch == "attn")].sort_values("token")["token_type"].tolist()
    expected = ["cls"] + ["register"] * kw.get("reg_tokens", 0) + ["patch"] * 16
    assert types == expected
    assert (df["n_inf"] == 0).all() and (df["ratio_n"] == 4).all()


def test_zeroed_branches_give_inf_not_nan():
    model = tiny_vit(init_values=1.0)
    for blk in model.blocks:
        nn.init.zeros_(blk.ls1.gamma)  # attention branch is exactly 0
    model.blocks[1].ls2.gamma.data.zero_()
    df = skip_statistics(model, [torch.randn(3, 3, 32, 32)]).to_frame()
    att = df[df.branch == "attn"]
    assert np.isinf(att["ratio_mean"]).all() and (att["n_inf"] == 3).all()
    assert (att["ratio_n"] == 0).all()
    assert att["cosine_mean"].isna().all() and (att["cosine_n_undefined"] == 3).all()
    mlp = df[df.branch == "mlp"]
    assert np.isinf(mlp[mlp.block == 1]["ratio_mean"]).all()
    assert np.isfinite(mlp[mlp.block != 1]["ratio_mean"]).all()
    assert not df["ratio_mean"].isna().any()


@torch.no_grad()
def test_resnet_matches_reference():
    """BasicBlock resnet with `x += shortcut` in place: the branch must be read before the add."""
    torch.manual_seed(0)
    model = timm.create_model(
        "resnet18", pretrained=False, num_classes=0, zero_init_last=False
    ).eval()
    x = torch.randn(3, 3, 32, 32)
    df = skip_statistics(model, [x]).to_frame()
    assert len(df) == 8 and (df.token_type == "spatial").all() and (df.branch == "residual").all()
    h = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    k = 0
    for s in range(1, 5):
        for blk in getattr(model, f"layer{s}"):
            f = blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(h)))))
            z = blk.downsample(h) if blk.downsample is not None else h
            zz, ff = z.double(), f.double()
            ratio = zz.norm(dim=1) / ff.norm(dim=1)
            ss = zz + ff
            cos = (ss * ff).sum(1) / (ss.norm(dim=1) * ff.norm(dim=1))
            row = df[df.block == k].iloc[0]
            assert row["ratio_mean"] == pytest.approx(ratio.mean().item(), rel=1e-5)
            # pooled: each image's positions together, the SE over the 3 images of their mean ratio
            per_image = ratio.flatten(1).mean(1)
            assert row["ratio_se"] == pytest.approx(per_image.std().item() / 3**0.5, rel=1e-4)
            assert row["cosine_mean"] == pytest.approx(cos.mean().item(), rel=1e-4)
            assert row["ratio_n"] == ratio.numel()
            h = torch.relu(z + f)
            k += 1
    assert np.isfinite(df["ratio_mean"]).all() and np.isfinite(df["cosine_mean"]).all()
    # timm's default zero-init of the last BN makes every branch 0 at init: ratio inf, flagged, no NaN
    zero = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    dz = skip_statistics(zero, [x]).to_frame()
    assert np.isinf(dz["ratio_mean"]).all() and (dz["n_inf"] > 0).all()


def test_resnetv2_runs_and_refuses_generic():
    model = timm.create_model(
        "resnetv2_50", pretrained=False, num_classes=0, layers=(1, 1, 1, 1)
    ).eval()
    df = skip_statistics(model, [torch.randn(2, 3, 32, 32)]).to_frame()
    assert len(df) == 4 and np.isfinite(df["ratio_mean"]).all()
    with pytest.raises(ValueError, match="skip.models"):
        skip_statistics(nn.Sequential(nn.Conv2d(3, 3, 1)), [torch.randn(1, 3, 4, 4)])
    with pytest.raises(ValueError, match="empty"):
        skip_statistics(tiny_vit(), [])


# ---------------------------------------------------------------- every family with readable residual blocks
def _mixer(arch: str, **kw) -> nn.Module:
    from timm.models import mlp_mixer as mm

    if arch.startswith("resmlp"):
        kw.update(block_layer=mm.ResBlock, norm_layer=mm.Affine)
    m = mm._create_mixer(
        arch, pretrained=False, img_size=32, patch_size=8, num_blocks=2, embed_dim=32, **kw
    )
    # MlpMixer's patch embedding is `stem`, not `patch_embed`: its built input size is told through the config
    m.pretrained_cfg = {**m.pretrained_cfg, "input_size": (3, 32, 32)}
    return m


_VIT_KW = {
    "pretrained": False,
    "img_size": 32,
    "patch_size": 8,
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
}
_SWIN_KW = {
    "img_size": 64,
    "window_size": 4,
    "embed_dim": 24,
    "depths": (1, 1),
    "num_heads": (1, 1),
}
# name → (builder, input size, module (relative to the block) whose input is the block's first residual sum, where
# the model has one: the model's own intermediate sum for the "branches" chain)
TINY = {
    "vit": (
        lambda: timm.create_model("vit_tiny_patch16_224", **_VIT_KW, init_values=0.1),
        32,
        None,
    ),
    "beit": (
        lambda: timm.create_model("beit_base_patch16_224", **_VIT_KW, init_values=0.1),
        32,
        None,
    ),
    "cait": (lambda: timm.create_model("cait_xxs24_224", **_VIT_KW, depth_token_only=1), 32, None),
    "xcit": (
        lambda: timm.create_model("xcit_nano_12_p16_224", **_VIT_KW, cls_attn_layers=1),
        32,
        None,
    ),
    "resnet": (lambda: timm.create_model("resnet18", pretrained=False), 32, None),
    "efficientnet": (lambda: timm.create_model("efficientnet_b0", pretrained=False), 32, None),
    "convnext": (
        lambda: timm.create_model("convnext_atto", pretrained=False, depths=(1, 1, 1, 1)),
        64,
        None,
    ),
    "swin": (
        lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **_SWIN_KW),
        64,
        "norm2",
    ),
    "swinv2": (
        lambda: timm.create_model("swinv2_tiny_window8_256", pretrained=False, **_SWIN_KW),
        64,
        "mlp",  # post-norm: x + norm1(attn(x)), then x + norm2(mlp(x))
    ),
    "mixer": (lambda: _mixer("mixer_s32_224"), 32, "norm2"),
    "resmlp": (lambda: _mixer("resmlp_12_224", mlp_ratio=4), 32, "norm2"),
    "regnety": (lambda: timm.create_model("regnety_002", pretrained=False), 64, None),
    "regnetx": (lambda: timm.create_model("regnetx_002", pretrained=False), 64, None),
}


def tiny_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A tiny random-init model with every 1-D parameter (LayerScale / gamma, norm weights, biases) drawn at
    random: the init values (1e-5 LayerScales, zero-init last norms, ones) would let a branch read before its
    scale, or a zero branch, pass the sum check by accident."""
    build, size, _ = TINY[name]
    torch.manual_seed(0)
    model = build().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim <= 1:
                sign = torch.randint(0, 2, p.shape, generator=g) * 2 - 1
                p.copy_((torch.rand(p.shape, generator=g) + 0.5) * sign)
    return model, torch.randn(3, 3, size, size, generator=g)


@torch.no_grad()
def capture(model: nn.Module, x: torch.Tensor, mid: str | None):
    """Through the taps skip_statistics reads: per residual unit its input, every tap's activation (copies, in
    float64, taken as they fire), the `sum` tap of CNN units, and the model's own first intermediate sum."""
    from seelike.analyses.skip import _plan
    from seelike.models.families import family_of
    from seelike.models.taps import discover_taps, record_taps

    fam = family_of(model)
    taps = discover_taps(model)
    units = _plan(fam, taps)
    names = {u.name for u in units}
    read = {t.name for u in units for t in u.taps.values()}
    extra = [
        t
        for t in taps
        if t.kind == "sum" and t.name.rsplit(".", 1)[0] in names and t.name not in read
    ]
    got: dict[str, dict[str, torch.Tensor]] = {u.name: {} for u in units}
    role = {t.name: (u.name, r) for u in units for r, t in u.taps.items()}
    role.update({t.name: (t.name.rsplit(".", 1)[0], "sum") for t in extra})
    mods = dict(model.named_modules())
    hooks = []
    for u in units:
        hooks.append(mods[u.name].register_forward_pre_hook(
            lambda _m, a, n=u.name: got[n].__setitem__("input", a[0].double().clone())
        ))  # fmt: skip
        if mid is not None:
            inner = u.taps["end"].module_path if "end" in u.taps else u.name
            hooks.append(mods[f"{inner}.{mid}"].register_forward_pre_hook(
                lambda _m, a, n=u.name: got[n].__setitem__("mid", a[0].double().clone())
            ))  # fmt: skip

    def cb(tap, t):
        n, r = role[tap.name]
        got[n][r] = t.double().clone()

    try:
        with record_taps(model, [t for u in units for t in u.taps.values()] + extra, cb):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return fam, taps, units, got


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b.reshape(a.shape)).norm() / b.norm())


def _sublayers(fam, u, got):
    """[(branch name, z, f, s, tap of f)] of one unit, from the captured tensors, in float64."""
    out = []
    if fam.residual == "sublayers":
        z = got["input"]
        for b, s in fam.residual_pairs:
            out.append((b, z, got[b], got[s], u.taps[b]))
            z = got[s]
    elif fam.residual == "unit":
        z = got.get("shortcut", got["input"])
        out.append(("residual", z, got["branch"], z + got["branch"], u.taps["branch"]))
    else:
        z = got.get("shortcut", got["input"])
        for i, name in enumerate(u.branch_names):
            f = got[f"f{i}"]
            z = z.reshape(f.shape)
            out.append((name, z, f, z + f, u.taps[f"f{i}"]))
            z = z + f
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_sums_hold_and_statistics_match_float64(name):
    model, x = tiny_model(name)
    fam, taps, units, got = capture(model, x, TINY[name][2])
    assert units, f"{name}: no residual unit"
    assert analysis_support(fam.name, taps, "skip") is None
    for u in units:
        g = got[u.name]
        subs = _sublayers(fam, u, g)
        assert [s[0] for s in subs] == u.branch_names
        # z + f(z) = the model's own sum, for every sublayer of every block
        for branch, z, f, s, _ in subs:
            assert _rel(z + f, s) < 1e-5, (u.name, branch)
            # a branch, not a zero
            assert float(f.norm()) > 1e-3 * float(z.norm()), (u.name, branch)
        if fam.residual == "branches":
            end = g["end"]
            assert _rel(subs[-1][3], end) < 1e-5, u.name
            if (
                "mid" in g
            ):  # the model's own first sum (Swin: the input of norm2, after the reshape)
                assert _rel(subs[0][3], g["mid"]) < 1e-5, u.name
        if "sum" in g:  # ResNet unit: the input of its final activation
            assert _rel(subs[-1][3], g["sum"]) < 1e-5, u.name
    df = skip_statistics(model, [x]).to_frame()
    assert np.isfinite(df["ratio_mean"]).all() and np.isfinite(df["cosine_mean"]).all()
    assert (df["ratio_mean"] > 0).all() and df["cosine_mean"].between(-1, 1).all()
    assert df["sublayer"].nunique() == sum(len(u.branch_names) for u in units)
    # independent float64 recomputation of every sublayer's ratio and cosine from the captured tensors
    for u in units:
        for branch, z, f, s, tap in _sublayers(fam, u, got[u.name]):
            c = 1 if tap.layout == "nchw" else -1  # channel axis
            ratio = z.norm(dim=c) / f.norm(dim=c)
            cos = (s * f).sum(c) / (s.norm(dim=c) * f.norm(dim=c))
            rows = df[(df.unit == u.name) & (df.branch == branch)].sort_values("token")
            if tap.layout == "tokens" and u.per_token:  # per token, averaged over images
                assert len(rows) == z.shape[1]
                np.testing.assert_allclose(rows["ratio_mean"], ratio.mean(0).numpy(), rtol=1e-5)
                np.testing.assert_allclose(
                    rows["cosine_mean"], cos.mean(0).numpy(), rtol=1e-4, atol=1e-6
                )
            else:  # pooled over positions and images
                assert len(rows) == 1 and rows["token_type"].item() == "spatial"
                assert rows["ratio_mean"].item() == pytest.approx(ratio.mean().item(), rel=1e-5)
                assert rows["cosine_mean"].item() == pytest.approx(
                    cos.mean().item(), rel=1e-4, abs=1e-6
                )
                assert rows["ratio_n"].item() == ratio.numel()


def test_token_types_follow_the_taps():
    """CaiT's and XCiT's patch blocks run before the CLS token is added: every token there is a patch."""
    for name in ("cait", "xcit"):
        model, x = tiny_model(name)
        df = skip_statistics(model, [x]).to_frame()
        assert (df["token_type"] == "patch").all() and df["token"].max() == 15
    model, x = tiny_model("beit")
    df = skip_statistics(model, [x]).to_frame()
    first = df[df.sublayer == 0].sort_values("token")["token_type"].tolist()
    assert first == ["cls"] + ["patch"] * 16


def test_a_wrong_sum_is_an_error_naming_the_block():
    """A block whose output is not its identity path plus its branches raises, never a wrong number."""
    from seelike.analyses.skip import ResidualSumError

    model, x = tiny_model("convnext")
    blk = model.stages[1].blocks[0]
    h = blk.register_forward_hook(lambda _m, _i, o: o * 1.5)
    try:
        with pytest.raises(ResidualSumError, match=r"stages\.1\.blocks\.0"):
            skip_statistics(model, [x])
    finally:
        h.remove()
    model, x = tiny_model("beit")  # a sum tap that is not z + f(z)
    h = model.blocks[1].norm2.register_forward_pre_hook(lambda _m, a: (a[0] * 2,))
    try:
        with pytest.raises(ResidualSumError, match=r"blocks\.1.*'attn'"):
            skip_statistics(model, [x])
    finally:
        h.remove()


@pytest.mark.parametrize("arch", ["vgg11", "densenet121"])
def test_no_readable_residual_is_refused(arch):
    from seelike.models.families import model_structure

    s = model_structure({"arch": arch})
    why = analysis_support(s.family, s.taps, "skip")
    assert why is not None and "residual" in why and s.family in why
    assert analysis_support("generic", (), "skip") is not None


def test_refused_at_run_time_too():
    from timm.models.densenet import _create_densenet

    torch.manual_seed(0)
    model = _create_densenet(
        "densenet121", growth_rate=8, block_config=(1, 1, 1, 1), pretrained=False
    ).eval()
    with pytest.raises(ValueError, match=r"timm_stages.*skip\.models"):
        skip_statistics(model, [torch.randn(2, 3, 32, 32)])


# ------------------------------------------------------------------------------------------- standard errors
def _acc_of(ratios: np.ndarray, pooled: bool):
    """An `_Acc` fed `ratios` (B, P) image by image in two batches, as `_SkipReader.acc` feeds it (pooled:
    (B·P, 1) rows, image-major)."""
    from seelike.analyses.skip import _Acc

    b = ratios.shape[0]
    acc = _Acc.zeros(1 if pooled else ratios.shape[1])
    for part in (ratios[: b // 2], ratios[b // 2 :]):
        r = torch.from_numpy(part.reshape(-1, 1) if pooled else part)
        acc.add(r, torch.zeros_like(r), torch.zeros_like(r), torch.zeros_like(r), images=len(part))
    return acc


def _ratio_se_reference(ratios: np.ndarray) -> float:
    """SE over images of Σ finite / #finite (all positions pooled), written from the ratio-estimator
    linearisation with plain loops: n/(n-1) · Σᵢ (Sᵢ - R Nᵢ)² / (Σ Nᵢ)²."""
    s = [sum(v for v in row if math.isfinite(v)) for row in ratios.tolist()]
    k = [sum(1 for v in row if math.isfinite(v)) for row in ratios.tolist()]
    n, r = len(s), sum(s) / sum(k)
    dev = sum((si - r * ki) ** 2 for si, ki in zip(s, k, strict=True))
    return math.sqrt(n / (n - 1) * dev / sum(k) ** 2)


def test_ratio_se_pooled_matches_float64_reference_with_undefined_positions():
    rng = np.random.default_rng(0)
    ratios = rng.gamma(3.0, 1.0, size=(9, 6))
    # 0/0 ratios are left out, so the images weigh unequally
    ratios[1, 2] = ratios[4, 0] = ratios[4, 5] = np.nan
    acc = _acc_of(ratios, pooled=True)
    assert acc.ratio_se()[0] == pytest.approx(_ratio_se_reference(ratios), rel=1e-10)
    # per token (one finite ratio per image): SD / √n of each token's ratios
    tok = rng.gamma(3.0, 1.0, size=(7, 3))
    np.testing.assert_allclose(
        _acc_of(tok, pooled=False).ratio_se(), tok.std(0, ddof=1) / math.sqrt(7), rtol=1e-10
    )


def test_ratio_se_invariants():
    rng = np.random.default_rng(1)
    ratios = rng.gamma(2.0, 1.5, size=(6, 4))
    base = _acc_of(ratios, pooled=True).ratio_se()[0]
    # identical images: nothing varies between images
    same = _acc_of(np.repeat(ratios[:1], 6, 0), pooled=True).ratio_se()[0]
    assert same <= 1e-12 * ratios.mean()
    # every image 3 times: SE × sqrt((n - 1) / (3n - 1))
    rep = _acc_of(np.tile(ratios, (3, 1)), pooled=True).ratio_se()[0]
    assert rep == pytest.approx(base * math.sqrt(5 / 17), rel=1e-10)
    # one image (two pooled positions): undefined
    from seelike.analyses.skip import _Acc

    one = _Acc.zeros(1)
    r = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    one.add(r, r, r, r, images=1)
    assert np.isnan(one.ratio_se()[0])
