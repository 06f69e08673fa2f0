"""Model acquisition through timm's real loading code: checkpoints (incl. safetensors), the hub offline,
training determinism, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from seelike.data.samples import build_samples, write_samples
from seelike.io import read_json
from seelike.models.acquire import acquire_model
from seelike.models.load import ModelConfigError, create_model, load_model

TINY_VIT = {
    "img_size": 32,
    "patch_size": 8,
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "num_classes": 10,
}


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_checkpoint_source_loads_weights(tmp_path, fmt):
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT).eval()
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    spec = {
        "source": "checkpoint",
        "arch": "vit_tiny_patch16_224",
        "kwargs": TINY_VIT,
        "path": str(path),
    }
    info = acquire_model("ck", spec, tmp_path / "m" / "model.json", tmp_path / "m" / "taps.csv")
    assert info["family"] == "vit" and info["num_taps"] == 2 + 7 * 2
    model, info2 = load_model(tmp_path / "m" / "model.json")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    assert info2["checkpoint_sha256"] == info["checkpoint_sha256"]
    # timm's own fused-attention setting is kept: the attention analyses unfuse their modules themselves
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == [
        m.fused_attn for m in ref.modules() if hasattr(m, "fused_attn")
    ]


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(ModelConfigError, match="does not exist"):
        create_model(
            {"source": "checkpoint", "arch": "resnet18", "path": str(tmp_path / "missing.pth")}
        )
    path = tmp_path / "wrong.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(ModelConfigError, match="does not fit"):
        create_model({"source": "checkpoint", "arch": "resnet18", "path": str(path)})


def test_unknown_architecture_is_named():
    with pytest.raises(ModelConfigError, match="unknown timm architecture 'resnet_51'"):
        create_model({"source": "train", "arch": "resnet_51"})


def test_hub_offline_says_how_to_supply_weights(monkeypatch):
    # conftest forces HF_HUB_OFFLINE=1; the hub call must fail fast with advice, not hang or download.
    with pytest.raises(ModelConfigError, match="source: checkpoint"):
        create_model({"source": "timm", "arch": "vit_base_patch32_224.augreg_in21k"})


def test_train_source_is_deterministic(tmp_path):
    ds = {
        "source": "digits",
        "image_size": 16,
        "test_fraction": 0.25,
        "max_train": 96,
        "max_test": 48,
    }
    write_samples(build_samples(ds, 0), tmp_path / "s.csv")
    spec = {
        "source": "train",
        "arch": "resnet18",
        "kwargs": {"num_classes": 10, "channels": [8, 8, 16, 16]},
        "data_config": {
            "input_size": [3, 16, 16],
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "crop_pct": 1.0,
        },
        "train": {
            "dataset": "d",
            "epochs": 2,
            "lr": 0.003,
            "weight_decay": 0.0,
            "batch_size": 32,
            "seed": 3,
        },
    }
    infos = [
        acquire_model(
            "r",
            spec,
            tmp_path / f"r{i}" / "model.json",
            tmp_path / f"r{i}" / "taps.csv",
            str(tmp_path / "s.csv"),
            ds,
        )
        for i in range(2)
    ]
    assert infos[0]["weights_sha256"] == infos[1]["weights_sha256"]
    m = read_json(tmp_path / "r0" / "model.json")
    assert m["data_config"]["input_size"] == [3, 16, 16]
    assert 0.0 <= m["metrics"]["test_accuracy"] <= 1.0 and m["metrics"]["train_images"] == 96
    model, _ = load_model(tmp_path / "r0" / "model.json")
    assert not model.training


def test_crop_flip_augmentation_works_when_the_input_is_larger_than_the_images():
    """CIFAR's 32 px images upsampled to a 64 px model input: the crop happens after the resize."""
    from PIL import Image

    from seelike.models.train import _train_transform

    cfg = {
        "input_size": [3, 64, 64],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
    }
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    torch.manual_seed(0)
    outs = [_train_transform(cfg, "crop_flip")(img) for _ in range(4)]
    assert all(o.shape == (3, 64, 64) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:]), (
        "augmentation must vary between draws"
    )
