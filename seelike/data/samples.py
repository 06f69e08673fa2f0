"""The sample list: a fixed, seeded, ordered table of images (id, label, split) that every model sees.

Its content hash travels into every downstream output, so caches made from different lists are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seelike.data.sources import open_source
from seelike.io import atomic_write, sha256_file

COLUMNS = ["id", "label", "split"]


def build_samples(cfg: dict[str, Any], seed: int) -> pd.DataFrame:
    """Sample list for one dataset config.

    Sources without their own split get a seeded, stratified-by-shuffle split with `test_fraction`.
    Within each split the order is a seeded permutation, then `max_train` / `max_test` truncate it, so
    the first N test rows are always the same N images for a given seed.
    """
    rows = open_source(cfg).rows()
    df = pd.DataFrame(rows, columns=COLUMNS)
    rng = np.random.default_rng(seed)
    if df["split"].isna().any():
        unsplit = df.index[df["split"].isna()].to_numpy()
        perm = rng.permutation(unsplit)
        n_test = round(len(perm) * float(cfg.get("test_fraction", 0.25)))
        df.loc[perm[:n_test], "split"] = "test"
        df.loc[perm[n_test:], "split"] = "train"
    parts = []
    for split, limit in (("train", cfg.get("max_train")), ("test", cfg.get("max_test"))):
        part = df[df["split"] == split]
        part = part.iloc[rng.permutation(len(part))]
        parts.append(part if limit is None else part.iloc[: int(limit)])
    other = df[~df["split"].isin(["train", "test"])]
    out = pd.concat(parts + [other], ignore_index=True)
    if (out["split"] == "test").sum() == 0:
        raise ValueError("the sample list has no test images; raise max_test or test_fraction")
    return out[COLUMNS]


def write_samples(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False)


def read_samples(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "label": int, "split": str})


def samples_hash(path: str | Path) -> str:
    """Content hash of a sample list (first 16 hex digits of its SHA-256)."""
    return sha256_file(path)[:16]
