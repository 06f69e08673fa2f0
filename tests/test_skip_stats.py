"""Skip-connection statistics against float64 references recomputed from the blocks' own modules."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from seelike.analyses.skip import ratio_and_cosine, skip_statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")


def tiny_vit(**kw) -> nn.Module:
    args = {
        "pretrained": False,
        "img_size": 32,
        "patch_size": 8,
        "depth": 3,
        "embed_dim": 24,
        "num_heads": 3,
    }
    args.update(kw)
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", **args).eval()


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
