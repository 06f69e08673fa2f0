"""Image sources, one per `source:` value in a dataset's config, behind one small interface.

A source lists its images as (id, label, split) and opens one by id as an RGB PIL image. Adding a dataset
kind is one `@register("name")` class.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}

_SOURCES: dict[str, Callable[[dict[str, Any]], ImageSource]] = {}


class ImageReadError(OSError):
    """An image of a dataset cannot be decoded (truncated, corrupt, not an image); the message names its path."""


def verify_images(source: ImageSource, image_ids: list[str]) -> None:
    """Decode every listed image once (the samples rule does, so that no job meets a bad file minutes into a
    pass); raises `ImageReadError` naming every file that fails (up to 10)."""
    bad = []
    for image_id in image_ids:
        try:
            source.open(image_id)
        except ImageReadError as e:
            bad.append(f"{image_id} ({e.__cause__})")
    if bad:
        raise ImageReadError(
            f"{len(bad)} of {len(image_ids)} listed images under {str(getattr(source, 'root', ''))!r} cannot be "
            f"decoded: {bad[:10]}; replace or remove these files, then rerun the samples rule"
        )


class DatasetConfigError(ValueError):
    """A dataset entry in the config cannot be used (missing folder, bad layout)."""


def register(name: str):
    def deco(cls):
        _SOURCES[name] = cls
        return cls

    return deco


def open_source(cfg: dict[str, Any]) -> ImageSource:
    """Build the image source a dataset config names (`source: digits | imagefolder | ...`)."""
    kind = cfg.get("source")
    if kind not in _SOURCES:
        raise DatasetConfigError(
            f"unknown dataset source {kind!r}; choose one of {sorted(_SOURCES)}"
        )
    return _SOURCES[kind](cfg)


class ImageSource:
    """Lists (id, label, split) rows and opens images by id."""

    classes: list[str]

    def rows(self) -> list[tuple[str, int, str | None]]:
        """All images as (id, label, split); split None means "assign by the seeded split fraction"."""
        raise NotImplementedError

    def open(self, image_id: str) -> Image.Image:
        raise NotImplementedError


@register("digits")
class DigitsSource(ImageSource):
    """scikit-learn's 1797 8×8 handwritten digits, upsampled to `image_size` and made RGB (ships offline)."""

    def __init__(self, cfg: dict[str, Any]):
        from sklearn.datasets import load_digits

        d = load_digits()
        self.images = (d.images / 16.0 * 255.0).astype(np.uint8)
        self.labels = d.target.astype(int)
        self.size = int(cfg.get("image_size", 32))
        self.classes = [str(i) for i in range(10)]

    def rows(self):
        return [(f"digits/{i}", int(y), None) for i, y in enumerate(self.labels)]

    def open(self, image_id: str) -> Image.Image:
        i = int(image_id.split("/", 1)[1])
        img = Image.fromarray(self.images[i], mode="L").resize(
            (self.size, self.size), Image.BILINEAR
        )
        return img.convert("RGB")


@register("imagefolder")
class ImageFolderSource(ImageSource):
    """`root/<class>/<image>` (ImageNet val layout), or `root/<split>/<class>/<image>` when split folders
    exist (the CIFAR-10 JPEG folders: train/, test/). Class index = sorted class-folder order."""

    def __init__(self, cfg: dict[str, Any]):
        self.root = Path(cfg["root"]).expanduser()
        if not self.root.is_dir():
            raise DatasetConfigError(
                f"image folder {str(self.root)!r} does not exist; set datasets.<name>.root to a folder laid out "
                "as <root>/<class>/<image> (or <root>/<split>/<class>/<image>)"
            )
        split_dirs: dict[str, str] = cfg.get("split_dirs") or {}
        present = {s: d for s, d in split_dirs.items() if (self.root / d).is_dir()}
        self.split_roots = {s: self.root / d for s, d in present.items()} or {None: self.root}
        first = next(iter(self.split_roots.values()))
        self.classes = sorted(p.name for p in first.iterdir() if p.is_dir())
        if not self.classes:
            raise DatasetConfigError(
                f"no class folders under {str(first)!r}; expected <root>/<class>/<image files>"
            )

    def rows(self):
        # names as strings (os.scandir, no Path per file): a dry run lists ImageNet's 50,000 files in ~0.1 s
        index = {c: i for i, c in enumerate(self.classes)}
        out = []
        for split, root in self.split_roots.items():
            prefix = os.path.relpath(root, self.root)
            prefix = "" if prefix == "." else prefix + "/"
            with os.scandir(root) as entries:
                class_dirs = sorted(e.name for e in entries if e.is_dir())
            for c in class_dirs:
                if c not in index:
                    raise DatasetConfigError(
                        f"class folder {c!r} in {root} is not in the first split's classes"
                    )
                with os.scandir(root / c) as entries:
                    names = sorted(e.name for e in entries)
                label = index[c]
                out.extend(
                    (f"{prefix}{c}/{name}", label, split)
                    for name in names
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                )
        if not out:
            raise DatasetConfigError(
                f"no images ({sorted(IMAGE_EXTENSIONS)}) under {str(self.root)!r}"
            )
        return out

    def open(self, image_id: str) -> Image.Image:
        path = self.root / image_id
        try:
            with Image.open(path) as im:
                return im.convert("RGB")  # decodes the whole file: a truncated one fails here
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(
                f"image {str(path)!r} cannot be decoded ({type(e).__name__}: {e}); replace or remove the file "
                "(then rerun the samples rule: snakemake --forcerun samples)"
            ) from e


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        magic = struct.unpack(">I", fh.read(4))[0]
        ndim = magic & 0xFF
        shape = struct.unpack(">" + "I" * ndim, fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(shape)


@register("fashion_mnist")
class FashionMnistSource(ImageSource):
    """Fashion-MNIST idx files (Debian `dataset-fashion-mnist`: /usr/share/datasets/fashion-mnist/)."""

    FILES: ClassVar[dict[str, tuple[str, str]]] = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def __init__(self, cfg: dict[str, Any]):
        root = Path(cfg.get("root", "/usr/share/datasets/fashion-mnist")).expanduser()
        self.size = int(cfg.get("image_size", 32))
        self.data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, (img, lab) in self.FILES.items():
            found = [
                root / (n + ext)
                for n in (img, lab)
                for ext in ("", ".gz")
                if (root / (n + ext)).exists()
            ]
            if len(found) != 2:
                raise DatasetConfigError(
                    f"Fashion-MNIST idx files for {split!r} not found in {str(root)!r}; install Debian's "
                    "`dataset-fashion-mnist` or set datasets.<name>.root to the folder holding "
                    f"{img}[.gz] and {lab}[.gz]"
                )
            self.data[split] = (_read_idx(found[0]), _read_idx(found[1]))
        self.classes = [str(i) for i in range(10)]

    def rows(self):
        return [
            (f"{s}/{i}", int(y), s) for s, (_, ys) in self.data.items() for i, y in enumerate(ys)
        ]

    def open(self, image_id: str) -> Image.Image:
        split, i = image_id.split("/")
        img = Image.fromarray(self.data[split][0][int(i)], mode="L")
        return img.resize((self.size, self.size), Image.BILINEAR).convert("RGB")


@register("torchvision")
class TorchvisionSource(ImageSource):
    """torchvision CIFAR-10 / CIFAR-100 (`name: cifar10|cifar100`), downloaded to `root` for users online."""

    def __init__(self, cfg: dict[str, Any]):
        import torchvision.datasets as tvd

        name = cfg.get("name", "cifar10").lower()
        cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}.get(name)
        if cls is None:
            raise DatasetConfigError(
                f"torchvision dataset {name!r} not supported; use cifar10 or cifar100"
            )
        root = Path(cfg.get("root", "data/torchvision")).expanduser()
        try:
            self.sets = {
                s: cls(str(root), train=(s == "train"), download=bool(cfg.get("download", True)))
                for s in ("train", "test")
            }
        except Exception as e:  # network or integrity failure
            raise DatasetConfigError(
                f"could not load torchvision {name} under {str(root)!r} ({e}); with no network, download it "
                "elsewhere into that folder, or point an `imagefolder` dataset at JPEG folders"
            ) from e
        self.classes = list(self.sets["train"].classes)

    def rows(self):
        return [
            (f"{s}/{i}", int(y), s) for s, ds in self.sets.items() for i, y in enumerate(ds.targets)
        ]

    def open(self, image_id: str) -> Image.Image:
        split, i = image_id.split("/")
        return Image.fromarray(self.sets[split].data[int(i)]).convert("RGB")
