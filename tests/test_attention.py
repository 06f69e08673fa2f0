"""Mean attention distance: constructed attention maps with known answers, and the streaming collector."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from seelike.analyses.attention import attention_distances, mean_attention_distance
from seelike.analyses.head_subsets import head_outputs
from seelike.models.geometry import (
    NotAnAttentionModelError,
    patch_centres,
    patch_distance_matrix,
    token_grid,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")


def brute_mean_pairwise(gh: int, gw: int, ph: float, pw: float) -> float:
    """Mean Euclidean distance over all ordered (query, key) patch pairs, by plain loops in float64."""
    tot, n = 0.0, 0
    for r1, c1, r2, c2 in itertools.product(range(gh), range(gw), range(gh), range(gw)):
        tot += math.hypot((r1 - r2) * ph, (c1 - c2) * pw)
        n += 1
    return tot / n


def test_patch_centres_and_distances():
    c = patch_centres((2, 3), 16)
    assert c.shape == (6, 2)
    np.testing.assert_allclose(c[0], [8, 8])
    np.testing.assert_allclose(c[5], [24, 40])  # row 1, col 2
    d = patch_distance_matrix((2, 3), (16, 8))
    assert d.shape == (6, 6)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0)
    assert d[0, 5] == pytest.approx(math.hypot(16, 16))  # (0,0)->(1,2): 16 px down, 2*8 px right


@pytest.mark.parametrize("cls", ["drop_renorm", "keep"])
@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_self_attention_is_zero(cls, prefix):
    gh, gw = 3, 4
    n = prefix + gh * gw
    attn = torch.eye(n).expand(2, 3, n, n).clone()
    d = mean_attention_distance(attn, (gh, gw), 16, prefix, cls)
    assert d.shape == (2, 3) and d.dtype == torch.float64
    torch.testing.assert_close(d, torch.zeros(2, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    "grid,patch", [((14, 14), 16), ((3, 5), 8), ((7, 7), 32), ((4, 2), (6, 10))]
)
def test_uniform_attention_is_mean_pairwise_distance(grid, patch):
    n = grid[0] * grid[1]
    attn = torch.full((1, 2, n + 1, n + 1), 1.0 / (n + 1), dtype=torch.float64)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    expected = brute_mean_pairwise(grid[0], grid[1], ph, pw)
    d = mean_attention_distance(attn, grid, patch, 1, "drop_renorm")
    torch.testing.assert_close(d, torch.full((1, 2), expected, dtype=torch.float64))
    # keep: CLS holds 1/(n+1) of each row at distance 0
    d_keep = mean_attention_distance(attn, grid, patch, 1, "keep")
    torch.testing.assert_close(
        d_keep, torch.full((1, 2), expected * n / (n + 1), dtype=torch.float64)
    )


def test_uniform_at_224_is_about_116_px():
    """PAPER.md: uniform attention at 224 px (14x14 grid of 16 px) ≈ 116 px."""
    attn = torch.full((1, 1, 196, 196), 1 / 196)
    assert mean_attention_distance(attn, (14, 14), 16).item() == pytest.approx(116, abs=1.5)


@pytest.mark.parametrize("dr,dc", [(0, 1), (1, 0), (2, 1), (-1, 3)])
def test_one_hot_offset(dr, dc):
    """Every query attends to the patch (dr, dc) away (wrapping never used: only queries whose target exists)."""
    gh, gw, p, prefix = 6, 7, 16, 1
    n = prefix + gh * gw
    attn = torch.zeros(1, 1, n, n, dtype=torch.float64)
    attn[..., :prefix, 0] = 1.0  # prefix queries: irrelevant
    offset_px = math.hypot(dr * p, dc * p)
    # a query without a target in the grid attends to itself (distance 0): count them analytically
    n_hit = 0
    for r, c in itertools.product(range(gh), range(gw)):
        q = prefix + r * gw + c
        r2, c2 = r + dr, c + dc
        if 0 <= r2 < gh and 0 <= c2 < gw:
            attn[0, 0, q, prefix + r2 * gw + c2] = 1.0
            n_hit += 1
        else:
            attn[0, 0, q, q] = 1.0
    d = mean_attention_distance(attn, (gh, gw), p, prefix, "drop_renorm")
    assert d.item() == pytest.approx(offset_px * n_hit / (gh * gw), rel=1e-12)


def test_matches_float64_loop_reference_random():
    g = torch.Generator().manual_seed(0)
    gh, gw, prefix, heads = 3, 4, 2, 3
    n = prefix + gh * gw
    attn = torch.softmax(torch.randn(2, heads, n, n, generator=g, dtype=torch.float64) * 2, -1)
    centres = [((r + 0.5) * 8, (c + 0.5) * 8) for r in range(gh) for c in range(gw)]
    for cls in ("drop_renorm", "keep"):
        got = mean_attention_distance(attn, (gh, gw), 8, prefix, cls)
        for b, h in itertools.product(range(2), range(heads)):
            acc = 0.0
            for qi in range(gh * gw):
                row = attn[b, h, prefix + qi, prefix:].tolist()
                denom = sum(row) if cls == "drop_renorm" else 1.0
                acc += (
                    sum(w * math.dist(centres[qi], centres[k]) for k, w in enumerate(row)) / denom
                )
            assert got[b, h].item() == pytest.approx(acc / (gh * gw), rel=1e-10)


def test_all_mass_on_prefix():
    gh, gw, prefix = 2, 2, 1
    attn = torch.zeros(1, 2, 5, 5)
    attn[..., 0] = 1.0  # every query looks only at CLS
    attn[0, 1, 1:, 1:] = (
        0.25  # head 1: uniform over patches (rows then sum to 2; irrelevant for renorm)
    )
    attn[0, 1, 1:, 0] = 0.0
    d = mean_attention_distance(attn, (gh, gw), 10, prefix, "drop_renorm")
    assert math.isnan(d[0, 0].item())  # undefined, not silently 0
    assert d[0, 1].item() == pytest.approx(brute_mean_pairwise(2, 2, 10, 10))
    assert mean_attention_distance(attn, (gh, gw), 10, prefix, "keep")[0, 0].item() == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="prefix tokens"):
        mean_attention_distance(torch.ones(1, 1, 10, 10), (3, 3), 16, 0)
    with pytest.raises(ValueError, match="cls must be"):
        mean_attention_distance(torch.ones(1, 1, 9, 9), (3, 3), 16, 0, cls="mean")


# ------------------------------------------------------------------ streaming collector on tiny timm ViTs
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


@torch.no_grad()
def reference_distances(model: nn.Module, x: torch.Tensor, cls: str) -> np.ndarray:
    """Recompute each block's attention by hand from its qkv projection (float64), then the distance."""
    grid = token_grid(model, x.shape[-2:])
    blocks_in: list[torch.Tensor] = []
    hooks = [
        b.register_forward_pre_hook(lambda _m, a: blocks_in.append(a[0])) for b in model.blocks
    ]
    model(x)
    for h in hooks:
        h.remove()
    out = []
    for blk, xin in zip(model.blocks, blocks_in):
        at = blk.attn
        y = blk.norm1(xin).double()
        w, bias = at.qkv.weight.double(), at.qkv.bias.double()
        qkv = (
            (y @ w.T + bias)
            .reshape(y.shape[0], y.shape[1], 3, at.num_heads, -1)
            .permute(2, 0, 3, 1, 4)
        )
        a = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) * at.head_dim**-0.5, -1)
        g = (grid.grid_hw, grid.patch_px, grid.num_prefix_tokens, cls, grid.stride_px)
        out.append(mean_attention_distance(a, *g).numpy())
    return np.stack(out, 1)  # (B, L, H)


@pytest.mark.parametrize(
    "kw,img",
    [
        ({}, (32, 32)),
        ({"reg_tokens": 4, "no_embed_class": True}, (32, 32)),
        ({"class_token": False, "global_pool": "avg"}, (32, 32)),
        ({"img_size": (24, 40)}, (24, 40)),  # non-square 3x5 grid
    ],
)
@pytest.mark.parametrize("cls", ["drop_renorm", "keep"])
def test_collector_matches_reference(kw, img, cls):
    model = tiny_vit(**kw)
    model.blocks[0].attn.fused_attn = True  # the collector must switch it off itself
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, *img, generator=g)
    batches = [(x[:3], None), (x[3:6], None), (x[6:], None)]
    res = attention_distances(model, batches, cls=cls, n_images=6)
    assert model.blocks[0].attn.fused_attn is True  # restored
    assert res.n_images == 6
    grid = token_grid(model, img)
    assert grid.num_prefix_tokens == model.num_prefix_tokens
    ref = reference_distances(model, x[:6], cls)  # (B, L, H)
    df = res.to_frame()
    assert len(df) == 2 * 3
    got = df.pivot(index="block", columns="head", values="mean_distance_px").to_numpy()
    np.testing.assert_allclose(got, ref.mean(0), rtol=1e-5)
    std = df.pivot(index="block", columns="head", values="std_distance_px").to_numpy()
    np.testing.assert_allclose(std, ref.std(0, ddof=1), rtol=1e-3, atol=1e-4)
    # ranks are a permutation per block, 0 = most local
    for _, grp in df.groupby("block"):
        assert sorted(grp["rank"]) == [0, 1, 2]
        assert grp.sort_values("rank")["mean_distance_px"].is_monotonic_increasing


def test_collector_refuses_cnn():
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    with pytest.raises(NotAnAttentionModelError, match="ViT-family"):
        attention_distances(model, [torch.randn(2, 3, 32, 32)])
    with pytest.raises(NotAnAttentionModelError, match="not a ViT-like"):
        token_grid(model, (32, 32))


def test_collector_empty_batches():
    with pytest.raises(ValueError, match="no images"):
        attention_distances(tiny_vit(), [])


def test_head_outputs_are_proj_input():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    ho = head_outputs(model, x, block=0)
    assert ho.shape == (2, 1 + 16, 3, 8)
    # proj(concat heads) must equal the attention module's output
    got: list[torch.Tensor] = []
    h = model.blocks[0].attn.register_forward_hook(lambda _m, _i, o: got.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    torch.testing.assert_close(model.blocks[0].attn.proj(ho.flatten(2)), got[0])
    with pytest.raises(ValueError, match="out of range"):
        head_outputs(model, x, block=5)


# ------------------------------------------------------------------ head subsets (Fig 5)
def test_group_heads_and_auto_size():
    from seelike.analyses.head_subsets import auto_subset_size, group_heads

    assert group_heads([30.0, 5.0, 20.0, 10.0, 1.0], 2) == [[4, 1], [3, 2], [0]]
    assert auto_subset_size(16) == 4 and auto_subset_size(4) == 1 and auto_subset_size(6) == 2
    with pytest.raises(ValueError, match="finite"):
        group_heads([1.0, float("nan")], 1)


def test_head_subset_cka_matches_minibatch_cka():
    from seelike.analyses.head_subsets import head_subset_cka
    from seelike.cka import gram, minibatch_cka

    model = tiny_vit()
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(6, 3, 32, 32, generator=g) for _ in range(3)]
    cnn = [torch.randn(6, 5, 2, 2, generator=g) for _ in range(3)]  # stand-in CNN activations
    cnn2 = [c**2 for c in cnn]
    groups = [[2], [0, 1]]
    grams = [torch.stack([gram(a), gram(b)]) for a, b in zip(cnn, cnn2)]
    got, se = head_subset_cka(model, xs, grams, groups, with_se=True)
    assert got.shape == se.shape == (2, 2)
    for s, grp in enumerate(groups):
        reps = [head_outputs(model, x)[:, :, grp, :].reshape(6, -1) for x in xs]
        for t, ys in enumerate((cnn, cnn2)):
            assert got[s, t] == pytest.approx(minibatch_cka(reps, ys), abs=1e-6)
            # the jackknife SE: delete one minibatch at a time
            loo = [minibatch_cka(reps[:d] + reps[d + 1 :], ys[:d] + ys[d + 1 :]) for d in range(3)]
            assert se[s, t] == pytest.approx(
                np.sqrt(2 / 3 * np.sum((loo - np.mean(loo)) ** 2)), abs=1e-6
            )
    with pytest.raises(ValueError, match="same sample plan"):
        head_subset_cka(model, xs, [gr[:, :5, :5] for gr in grams], groups)


def test_default_cnn_taps():
    from seelike.analyses.head_subsets import default_cnn_taps

    taps = [{"name": "stem", "kind": "stem"}] + [
        {"name": f"stages.{s}.blocks.{b}.out", "kind": "out"}
        for s, n in enumerate((3, 4, 6, 3))
        for b in range(n)
    ]
    assert default_cnn_taps(taps) == [
        "stages.0.blocks.0.out", "stages.0.blocks.1.out", "stages.0.blocks.2.out",
        "stages.1.blocks.0.out", "stages.1.blocks.1.out",
    ]  # fmt: skip
