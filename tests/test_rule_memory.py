"""Memory regressions of the rules that run a model (issue 11): what each one keeps of a batch's activations.

Each test pins one fix on a tiny random model: no tap activation (nor a view of it) outlives the forward pass
where only a reduction of it is needed, float64 working copies stay bounded, and the numbers do not change.
benchmarks/rule_memory.py measures the peaks at paper scale.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import tiny_models
import torch
from torch import nn

from seelike.analyses import attention, skip
from seelike.analyses.probes import extract_probe_features
from seelike.analyses.receptive_field import _capture, auto_erf_taps, effective_receptive_fields
from seelike.models import geometry
from seelike.models.taps import discover_taps, tap_family

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")


def tiny_vit() -> nn.Module:
    return tiny_models.tiny_vit(num_classes=4)


def tiny_resnet() -> nn.Module:
    return tiny_models.tiny_resnet(num_classes=4)


@pytest.fixture
def record_op(monkeypatch):
    """Patch a torch.Tensor method (or torch function) to record the element count of every tensor it gets."""

    def patch(owner, name: str) -> list[int]:
        seen: list[int] = []
        orig = getattr(owner, name)

        def wrapped(*args, **kw):
            t = args[0] if isinstance(args[0], torch.Tensor) else args[1]
            seen.append(t.numel())
            return orig(*args, **kw)

        monkeypatch.setattr(owner, name, wrapped)
        return seen

    return patch


# ------------------------------------------------------------------------------------------- skip statistics
@pytest.mark.parametrize("make", [tiny_vit, tiny_resnet])
def test_skip_statistics_copies_no_activation_and_bounds_float64(make, monkeypatch, record_op):
    model, x = make(), torch.randn(6, 3, 32, 32)
    before = skip.skip_statistics(model, [x]).to_frame()
    limit = 500
    monkeypatch.setattr(skip, "CHUNK_VALUES", limit, raising=False)
    clones = record_op(torch.Tensor, "clone")
    doubles = record_op(torch.Tensor, "double")
    after = skip.skip_statistics(model, [x]).to_frame()
    assert clones == []  # z, f(z) are read where they fire, before any in-place add: no copies
    per_image = max(np.prod(s) for s in ((17, 24), (64, 8, 8)))  # largest one-image activation here
    assert doubles and max(doubles) <= max(limit, per_image)
    # slicing the batch changes no number
    pd_cols = ["ratio_mean", "ratio_se", "cosine_mean", "norm_z_mean", "norm_f_mean"]
    np.testing.assert_allclose(after[pd_cols].to_numpy(), before[pd_cols].to_numpy(), rtol=1e-12)


def test_skip_statistics_refuses_an_in_place_change_before_use():
    """The statistics read activations by reference: a changed one is an error, never a silent wrong number."""
    model = tiny_vit()

    def clobber(_m, args):
        args[0].add_(
            0
        )  # in place on the block input, after the block's input was held, before attn_res

    h = model.blocks[0].norm1.register_forward_pre_hook(clobber)
    try:
        with pytest.raises(RuntimeError, match="modified in place"):
            skip.skip_statistics(model, [torch.randn(2, 3, 32, 32)])
    finally:
        h.remove()


# ------------------------------------------------------------------------------------------- receptive fields
@pytest.mark.parametrize("make", [tiny_vit, tiny_resnet])
def test_erf_keeps_only_centre_activations(make):
    model = make()
    taps = auto_erf_taps(discover_taps(model), tap_family(model), "post")
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    grid = geometry.token_grid(model, (32, 32)) if hasattr(model, "patch_embed") else None
    with torch.enable_grad():
        got = _capture(model, taps, x, grid)
    for t in taps:
        c = got[t.name]
        assert c.ndim == 2 and c.shape[0] == 3  # (B, C), not a clone of the whole (B, C, H, W) map
        assert c.untyped_storage().nbytes() == c.numel() * c.element_size()


def test_erf_freezes_parameters_during_the_pass_and_restores_them():
    model = tiny_resnet()
    model.fc.weight.requires_grad_(False)  # a frozen one stays frozen
    seen = []
    taps = auto_erf_taps(
        discover_taps(model), "resnet", "post"
    )  # its probe pass runs before the hook
    h = model.layer1.register_forward_hook(
        lambda m, i, o: seen.append(any(p.requires_grad for p in model.parameters()))
    )
    try:
        effective_receptive_fields(model, [torch.randn(2, 3, 32, 32)], taps)
    finally:
        h.remove()
    assert seen == [False]  # no activation is saved for weight gradients
    assert not model.fc.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "fc.weight")


# ------------------------------------------------------------------------------------------- probe features
def test_probe_features_keep_no_activation_past_the_forward(tmp_path):
    """The CLS token (x[:, 0]) and per-token features are copied in the hook: a view would keep each tap's whole
    activation alive (its storage) until the batch is written."""
    model = tiny_vit()
    taps = [t for t in discover_taps(model) if t.kind in ("embed", "block")]
    held: list[tuple[str, int, int]] = []

    def progress(
        _r, _b, _n
    ):  # called after the batch is written, while its feature buffer still exists
        frame = sys._getframe(1)
        while "buf" not in frame.f_locals:  # the stream reports; the buffer lives in the extractor
            frame = frame.f_back
        buf = frame.f_locals["buf"]
        for key, v in buf.items():
            held.append((key, v.untyped_storage().nbytes(), v.numel() * v.element_size()))

    x, y = torch.randn(5, 3, 32, 32), torch.arange(5)
    extract_probe_features(
        model, [(x, y)], 5, tmp_path / "f", taps, token_taps=[taps[-1].name], progress=progress
    )
    kinds = {agg for (_, agg), _, _ in held}
    assert {"cls", "mean_spatial", "token"} <= kinds
    assert [
        (k, s) for k, s, own in held if s != own
    ] == []  # every buffered feature owns just its bytes


# ------------------------------------------------------------------------------------------- attention distance
def test_attention_distance_contracts_bounded_slices(monkeypatch, record_op):
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(7, 3, 17, 17), -1)
    full = attention.mean_attention_distance(attn, (4, 4), 8, num_prefix_tokens=1)
    monkeypatch.setattr(attention, "ATTN_CHUNK_VALUES", 2 * 3 * 16 * 16, raising=False)
    sizes = record_op(torch, "einsum")
    sliced = attention.mean_attention_distance(attn, (4, 4), 8, num_prefix_tokens=1)
    assert (
        sizes and max(sizes) <= 2 * 3 * 16 * 16
    )  # the einsum copies at most two images' maps at once
    torch.testing.assert_close(sliced, full, rtol=1e-12, atol=0)
