"""Per-model loaders over a sample list: same images, same order, each model's own preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from seelike.data.samples import read_samples, samples_hash
from seelike.data.sources import ImageSource, open_source

__all__ = [
    "SampleDataset",
    "eval_transform",
    "make_loader",
    "read_samples",
    "samples_hash",
    "select",
]


def select(
    samples: pd.DataFrame, split: str | None = None, n_images: int | None = None
) -> pd.DataFrame:
    """Rows of one split (None: all) in sample-list order, the first `n_images` of them."""
    rows = samples if split is None else samples[samples["split"] == split]
    if n_images is not None:
        if n_images > len(rows):
            raise ValueError(
                f"{n_images} images requested from split {split!r} but the sample list has {len(rows)}; "
                "lower the image count or raise the dataset's max_test/max_train"
            )
        rows = rows.iloc[:n_images]
    return rows


def eval_transform(data_config: dict[str, Any]):
    """timm's evaluation transform for a model's resolved data config."""
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(
        **{k: data_config[k] for k in keys if k in data_config}, is_training=False
    )


class SampleDataset(Dataset):
    def __init__(self, source: ImageSource, ids: Sequence[str], labels: Sequence[int], transform):
        self.source, self.ids, self.labels, self.transform = (
            source,
            list(ids),
            list(labels),
            transform,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.transform(self.source.open(self.ids[i])), self.labels[i]


def make_loader(
    samples_csv: str | Path | pd.DataFrame,
    dataset_cfg: dict[str, Any],
    data_config: dict[str, Any],
    split: str | None = "test",
    n_images: int | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    shuffle_seed: int | None = None,
    transform=None,
    source: ImageSource | None = None,
) -> DataLoader:
    """Batches of (images (B,3,H,W), labels) in sample-list order (or a seeded shuffle for training)."""
    samples = samples_csv if isinstance(samples_csv, pd.DataFrame) else read_samples(samples_csv)
    rows = select(samples, split, n_images)
    ds = SampleDataset(
        source or open_source(dataset_cfg),
        rows["id"].tolist(),
        rows["label"].astype(int).tolist(),
        transform or eval_transform(data_config),
    )
    gen = None
    if shuffle_seed is not None:
        gen = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=gen,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
