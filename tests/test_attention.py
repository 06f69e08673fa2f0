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
from tiny_models import tiny_vit


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
    for blk, xin in zip(model.blocks, blocks_in, strict=True):
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
    se = df.pivot(index="block", columns="head", values="se_distance_px").to_numpy()
    np.testing.assert_allclose(se, ref.std(0, ddof=1) / np.sqrt(6), rtol=1e-3, atol=1e-4)
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
    grams = [torch.stack([gram(a), gram(b)]) for a, b in zip(cnn, cnn2, strict=True)]
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


# ------------------------------------------------------------------ CaiT talking heads, Swin windows, refusals
def tiny_cait() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "cait_xxs24_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=24,
        num_heads=3,
    ).eval()  # fmt: skip


SWIN_KW = {"window_size": 4, "embed_dim": 24, "depths": (2, 2), "num_heads": (2, 2)}
SWINS = {
    "swin": "swin_tiny_patch4_window7_224",
    "swinv2": "swinv2_tiny_window8_256",
    "swinv2_cr": "swinv2_cr_tiny_224",
}


def tiny_swin(kind: str = "swin", img: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(SWINS[kind], pretrained=False, img_size=img, **SWIN_KW).eval()


def loop_distance(probs, pos_q, pos_k, stride, cls, valid_q=None, valid_k=None) -> float:
    """Mean over queries of sum_k p[q, k]·|pos_q − pos_k| (pixels), by plain loops in float64; keys not
    `valid_k` dropped (drop_renorm) or counted at distance 0 (keep), queries not `valid_q` left out."""
    nq, nk = len(pos_q), len(pos_k)
    valid_q = valid_q or [True] * nq
    valid_k = valid_k or [True] * nk
    tot, n = 0.0, 0
    for q in range(nq):
        if not valid_q[q]:
            continue
        s = m = 0.0
        for k in range(nk):
            if valid_k[k]:
                w = float(probs[q][k])
                dr, dc = (
                    (pos_q[q][0] - pos_k[k][0]) * stride[0],
                    (pos_q[q][1] - pos_k[k][1]) * stride[1],
                )
                s += w * math.hypot(dr, dc)
                m += w
        tot += s / m if cls == "drop_renorm" else s
        n += 1
    return tot / n


def test_cait_talking_heads_probabilities_and_distances():
    """CaiT: the per-head distribution is softmax(proj_l(logits)) (before proj_w), recomputed here in float64
    from the attention's input; the patch blocks have no prefix token although the model declares one."""
    from seelike.analyses.attention import attention_probabilities, attention_sites

    model = tiny_cait()
    assert model.num_prefix_tokens == 1
    sites = attention_sites(model)
    assert [s.name for s in sites] == ["blocks.0.attn", "blocks.1.attn"]  # not blocks_token_only
    assert all(s.talking_heads for s in sites)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    inputs: list[torch.Tensor] = []
    hooks = [s.module.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for s in sites]
    with torch.no_grad(), attention_probabilities(model) as got:
        model(x)
    for h in hooks:
        h.remove()
    centres = [(r, c) for r in range(4) for c in range(4)]
    res = attention_distances(model, [x], cls="keep")
    df = res.to_frame()
    assert res.prefix_tokens == [0, 0]
    for i, (s, xin) in enumerate(zip(sites, inputs, strict=True)):
        at, y = s.module, xin.double()
        b, n, _ = y.shape
        qkv = (
            (y @ at.qkv.weight.double().T).reshape(b, n, 3, at.num_heads, -1).permute(2, 0, 3, 1, 4)
        )
        logits = (qkv[0] * at.scale) @ qkv[1].transpose(-2, -1)
        mixed = logits.permute(0, 2, 3, 1) @ at.proj_l.weight.double().T + at.proj_l.bias.double()
        ref = torch.softmax(mixed.permute(0, 3, 1, 2), -1)
        (probs, _), = got[i]  # fmt: skip
        assert probs.shape == (2, 3, 16, 16)
        torch.testing.assert_close(probs.double(), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 16), rtol=0, atol=1e-5)
        for h in range(3):
            want = np.mean(
                [
                    loop_distance(ref[j, h].tolist(), centres, centres, (8, 8), "keep")
                    for j in range(2)
                ]
            )
            got_h = df[(df["block"] == i) & (df["head"] == h)]["mean_distance_px"].item()
            assert got_h == pytest.approx(want, rel=1e-5)


def test_cait_head_subsets_refused():
    with pytest.raises(NotAnAttentionModelError, match="talking-heads"):
        head_outputs(tiny_cait(), torch.randn(2, 3, 32, 32))


def _window_call(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = getattr(blk, "_attn", None) or blk._shifted_window_attn
    return f(x)


@pytest.mark.parametrize("kind", list(SWINS))
@pytest.mark.parametrize("img", [64, 56])  # 56: maps of 14 and 7 are padded to whole windows
def test_window_geometry_matches_timm_partition(kind, img):
    """Tag every position of a block's input map with its (row, col) and read where timm's shift + pad +
    partition puts it: the tokens the attention module receives must sit at `window_geometry`'s positions."""
    from seelike.analyses.attention import _block_window, attention_sites
    from seelike.models.geometry import window_geometry

    model = tiny_swin(kind, img)
    sites = attention_sites(model)
    assert [s.name.rsplit(".", 3)[0] for s in sites] == [
        sites[0].name.split(".")[0] + f".{k}" for k in (0, 0, 1, 1)
    ]
    assert len({s.name for s in sites}) == 4
    shifted = []
    for s, hw in zip(sites, [(img // 4, img // 4)] * 2 + [(img // 8, img // 8)] * 2, strict=True):
        x = torch.zeros(1, *hw, 24 * (1 if hw[0] == img // 4 else 2))
        x[0, :, :, 0] = torch.arange(hw[0])[:, None] + 1.0
        x[0, :, :, 1] = torch.arange(hw[1])[None, :] + 1.0
        seen: list[torch.Tensor] = []
        h = s.module.register_forward_pre_hook(
            lambda _m, a, seen=seen: seen.append(a[0][..., :2] - 1)
        )
        with torch.no_grad():
            _window_call(s.block, x)
        h.remove()
        window, shift = _block_window(s)
        shifted.append(any(shift))
        geom = window_geometry(hw, window, shift, (img / hw[0], img / hw[1]))
        np.testing.assert_array_equal(seen[0].long().numpy(), geom.positions)
        # every position of the map is exactly one window token
        pos = geom.positions[geom.valid]
        assert len(pos) == hw[0] * hw[1] == len({tuple(p) for p in pos.tolist()})
    assert shifted == [False, True, False, True]


@pytest.mark.parametrize("kind", list(SWINS))
def test_shifted_windows_mask_exactly_the_wrapped_pairs(kind):
    """In a shifted block (no padding), the pairs timm masks are exactly those whose true positions are not
    inside one window extent (a key that wrapped around the map), and they get ~0 probability."""
    from seelike.analyses.attention import _block_window, attention_probabilities, attention_sites
    from seelike.models.geometry import window_geometry

    model = tiny_swin(kind)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), attention_probabilities(model) as got:
        model(x)
    for s, ((probs, hw),) in zip(attention_sites(model), got, strict=True):
        window, shift = _block_window(s)
        geom = window_geometry(hw, window, shift, (64 / hw[0], 64 / hw[1]))
        d = geom.positions[:, :, None, :] - geom.positions[:, None, :, :]
        wrapped = (np.abs(d[..., 0]) >= window[0]) | (np.abs(d[..., 1]) >= window[1])
        assert wrapped.any() == any(shift)
        mask = s.block.attn_mask
        if any(shift):
            np.testing.assert_array_equal(mask.numpy() != 0, wrapped)
        p = probs.reshape(2, geom.num_windows, -1, *probs.shape[-2:])
        if wrapped.any():
            assert p.permute(0, 2, 1, 3, 4)[..., torch.as_tensor(wrapped)].abs().max() < 1e-20
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=0, atol=1e-5)


def swin_reference(model, x, cls) -> np.ndarray:
    """(blocks, heads) mean attention distance from the definition: loops over windows, the cyclic shift undone
    by hand ((i + s) mod H), padding tokens dropped as queries and treated by `cls` as keys."""
    from seelike.analyses.attention import _block_window, attention_probabilities, attention_sites

    sites = attention_sites(model)
    with torch.no_grad(), attention_probabilities(model) as got:
        model(x)
    img_h, img_w = x.shape[-2:]
    out = []
    for s, ((probs, (gh, gw)),) in zip(sites, got, strict=True):
        (wh, ww), (sh, sw) = _block_window(s)
        nh, nw = -(-gh // wh), -(-gw // ww)
        stride = (img_h / gh, img_w / gw)
        p = probs.double().reshape(len(x), nh * nw, s.num_heads, wh * ww, wh * ww)
        per_head = []
        for h in range(s.num_heads):
            per_img = []
            for b in range(len(x)):
                tot, nq = 0.0, 0
                for a, c in itertools.product(range(nh), range(nw)):
                    pos, ok = [], []
                    for u, v in itertools.product(range(wh), range(ww)):
                        i, j = a * wh + u, c * ww + v
                        ok.append(i < gh and j < gw)
                        pos.append(((i + sh) % gh, (j + sw) % gw))
                    n_ok = sum(ok)
                    tot += n_ok * loop_distance(
                        p[b, a * nw + c, h].tolist(), pos, pos, stride, cls, ok, ok
                    )
                    nq += n_ok
                per_img.append(tot / nq)
            per_head.append(np.mean(per_img))
        out.append(per_head)
    return np.array(out)


@pytest.mark.parametrize(
    "kind,img,cls",
    [("swin", 64, "drop_renorm"), ("swinv2", 64, "drop_renorm"), ("swin", 56, "drop_renorm"),
     ("swin", 56, "keep"), ("swinv2_cr", 56, "drop_renorm")],
)  # fmt: skip
def test_swin_distances_match_loop_reference(kind, img, cls):
    model = tiny_swin(kind, img)
    x = torch.randn(3, 3, img, img, generator=torch.Generator().manual_seed(6))
    res = attention_distances(model, [x[:2], x[2:]], cls=cls)
    df = res.to_frame()
    assert res.n_images == 3 and len(df) == 4 * 2 and df["module"].nunique() == 4
    got = df.pivot(index="block", columns="head", values="mean_distance_px").to_numpy()
    np.testing.assert_allclose(got, swin_reference(model, x, cls), rtol=1e-5)
    geo = res.geometry()
    assert [g["stride_px"] for g in geo] == [(4.0, 4.0)] * 2 + [(8.0, 8.0)] * 2
    assert [any(g["shift"]) for g in geo] == [False, True, False, True]


def test_window_distance_one_hot_wrapped_key():
    """A query at the top-left of a shifted map's last window that looks at a key which wrapped around: the
    distance is the true one across the map, not the distance inside the window."""
    from seelike.analyses.attention import window_attention_distance
    from seelike.models.geometry import window_geometry

    geom = window_geometry((4, 4), (2, 2), (1, 1), 10)
    attn = torch.eye(4).expand(4, 1, 4, 4).clone().double()[None].reshape(4, 1, 4, 4)
    # last window (a=1, b=1): tokens at rolled (2,2),(2,3),(3,2),(3,3) = true (3,3),(3,0),(0,3),(0,0)
    assert geom.positions[3].tolist() == [[3, 3], [3, 0], [0, 3], [0, 0]]
    attn[3, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # (3,3) looks at (0,0)
    d = window_attention_distance(attn, geom)
    assert d.item() == pytest.approx(math.hypot(30, 30) / 16)


def test_swin_head_subsets_refused():
    with pytest.raises(NotAnAttentionModelError, match="windowed"):
        head_outputs(tiny_swin(), torch.randn(2, 3, 64, 64))


def test_hybrid_vit_grid_is_at_total_stride():
    model = timm.create_model("vit_tiny_r_s16_p8_224", pretrained=False, img_size=64).eval()
    g = token_grid(model, (64, 64))
    assert g.grid_hw == (2, 2) and g.stride_px == (32, 32) and g.patch_px == (32, 32)


TINY_SPECS = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}),
    "cait": ("cait_xxs24_224", {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24}),
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": 64, **SWIN_KW}),
    "swinv2": ("swinv2_tiny_window8_256", {"img_size": 64, **SWIN_KW}),
    "xcit": ("xcit_nano_12_p16_224", {"img_size": 32, "depth": 2}),
    "pit": ("pit_ti_224", {}),
    "pvt": ("pvt_v2_b0", {}),
    "levit": ("levit_128s", {}),
    "convnext": ("convnext_atto", {}),
    "hiera": ("hiera_tiny_224", {}),
}


@pytest.mark.parametrize("key", list(TINY_SPECS))
def test_analysis_support_attention(key):
    from seelike.models.families import analysis_support, model_structure

    arch, kw = TINY_SPECS[key]
    size = kw.get("img_size", 224)
    s = model_structure(
        {"arch": arch, "kwargs": kw, "data_config": {"input_size": [3, size, size]}}
    )
    att = analysis_support(s.family, s.taps, "attention")
    hs = analysis_support(s.family, s.taps, "head_subsets")
    if key == "vit":
        assert s.family == "vit" and att is None and hs is None
    elif (
        key == "cait"
    ):  # distances from the softmax output; head subsets refused (talking heads mix the heads)
        assert s.family == "cait" and att is None and "talking-heads" in hs
    elif key in ("swin", "swinv2"):
        assert s.family == "swin" and att is None and "windowed" in hs
    else:
        assert att is not None and hs is not None
        want = {
            "xcit": "channels", "convnext": "no self-attention", "hiera": "unrolled tokens",
        }.get(key, "pooled, reduced or partitioned")  # fmt: skip
        assert want in att, att


# ------------------------------------------------------------------ standard error over images
def _loop_distance(a: torch.Tensor, gh: int, gw: int, p: float) -> float:
    """One image's, one head's mean distance (drop_renorm, no prefix) by plain loops in float64."""
    centres = [((r + 0.5) * p, (c + 0.5) * p) for r in range(gh) for c in range(gw)]
    rows = [
        sum(w * math.dist(centres[q], centres[k]) for k, w in enumerate(a[q].tolist()))
        / float(a[q].sum())
        for q in range(gh * gw)
    ]
    return sum(rows) / len(rows)


def _accumulate(attn: torch.Tensor, gh: int, gw: int, p: float, step: int = 3):
    """Per-head table of `attn` (B, H, N, N) reduced batch by batch, as the collector's hooks do."""
    from seelike.analyses.attention import AttentionDistances

    acc = AttentionDistances(["b0"], [attn.shape[1]], "drop_renorm", token_grid_stub(gh, gw, p))
    for i in range(0, len(attn), step):
        acc.add(0, mean_attention_distance(attn[i : i + step], (gh, gw), p, 0))
        acc.n_images += len(attn[i : i + step])
    return acc.to_frame()


def token_grid_stub(gh: int, gw: int, p: float):
    from seelike.models.geometry import TokenGrid

    return TokenGrid(grid_hw=(gh, gw), patch_px=(p, p), stride_px=(p, p), img_hw=(gh * p, gw * p),
                     num_prefix_tokens=0)  # fmt: skip


def test_distance_se_over_images_matches_float64_reference():
    g = torch.Generator().manual_seed(3)
    gh, gw, p, heads, n = 3, 3, 8.0, 2, 11
    attn = torch.softmax(torch.randn(n, heads, 9, 9, generator=g, dtype=torch.float64) * 3, -1)
    df = _accumulate(attn, gh, gw, p)
    ref = np.array(
        [[_loop_distance(attn[i, h], gh, gw, p) for h in range(heads)] for i in range(n)]
    )
    mean = ref.sum(0) / n
    sd = np.sqrt(((ref - mean) ** 2).sum(0) / (n - 1))
    np.testing.assert_allclose(df["mean_distance_px"], mean, rtol=1e-10)
    np.testing.assert_allclose(df["se_distance_px"], sd / math.sqrt(n), rtol=1e-8)


def test_distance_se_invariants():
    g = torch.Generator().manual_seed(4)
    gh, gw, p, n = 3, 4, 16.0, 5
    attn = torch.softmax(torch.randn(n, 2, 12, 12, generator=g, dtype=torch.float64) * 2, -1)
    base = _accumulate(attn, gh, gw, p)
    # the same image n times: no spread, no standard error
    same = _accumulate(attn[:1].expand(n, -1, -1, -1), gh, gw, p)
    assert (same["se_distance_px"] <= 1e-9 * same["mean_distance_px"]).all()
    # every image 4 times: the same mean, SE shrinks as sqrt((n - 1) / (4n - 1)) (ddof 1 over 4n images)
    rep = _accumulate(attn.repeat(4, 1, 1, 1), gh, gw, p)
    np.testing.assert_allclose(rep["mean_distance_px"], base["mean_distance_px"], rtol=1e-12)
    np.testing.assert_allclose(
        rep["se_distance_px"], base["se_distance_px"] * math.sqrt((n - 1) / (4 * n - 1)), rtol=1e-8
    )
    # one image: no SE
    assert _accumulate(attn[:1], gh, gw, p)["se_distance_px"].isna().all()
