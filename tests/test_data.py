"""Sample lists and sources: seeded, ordered, hashed; clear errors on bad dataset configs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seelike.data.loader import make_loader, select
from seelike.data.samples import (
    SORTED_WARNING,
    build_samples,
    meta_path,
    read_samples,
    sample_list_meta,
    samples_hash,
    write_samples,
)
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
    assert all(i.startswith(s + "/") for i, s in zip(df.id, df.split, strict=True))


def test_sorted_order_keeps_the_source_order_and_warns(tmp_path, caplog):
    _write_folder(tmp_path / "flat", classes=("c", "a", "b"), per=4)
    cfg = {"source": "imagefolder", "root": str(tmp_path / "flat"), "test_fraction": 1.0}
    source_ids = [r[0] for r in open_source(cfg).rows()]
    with caplog.at_level("WARNING", logger="seelike.data.samples"):
        shuffled = build_samples(cfg, 0)
    assert not caplog.records  # the default (shuffled) is silent
    assert shuffled.equals(
        build_samples({**cfg, "order": "shuffled"}, 0)
    )  # the default is today's behaviour
    assert shuffled["id"].tolist() != source_ids and sorted(shuffled["id"]) == sorted(source_ids)
    with caplog.at_level("WARNING", logger="seelike.data.samples"):
        srt = build_samples({**cfg, "order": "sorted"}, 0)
    assert srt["id"].tolist() == source_ids == sorted(source_ids)  # a/0..3, b/0..3, c/0..3
    assert srt["label"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert srt.equals(
        build_samples({**cfg, "order": "sorted"}, 1)
    )  # the seed plays no part in the order
    assert [r.message for r in caplog.records] == [SORTED_WARNING] * 2  # once per sorted list
    assert "biased" in SORTED_WARNING and "consecutive" in SORTED_WARNING
    # the seeded split is the same under both orders; max_test keeps a prefix of the sorted list
    d = build_samples({**DIGITS, "order": "sorted", "max_test": 30}, 0)
    full = build_samples(DIGITS, 0)
    assert set(d[d.split == "train"]["id"]) == set(full[full.split == "train"]["id"])
    test_ids = d[d.split == "test"]["id"].tolist()
    assert (
        test_ids
        == sorted(full[full.split == "test"]["id"], key=lambda i: int(i.split("/")[1]))[:30]
    )
    with pytest.raises(ValueError, match="shuffled.*sorted"):
        build_samples({**DIGITS, "order": "random"}, 0)


def test_sample_list_meta_records_hash_and_order(tmp_path):
    for order in ("shuffled", "sorted"):
        df = build_samples({**DIGITS, "order": order, "max_test": 40}, 0)
        path = tmp_path / f"{order}.csv"
        write_samples(df, path)
        meta = sample_list_meta(path)
        assert meta["samples_hash"] == samples_hash(path) and meta["order"] == order
        assert meta["seed"] == 0 and meta["n_images"] == len(df)
        assert meta["splits"]["test"] == 40
        assert ("warning" in meta) == (order == "sorted")
    assert sample_list_meta(tmp_path / "shuffled.csv")["samples_hash"] != samples_hash(
        tmp_path / "sorted.csv"
    )
    # a list without a sidecar: its hash, order unknown; a sidecar of another list: refused
    meta_path(tmp_path / "shuffled.csv").unlink()
    assert sample_list_meta(tmp_path / "shuffled.csv") == {
        "samples_hash": samples_hash(tmp_path / "shuffled.csv"),
        "order": "unknown",
    }
    meta_path(tmp_path / "sorted.csv").rename(meta_path(tmp_path / "shuffled.csv"))
    with pytest.raises(RuntimeError, match="rebuild the sample list"):
        sample_list_meta(tmp_path / "shuffled.csv")


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
    xs, ys = zip(*make_loader(df, DIGITS, dc, split="test", n_images=12, batch_size=5), strict=True)
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


def test_a_truncated_image_is_named_by_the_samples_check_and_by_the_loader(tmp_path):
    """One truncated JPEG in an image folder: verify_images (the samples rule) refuses with its path, and a loader
    that still meets it names the file instead of a bare `OSError: Truncated File Read`."""
    from PIL import Image

    from seelike.data.sources import ImageReadError, open_source, verify_images

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / c / f"{i}.jpg"
            )
    bad = tmp_path / "b" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    source = open_source({"source": "imagefolder", "root": str(tmp_path)})
    ids = [r[0] for r in source.rows()]
    with pytest.raises(ImageReadError, match=r"1 of 4 listed images .* \['b/1.jpg"):
        verify_images(source, ids)
    assert source.open("a/0.jpg").size == (32, 32)
    with pytest.raises(ImageReadError, match=rf"{bad}.*cannot be decoded.*replace or remove"):
        source.open("b/1.jpg")
