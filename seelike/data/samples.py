"""The sample list: a fixed, seeded, ordered table of images (id, label, split) that every model sees.

Its content hash travels into every downstream output, so caches made from different lists are refused.
`write_samples` also writes a sidecar `<csv>.meta.json` (hash, order, seed, counts); `sample_list_meta` reads it
back for the metadata of every output made from the list.

Order (`order:` of a dataset entry): `shuffled` (default) permutes each split with the seed; `sorted` keeps the
source's own order (an image folder: sorted class folders, then sorted file names) to match an external
computation image for image. Sorted order puts one class into consecutive minibatches: minibatch estimates
(minibatch CKA, anything averaged per batch) are then biased, so building such a list logs a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seelike.data.sources import open_source
from seelike.io import atomic_write, sha256_file

COLUMNS = ["id", "label", "split"]
ORDERS = ("shuffled", "sorted")
META_SUFFIX = ".meta.json"
SORTED_WARNING = (
    "sample list in sorted (source) order: each class fills consecutive rows, so minibatches hold one or a few "
    "classes and minibatch estimates (minibatch CKA, per-batch statistics) are biased; use order: shuffled "
    "unless an external computation must be matched image for image"
)

log = logging.getLogger(__name__)


def sample_order(cfg: dict[str, Any]) -> str:
    """The `order` of a dataset config (default `shuffled`); an unknown value is an error naming the choices."""
    order = cfg.get("order", "shuffled")
    if order not in ORDERS:
        raise ValueError(f"dataset order must be one of {list(ORDERS)}, got {order!r}")
    return order


def _test_share(n_unsplit: int, cfg: dict[str, Any]) -> int:
    """How many of `n_unsplit` images without a split of their own go to the test split (`test_fraction`)."""
    return round(n_unsplit * float(cfg.get("test_fraction", 0.25)))


def split_counts(splits: Iterable[str | None], cfg: dict[str, Any]) -> dict[str, int]:
    """Images per split of the sample list `build_samples` makes from source rows with these `splits` (None:
    no split of its own), counted without reading an image: the unsplit rows divided by `test_fraction`, then
    `max_train` / `max_test` applied. Always has `train` and `test` (possibly 0); other splits keep their counts.
    """
    sizes: dict[Any, int] = {}
    for split in splits:
        sizes[split] = sizes.get(split, 0) + 1
    unsplit = sizes.pop(None, 0)
    n_test = _test_share(unsplit, cfg)
    sizes["test"] = sizes.get("test", 0) + n_test
    sizes["train"] = sizes.get("train", 0) + unsplit - n_test
    for split, key in (("train", "max_train"), ("test", "max_test")):
        if cfg.get(key) is not None:
            sizes[split] = min(sizes[split], int(cfg[key]))
    return sizes


def build_samples(cfg: dict[str, Any], seed: int) -> pd.DataFrame:
    """Sample list for one dataset config.

    Sources without their own split get a seeded, stratified-by-shuffle split with `test_fraction`.
    Within each split the order is a seeded permutation (`order: shuffled`, the default) or the source's own order
    (`order: sorted`, logged as a warning: see `SORTED_WARNING`), then `max_train` / `max_test` truncate it, so
    the first N test rows are always the same N images for a given seed (with `sorted`: the first classes).
    """
    order = sample_order(cfg)
    rows = open_source(cfg).rows()
    df = pd.DataFrame(rows, columns=COLUMNS)
    rng = np.random.default_rng(seed)
    if df["split"].isna().any():
        unsplit = df.index[df["split"].isna()].to_numpy()
        perm = rng.permutation(unsplit)
        n_test = _test_share(len(perm), cfg)
        df.loc[perm[:n_test], "split"] = "test"
        df.loc[perm[n_test:], "split"] = "train"
    # every row has its split now: the counts are the splits' sizes after max_train / max_test
    sizes = split_counts(df["split"], cfg)
    parts = []
    for split in ("train", "test"):
        part = df[df["split"] == split]
        if order == "shuffled":
            part = part.iloc[rng.permutation(len(part))]
        parts.append(part.iloc[: sizes[split]])
    other = df[~df["split"].isin(["train", "test"])]
    out = pd.concat(parts + [other], ignore_index=True)
    if (out["split"] == "test").sum() == 0:
        raise ValueError("the sample list has no test images; raise max_test or test_fraction")
    if order == "sorted":
        log.warning(SORTED_WARNING)
    out = out[COLUMNS]
    out.attrs["order"] = order
    out.attrs["seed"] = int(seed)
    return out


def meta_path(path: str | Path) -> Path:
    """The sidecar of a sample list: `<csv>.meta.json`."""
    path = Path(path)
    return path.with_name(path.name + META_SUFFIX)


def write_samples(df: pd.DataFrame, path: str | Path, order: str | None = None) -> None:
    """Write the list (CSV) and its sidecar `<csv>.meta.json`: samples_hash, order, seed, image counts per split.

    `order` defaults to what `build_samples` recorded in `df.attrs` (else `shuffled`)."""
    order = order or df.attrs.get("order", "shuffled")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False)
    meta = {
        "samples_hash": samples_hash(path),
        "order": order,
        "seed": df.attrs.get("seed"),
        "n_images": len(df),
        "splits": {str(k): int(v) for k, v in df["split"].value_counts(sort=False).items()},
    }
    if order == "sorted":
        meta["warning"] = SORTED_WARNING
    with atomic_write(meta_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def sample_list_meta(path: str | Path) -> dict[str, Any]:
    """What every output made from a sample list records of it: at least `samples_hash` and `order`
    (`shuffled` / `sorted`), plus `seed`, `n_images` and `splits` (and `warning` for sorted order).

    Read from the sidecar `write_samples` writes. A list without a sidecar (written before it existed, or by hand)
    gets its hash and `order: "unknown"`; a sidecar whose hash is not the list's (the CSV was replaced) is an
    error rather than a wrong record."""
    h = samples_hash(path)
    side = meta_path(path)
    if not side.exists():
        return {"samples_hash": h, "order": "unknown"}
    meta = json.loads(side.read_text())
    if meta.get("samples_hash") != h:
        raise RuntimeError(
            f"{side} records sample-list hash {meta.get('samples_hash')!r} but {path} hashes to {h!r}; "
            "rebuild the sample list (snakemake --forcerun samples)"
        )
    return meta


def read_samples(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id": str, "label": int, "split": str})


def samples_hash(path: str | Path) -> str:
    """Content hash of a sample list (first 16 hex digits of its SHA-256)."""
    return sha256_file(path)[:16]
