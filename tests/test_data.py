"""Sample lists and sources: seeded, ordered, hashed; clear errors on bad dataset configs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seelike.data.loader import make_loader, select
from seelike.data.samples import build_samples, read_samples, samples_hash, write_samples
from seelike.data.sources import DatasetConfigError, open_source

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DIGITS = {"source": "digits", "image_size": 32, "test_fraction": 0.25}


def test_digits_sample_list_is_seeded_and_complete(tmp_path):
    a, b, c = build_samples(DIGITS, 0), build_samples(DIGITS, 0), build_samples(DIGITS, 1)
    assert list(a.columns) == ["id", "label", "split"]
    assert a.equals(b) and not a.equals(c)
    assert len(a) == 1797 and a["id"].is_unique
    assert (a["split"] == "test").sum() == round(1797 * 0.25)
    write_samples(a, tmp_path / "a.csv")
    write_samples(b, tmp_path / "b.csv")
    write_samples(c, tmp_path / "c.csv")
    assert (
        samples_hash(tmp_path / "a.csv")
        == samples_hash(tmp_path / "b.csv")
        != samples_hash(tmp_path / "c.csv")
    )
    assert read_samples(tmp_path / "a.csv").to_dict("list") == a.to_dict("list")


def test_max_counts_truncate_a_fixed_prefix():
    full = build_samples(DIGITS, 0)
    small = build_samples({**DIGITS, "max_test": 50, "max_train": 10}, 0)
    assert small["split"].value_counts().to_dict() == {"test": 50, "train": 10}
    assert (
        small[small.split == "test"]["id"].tolist()
        == full[full.split == "test"]["id"].tolist()[:50]
    )


def _write_folder(root: Path, classes=("b_cls", "a_cls"), per=3, splits=None):
    for split in splits or [None]:
        for c in classes:
            d = root / split / c if split else root / c
            d.mkdir(parents=True)
            for i in range(per):
                Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(d / f"{i}.jpg")


def test_imagefolder_flat_and_split_layouts(tmp_path):
    _write_folder(tmp_path / "flat")
    src = open_source({"source": "imagefolder", "root": str(tmp_path / "flat")})
    assert src.classes == ["a_cls", "b_cls"]
    rows = src.rows()
    assert len(rows) == 6 and {r[1] for r in rows if r[0].startswith("b_cls")} == {1}
    assert src.open(rows[0][0]).mode == "RGB"
    _write_folder(tmp_path / "split", splits=["train", "test"])
    df = build_samples(
        {
            "source": "imagefolder",
            "root": str(tmp_path / "split"),
            "split_dirs": {"train": "train", "test": "test"},
        },
        0,
    )
    assert df.split.value_counts().to_dict() == {"train": 6, "test": 6}
    assert all(i.startswith(s + "/") for i, s in zip(df.id, df.split))


def test_missing_image_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetConfigError, match="does not exist.*datasets.<name>.root"):
        open_source({"source": "imagefolder", "root": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetConfigError, match="no class folders"):
        open_source({"source": "imagefolder", "root": str(tmp_path / "empty")})
    with pytest.raises(DatasetConfigError, match="unknown dataset source"):
        open_source({"source": "mnist"})


def _idx(path: Path, arr: np.ndarray):
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I", 0x800 | arr.ndim))
        fh.write(struct.pack(">" + "I" * arr.ndim, *arr.shape))
        fh.write(arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for img, lab, n in (
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 7),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 5),
    ):
        _idx(tmp_path / f"{img}.gz", rng.integers(0, 255, (n, 28, 28)))
        _idx(tmp_path / f"{lab}.gz", rng.integers(0, 10, (n,)))
    df = build_samples({"source": "fashion_mnist", "root": str(tmp_path), "image_size": 32}, 0)
    assert df.split.value_counts().to_dict() == {"train": 7, "test": 5}
    im = open_source({"source": "fashion_mnist", "root": str(tmp_path), "image_size": 32}).open(
        "test/2"
    )
    assert im.size == (32, 32) and im.mode == "RGB"
    with pytest.raises(DatasetConfigError, match="dataset-fashion-mnist"):
        open_source({"source": "fashion_mnist", "root": str(tmp_path / "missing")})


def test_loader_order_and_model_preprocessing(tmp_path):
    df = build_samples({**DIGITS, "max_test": 20}, 0)
    dc = {
        "input_size": [3, 24, 24],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
    }
    xs, ys = zip(*make_loader(df, DIGITS, dc, split="test", n_images=12, batch_size=5))
    assert [len(x) for x in xs] == [5, 5, 2] and xs[0].shape[1:] == (3, 24, 24)
    assert [int(v) for y in ys for v in y] == select(df, "test", 12)["label"].tolist()
    assert float(xs[0].min()) >= -1.0 - 1e-6 and float(xs[0].max()) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="requested"):
        select(df, "test", 21)


@pytest.mark.skipif(
    not (SHARED / "imagenet-sample").is_dir(), reason="../shared/data/imagenet-sample absent"
)
def test_real_imagenet_sample_folder():
    df = build_samples(
        {"source": "imagefolder", "root": str(SHARED / "imagenet-sample"), "test_fraction": 1.0}, 0
    )
    assert len(df) == 1000 and df["label"].nunique() == 1000
    assert (df.split == "test").all()
