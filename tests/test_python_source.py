"""`source: python` models: any nn.Module from an import path (torchvision built in-process, a lab's own module),
its data config from the entry, taps by module-name patterns, and clear errors for every bad input."""

from __future__ import annotations

import pytest
import torch
import torchvision
import yaml
from conftest import REPO, prepare_workdir, run_snakemake
from PIL import Image
from python_models import SmallCNN

from seelike.data.loader import eval_transform
from seelike.io import read_json
from seelike.models.acquire import acquire_model
from seelike.models.load import (
    ModelConfigError,
    build_skeleton,
    check_python_spec,
    create_model,
    load_model,
    match_tap_patterns,
    module_names,
    resolve_data_config,
    unmatched_pattern_error,
)
from seelike.models.taps import discover_taps

DIGITS_PRE = {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
TV_RESNET = {
    "source": "python",
    "factory": "torchvision.models:resnet18",
    "kwargs": {"num_classes": 10, "weights": None},
    "data_config": {**DIGITS_PRE, "interpolation": "bicubic"},
    "taps": ["layer?", "avgpool"],
}
SMALL_CNN = {
    "source": "python",
    "factory": "python_models:small_cnn",
    "kwargs": {"width": 4},
    "data_config": DIGITS_PRE,
    "taps": ["stem", "stage?", "head"],
}


# ------------------------------------------------------------------------------------------- torchvision
def test_torchvision_model_with_its_data_config_and_tap_patterns(tmp_path):
    model = create_model(TV_RESNET)
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 10
    # the entry's data config, defaults for what it leaves out (crop_pct 1.0), as the loaders read it
    cfg = resolve_data_config(model)
    assert (
        cfg["input_size"] == [3, 32, 32] and cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.25] * 3
    )
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 1.0
    x = eval_transform(cfg)(Image.new("RGB", (48, 40), (255, 255, 255)))
    assert tuple(x.shape) == (3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25
    # taps: the patterns travel on the module; each matches in module order ('?' stays within a name)
    assert model.seelike_tap_patterns == ["layer?", "avgpool"]
    assert match_tap_patterns(module_names(model), model.seelike_tap_patterns) == {
        "layer?": ["layer1", "layer2", "layer3", "layer4"],
        "avgpool": ["avgpool"],
    }
    assert (
        len(match_tap_patterns(module_names(model), ["layer*"])["layer*"]) > 4
    )  # '*' crosses dots
    # a state dict file (a training script's {"state_dict": ...}, DataParallel prefixes) loads strictly
    ref = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "r.pth"
    )
    loaded = create_model({**TV_RESNET, "path": str(tmp_path / "r.pth")}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x))


def test_skeletons_are_weightless():
    skel = build_skeleton(TV_RESNET)
    assert {p.device.type for p in skel.parameters()} == {"meta"}
    assert skel.seelike_tap_patterns == TV_RESNET["taps"]
    assert skel.pretrained_cfg["input_size"] == (3, 32, 32)
    assert {
        p.device.type for p in build_skeleton({**TV_RESNET, "_device": "cpu"}).parameters()
    } == {"cpu"}
    timm_skel = build_skeleton(
        {"source": "timm", "arch": "resnet18.a1_in1k", "kwargs": {"num_classes": 3}}
    )
    assert {p.device.type for p in timm_skel.parameters()} == {"meta"}
    assert timm_skel.fc.out_features == 3 and not hasattr(timm_skel, "seelike_tap_patterns")


# ------------------------------------------------------------------------------------------- a lab's module
def test_custom_module_acquired_and_reloaded(tmp_path):
    info = acquire_model(
        "mine", SMALL_CNN, tmp_path / "m" / "model.json", tmp_path / "m" / "taps.csv"
    )
    recorded = read_json(tmp_path / "m" / "model.json")
    assert recorded == info
    assert (
        info["source"] == "python" and info["arch"] == info["factory"] == "python_models:small_cnn"
    )
    assert info["kwargs"] == {"width": 4} and info["taps"] == SMALL_CNN["taps"]
    assert (
        info["data_config"]["input_size"] == [3, 32, 32] and info["data_config"]["crop_pct"] == 1.0
    )
    assert (tmp_path / "m" / info["weights"]).is_file() and info["num_taps"] > 0
    model, info2 = load_model(tmp_path / "m" / "model.json")
    assert isinstance(model, SmallCNN) and not model.training and info2 == info
    assert model.seelike_tap_patterns == SMALL_CNN["taps"]
    # the acquired weights are the factory's, built under seed 0 (a random init is the same on every run)
    torch.manual_seed(0)
    ref = SmallCNN(4).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    # with a state dict file, those weights are the ones acquired and reloaded
    ref = SmallCNN(4)
    for p in ref.parameters():
        p.data.normal_()
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    spec = {**SMALL_CNN, "path": str(tmp_path / "w.pt")}
    info = acquire_model("mine", spec, tmp_path / "p" / "model.json", tmp_path / "p" / "taps.csv")
    assert info["path"] == str((tmp_path / "w.pt").resolve()) and info["strict"] is True
    model, _ = load_model(tmp_path / "p" / "model.json")
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_discover_taps_follows_the_patterns():
    # the modules the patterns match, in firing order, whatever their kind (a Sequential stage, a Linear)
    model = create_model(SMALL_CNN)
    assert [t.name for t in discover_taps(model)] == ["stem", "stage1", "stage2", "head"]


# ------------------------------------------------------------------------------------------- bad inputs
BAD = [
    (
        {"factory": "no_such_lab.nets:build"},
        ["models.bad.factory", "does not import", "No module named 'no_such_lab'", "PYTHONPATH"],
    ),
    (
        {"factory": "torchvision.models:resnet81"},
        [
            "models.bad.factory",
            "has no attribute 'resnet81'",
            "close names: resnet18",
            "fix the name after",
        ],
    ),
    (
        {"factory": "python_models:not_a_model", "kwargs": {}},
        [
            "models.bad.factory",
            "returned a builtins.dict, not a torch.nn.Module",
            "returns the model",
        ],
    ),
    (
        {"taps": ["layer?", "layr*"]},
        [
            "models.bad.taps",
            "'layr*' matches no module",
            "close names: layer",
            "fix or drop the pattern",
        ],
    ),
    (
        {"factory": "torchvision.models.resnet18"},
        [
            "models.bad.factory",
            "not an import path 'package.module:function'",
            "torchvision.models:resnet18",
        ],
    ),
    (
        {"kwargs": {"num_classes": 10, "depth": 18}},
        ["models.bad.factory", "unexpected keyword argument 'depth'", "fix models.bad.kwargs"],
    ),
    ({"data_config": {"input_size": [3, 32, 32]}}, ["models.bad.data_config", "['mean', 'std']"]),
    ({"arch": "resnet18"}, ["models.bad.arch", "drop models.bad.arch"]),
]


@pytest.mark.parametrize("edit, parts", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_inputs_name_the_key_and_the_fix(edit, parts):
    spec = {**TV_RESNET, **edit}
    checks = [lambda: check_python_spec("bad", spec)]  # the dry run's
    if "arch" not in edit:  # a dry-run check only: model.json records arch = factory
        checks.append(lambda: create_model({**spec, "name": "bad"}))  # the model rule's
    for check in checks:
        with pytest.raises(ModelConfigError) as err:
            check()
        for part in parts:
            assert part in str(err.value), str(err.value)


def test_unmatched_pattern_message():
    names = ["stem", "stem.0", "stage1", "stage1.0", "stage2", "head"]
    msg = unmatched_pattern_error("stages*", names, "models.x.taps")
    assert msg.startswith("models.x.taps: pattern 'stages*' matches no module")
    assert "close names: stem, stem.0, stage1, stage1.0, stage2)" in msg  # in the model's order
    # nothing close: the top-level modules are listed instead
    assert "its top-level modules: stem, stage1, stage2, head" in unmatched_pattern_error(
        "zz", names, "k"
    )


def test_bad_factory_fails_the_dry_run(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "python_model.yaml").read_text())
    cfg["models"]["tv_resnet"]["factory"] = "torchvision.models:resnet81"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(
        prepare_workdir(tmp_path / "run", tmp_path / "c.yaml"), "-n", "--cores", "1", check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for part in (
        "models.tv_resnet.factory",
        "has no attribute 'resnet81'",
        "resnet18",
        "fix the name after",
    ):
        assert part in out, out[-3000:]
