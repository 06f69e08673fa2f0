"""Tap discovery on random-weight timm models: counts, order, names, and each tap firing exactly once."""

from __future__ import annotations

import pytest
import timm
import torch

from seelike.models.load import disable_fused_attention
from seelike.models.taps import TapFiringError, discover_taps, record_taps, tap_family

VIT_KINDS = ["norm1", "attn", "attn_res", "norm2", "mlp_hidden", "mlp", "block"]


def fire(model, taps, size=224):
    seen = []
    with (
        record_taps(model, taps, lambda t, x: seen.append((t.name, tuple(x.shape[1:])))),
        torch.no_grad(),
    ):
        model(torch.randn(1, 3, size, size))
    return seen


@pytest.mark.parametrize(
    "name,depth", [("vit_tiny_patch16_224", 12), ("deit_tiny_patch16_224", 12)]
)
def test_vit_taps(name, depth):
    model = disable_fused_attention(timm.create_model(name, pretrained=False)).eval()
    taps = discover_taps(model)
    assert tap_family(model) == "vit"
    assert len(taps) == 1 + 7 * depth + 1
    assert [t.name for t in taps[1:8]] == [f"blocks.0.{k}" for k in VIT_KINDS]
    assert taps[0].name == "embed" and taps[-1].name == "norm"
    seen = fire(model, taps)
    assert [s[0] for s in seen] == [t.name for t in taps]  # forward order, each exactly once
    shapes = dict(seen)
    assert shapes["blocks.0.mlp_hidden"] == (197, 4 * 192) and shapes["blocks.11.block"] == (
        197,
        192,
    )


def test_vit_base_taps():
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    taps = discover_taps(model)
    assert len(taps) == 2 + 7 * 12
    assert [t.name for t in taps] == [s[0] for s in fire(model, taps)]


def test_vit_attn_res_is_block_input_plus_attention_branch():
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, patch_size=8
    ).eval()
    taps = [
        t for t in discover_taps(model) if t.name in ("embed", "blocks.0.attn", "blocks.0.attn_res")
    ]
    got = {}
    with record_taps(model, taps, lambda t, x: got.__setitem__(t.name, x.clone())), torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(got["blocks.0.attn_res"], got["embed"] + got["blocks.0.attn"])


def test_layerscale_branch_is_read_at_ls():
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, init_values=1e-5
    ).eval()
    by_name = {t.name: t for t in discover_taps(model)}
    assert by_name["blocks.0.attn"].module_path == "blocks.0.ls1"
    assert by_name["blocks.0.mlp"].module_path == "blocks.0.ls2"


def test_resnet50_taps():
    model = timm.create_model("resnet50", pretrained=False).eval()
    taps = discover_taps(model)
    assert tap_family(model) == "resnet"
    # stem_conv, stem + 16 bottlenecks × (conv1, conv2, branch, sum, out) + 4 shortcut projections
    assert len(taps) == 2 + 16 * 5 + 4 == 86
    assert [t.name for t in taps[:8]] == ["stem_conv", "stem"] + [
        f"layer1.0.{k}" for k in ("conv1", "conv2", "branch", "shortcut", "sum", "out")
    ]
    seen = fire(model, taps)
    assert [s[0] for s in seen] == [t.name for t in taps]
    assert dict(seen)["layer4.2.out"] == (2048, 7, 7)
    assert dict(seen)["stem_conv"] == (64, 112, 112) and dict(seen)["stem"] == (64, 56, 56)


@pytest.mark.parametrize("arch", ["resnet18", "resnet26d", "resnetv2_50x1_bit", "resnetv2_50"])
def test_stem_conv_is_the_raw_stem_convolution(arch):
    """stem_conv = the stem convolution's output before any norm / activation / pool; stem = what unit 1 reads."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    taps = discover_taps(model)
    assert [t.kind for t in taps[:2]] == ["stem_conv", "stem"]
    assert taps[0].block is None and taps[0].index == 0 and taps[1].index == 1
    x = torch.randn(2, 3, 64, 64)
    got = {}
    with (
        record_taps(model, taps[:2], lambda t, a: got.__setitem__(t.name, a.clone())),
        torch.no_grad(),
    ):
        model(x)
    with torch.no_grad():
        if (
            tap_family(model) == "resnet"
        ):  # conv1 (deep stems: a Sequential ending in a conv) → bn1 → act1 → pool
            conv = model.conv1(x)
            stem = model.maxpool(model.act1(model.bn1(conv)))
        else:  # ResNetV2: stem.conv, then the rest of the stem (pre-activation: pad, pool; else norm too)
            conv = stem = model.stem.conv(x)
            for n, m in model.stem.named_children():
                if n != "conv":
                    stem = m(stem)
    torch.testing.assert_close(got["stem_conv"], conv)
    torch.testing.assert_close(got["stem"], stem)


def test_resnet_sum_is_branch_plus_shortcut_despite_inplace_ops():
    model = timm.create_model("resnet18", pretrained=False).eval()
    keep = ("layer1.0.branch", "layer1.0.sum", "stem")
    taps = [t for t in discover_taps(model) if t.name in keep]
    got = {}
    with record_taps(model, taps, lambda t, x: got.__setitem__(t.name, x.clone())), torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(got["layer1.0.sum"], got["layer1.0.branch"] + got["stem"])


def test_resnetv2_bit_taps():
    model = timm.create_model("resnetv2_50x1_bit", pretrained=False).eval()
    taps = discover_taps(model)
    assert tap_family(model) == "resnetv2"
    # stem_conv, stem + 16 pre-activation units × 7 + 4 shortcut projections + final norm
    assert len(taps) == 2 + 16 * 7 + 4 + 1 == 119
    assert taps[0].name == "stem_conv" and taps[2].name == "stages.0.blocks.0.preact"
    assert [s[0] for s in fire(model, taps)] == [t.name for t in taps]


def test_generic_fallback_and_reused_module_detection():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.act = torch.nn.ReLU()
            self.fc = torch.nn.Linear(4, 2)
            self.pretrained_cfg = {"input_size": (3, 8, 8)}

        def forward(self, x):
            x = self.act(self.conv(x))
            x = self.act(x)  # reused: fires twice
            return self.fc(x.mean((2, 3)))

    model = Tiny()
    with pytest.warns(UserWarning, match="more than once"):
        taps = discover_taps(model)
    assert tap_family(model) == "generic"
    assert [t.name for t in taps] == ["conv", "fc"]
    bad = taps + [type(taps[0])("act", "relu", "act", "output", None, 2)]
    with (
        pytest.raises(TapFiringError, match="fired twice"),
        record_taps(model, bad, lambda t, x: None),
        torch.no_grad(),
    ):
        model(torch.randn(1, 3, 8, 8))


def test_taps_named_keeps_the_order_and_names_the_config_key():
    from seelike.models.taps import taps_named

    taps = discover_taps(timm.create_model("resnet18", pretrained=False, num_classes=10))
    names = [taps[5].name, taps[1].name]
    assert [t.name for t in taps_named(taps, names, "erf.taps.r")] == names
    with pytest.raises(ValueError, match=r"erf\.taps\.r names \['nope'\]: not a tap of this model"):
        taps_named(taps, ["nope", taps[0].name], "erf.taps.r")


def test_hooks_observe_stop_early_and_are_always_removed():
    """`hooks`, the one way analyses observe modules: outputs and positional inputs as they fire, return values
    ignored, `StopForward` ends the forward pass and the block, and no hook outlives the block (also when it
    raises, or when a site is invalid)."""
    from seelike.models.taps import StopForward, hooks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    ref = model(x)
    mods = list(model)

    def registered() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    got = {}
    sites = [
        (mods[0], "output", lambda o: got.__setitem__("out0", o)),
        (mods[2], "input", lambda a: got.__setitem__("in2", a)),
        (mods[1], "output", lambda o: o * 0),  # a return value changes nothing
    ]
    with hooks(sites):
        y = model(x)
        assert registered() == 3
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    torch.testing.assert_close(got["out0"], mods[0](x), rtol=0, atol=0)
    assert isinstance(got["in2"], tuple) and got["in2"][0].shape == (5, 4)
    assert registered() == 0

    after: list[str] = []

    def stop(_o) -> None:
        raise StopForward

    with hooks([(mods[1], "output", stop), (mods[2], "input", lambda a: after.append("ran"))]):
        model(x)
        after.append("block went on")  # not reached: StopForward ends the block
    assert after == [] and registered() == 0

    with pytest.raises(RuntimeError, match="boom"), hooks([(mods[0], "output", lambda o: o)]):
        raise RuntimeError("boom")
    assert registered() == 0
    with (
        pytest.raises(ValueError, match="where must be"),
        hooks([(mods[0], "output", lambda o: o), (mods[1], "inside", lambda o: o)]),
    ):
        pass
    assert registered() == 0
