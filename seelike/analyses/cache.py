"""The activation cache: ONE streaming forward pass per (model, dataset) that keeps, per minibatch, the
fp32 Gram matrix of every tap — never a dataset's activations, and no activation past its own hook.

Layout of `results/cache/{dataset}/{model}/`:
    meta.json                 format, taps (name, kind, shape), plan (images per repeat, batch size, repeats),
                              sample-list hash, model identity
    grams/r{R}_b{B}.npy       float32 (taps, n(n+1)/2) for repeat R, minibatch B: each tap's batch-centred
                              Gram packed as its upper triangle with the diagonal (seelike.cka.pack_upper)
Storage is taps × repeats × Σ_batches n(n+1)/2 × 4 bytes (README). A run writes into `<out>.partial/` and
renames at the end; an interrupted run resumes from the minibatches already written there. Caches of an
older format are refused with a message to rebuild them.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seelike.analyses.stream import Progress, stream
from seelike.cka import gram, pack_upper, packed_size, unpack_upper
from seelike.data.loader import make_loader, read_samples, select
from seelike.data.samples import samples_hash
from seelike.device import exact_fp32
from seelike.io import atomic_write, read_json, write_json
from seelike.models.taps import Tap, discover_taps, record_taps, tap_record

log = logging.getLogger(__name__)

# 1: full (taps, n, n) Grams and pooled features; 2: packed upper triangles, no pooled features.
CACHE_FORMAT = 2


class CacheMismatchError(ValueError):
    """Two caches (or a cache and a request) come from different sample lists or plans."""


class CacheFormatError(ValueError):
    """A cache was written in another (older) storage format."""


def repeat_rows(
    samples: pd.DataFrame, split: str, n_images: int, repeat: int, seed: int
) -> pd.DataFrame:
    """Images of one CKA repeat: repeat 0 = the first `n_images` of the split in sample-list order; repeat
    r > 0 = a fresh seeded draw without replacement (the paper's 20 × 10,240 protocol)."""
    rows = select(samples, split)
    if n_images > len(rows):
        raise ValueError(
            f"cka.n_images = {n_images} but split {split!r} has only {len(rows)} images; lower cka.n_images "
            "or raise the dataset's max_test"
        )
    if repeat == 0:
        return rows.iloc[:n_images]
    perm = np.random.default_rng([seed, repeat]).permutation(len(rows))[:n_images]
    return rows.iloc[perm]


@exact_fp32()
def build_cache(
    model: torch.nn.Module,
    model_info: dict[str, Any],
    samples_csv: str | Path,
    dataset_cfg: dict[str, Any],
    out_dir: str | Path,
    n_images: int,
    batch_size: int,
    repeats: int = 1,
    seed: int = 0,
    split: str = "test",
    device: torch.device | None = None,
    num_workers: int = 0,
    progress: Progress | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the streaming pass and write the cache directory (see module docstring); `meta.json` also holds
    `extra_meta` (the rule's metadata). `progress(repeat, batch, n_batches)` after each minibatch written
    (`seelike.analyses.stream`); minibatches already in a partial cache are neither rerun nor reported."""
    device = device or torch.device("cpu")
    out_dir = Path(out_dir)
    samples = read_samples(samples_csv)
    plan = {
        "n_images": int(n_images),
        "batch_size": int(batch_size),
        "repeats": int(repeats),
        "seed": int(seed),
        "split": split,
        "samples_hash": samples_hash(samples_csv),
    }
    identity = {
        k: model_info.get(k)
        for k in ("name", "arch", "source", "kwargs", "weights_sha256", "checkpoint_sha256")
    }
    taps = discover_taps(model)
    partial = out_dir.with_name(out_dir.name + ".partial")
    stamp = {"format": CACHE_FORMAT, "plan": plan, "model": identity}
    if partial.exists():
        try:
            old = read_json(partial / "stamp.json")
        except (FileNotFoundError, ValueError):
            old = None
        if old != stamp:
            log.info("discarding stale partial cache %s", partial)
            shutil.rmtree(partial)
    (partial / "grams").mkdir(parents=True, exist_ok=True)
    write_json(partial / "stamp.json", stamp)

    shapes: dict[str, list[int]] = {}
    # One (taps, n(n+1)/2) fp32 buffer per minibatch, filled tap by tap inside the hooks: each activation is
    # reduced to its packed Gram while the forward pass runs and nothing else of it is kept.
    packed: list[torch.Tensor] = []
    slot = {t.name: i for i, t in enumerate(taps)}
    fired: set[str] = set()

    def on_tap(tap: Tap, x: torch.Tensor) -> None:
        shapes.setdefault(tap.name, list(x.shape[1:]))
        fired.add(tap.name)
        # centred, exact fp32 (seelike.cka.gram)
        packed[0][slot[tap.name]] = pack_upper(gram(x.detach()))

    t0, n_seen = time.time(), 0
    for r in range(repeats):
        rows = repeat_rows(samples, split, n_images, r, seed)
        loader = make_loader(
            rows,
            dataset_cfg,
            model_info["data_config"],
            split=None,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        n_batches = len(loader)
        done = {b for b in range(n_batches) if _gram_path(partial, r, b).exists()}
        if len(done) == n_batches:
            log.info("repeat %d already cached, skipping", r)
            continue
        with record_taps(model, taps, on_tap), torch.inference_mode():
            for b, x, _ in stream(loader, device, progress=progress, repeat=r, skip=done):
                packed[:] = [
                    torch.empty(
                        (len(taps), packed_size(len(x))), dtype=torch.float32, device=device
                    )
                ]
                fired.clear()
                model(x)
                if len(fired) != len(taps):
                    missing = [t.name for t in taps if t.name not in fired][:5]
                    raise RuntimeError(f"taps {missing} did not fire in the forward pass")
                with atomic_write(_gram_path(partial, r, b)) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, packed[0].cpu().numpy())
                packed.clear()
                n_seen += len(x)
    elapsed = time.time() - t0
    if not shapes:  # every batch came from a previous run: one tiny forward for the shapes
        x, _ = next(
            iter(
                make_loader(
                    repeat_rows(samples, split, n_images, 0, seed),
                    dataset_cfg,
                    model_info["data_config"],
                    split=None,
                    batch_size=MIN_SHAPE_BATCH,
                )
            )
        )
        packed[:] = [torch.empty((len(taps), packed_size(len(x))), device=device)]
        with record_taps(model, taps, on_tap), torch.inference_mode():
            model(x.to(device))
        packed.clear()
    batch_sizes = [min(batch_size, n_images - i) for i in range(0, n_images, batch_size)]
    meta = {
        **(extra_meta or {}),  # the cache's own keys below win (e.g. `model`: the identity)
        **stamp,
        "gram_storage": "float32 upper triangle with diagonal, (taps, n(n+1)/2) per minibatch",
        "model_name": model_info["name"],
        "family": model_info.get("family"),
        "taps": [tap_record(t, shapes[t.name]) for t in taps],
        "batch_sizes": batch_sizes,
        "gram_bytes": gram_bytes(len(taps), batch_sizes, repeats),
        "images_per_second": round(n_seen / elapsed, 2) if n_seen and elapsed > 0 else None,
        "device": str(device),
    }
    (partial / "stamp.json").unlink()
    write_json(partial / "meta.json", meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return meta


def gram_bytes(n_taps: int, batch_sizes: Sequence[int], repeats: int) -> int:
    """Disk of a cache's Grams: taps × repeats × Σ_batches n(n+1)/2 × 4 bytes (float32)."""
    return int(n_taps * repeats * sum(packed_size(n) for n in batch_sizes) * 4)


def _gram_path(cache_dir: Path, repeat: int, batch: int) -> Path:
    return Path(cache_dir) / "grams" / f"r{repeat:02d}_b{batch:04d}.npy"


MIN_SHAPE_BATCH = 2


def read_cache_meta(cache_dir: str | Path) -> dict[str, Any]:
    """A finished cache's metadata; refuses unfinished caches and caches of another storage format."""
    path = Path(cache_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{cache_dir} is not a finished activation cache (no meta.json); rerun its rule"
        )
    meta = read_json(path)
    if meta.get("format") != CACHE_FORMAT:
        raise CacheFormatError(
            f"{cache_dir} was written in cache format {meta.get('format')} (full Grams), this version reads "
            f"format {CACHE_FORMAT} (packed upper triangles): rebuild it, e.g. `snakemake --forcerun cache` "
            f"or delete {cache_dir}"
        )
    return meta


def check_compatible(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> None:
    """Refuse to compare caches made from different sample lists or minibatch plans."""
    pa, pb = meta_a["plan"], meta_b["plan"]
    if pa["samples_hash"] != pb["samples_hash"]:
        raise CacheMismatchError(
            f"caches of {meta_a['model_name']!r} and {meta_b['model_name']!r} come from different sample lists "
            f"({pa['samples_hash']} vs {pb['samples_hash']}); rebuild both caches from the same "
            "results/samples/<dataset>.csv (e.g. `snakemake --forcerun cache`)"
        )
    if pa != pb:
        diff = {k: (pa.get(k), pb.get(k)) for k in set(pa) | set(pb) if pa.get(k) != pb.get(k)}
        raise CacheMismatchError(
            f"caches of {meta_a['model_name']!r} and {meta_b['model_name']!r} use different CKA plans {diff}; "
            "rebuild them with the same cka settings"
        )


def load_packed_grams(cache_dir: str | Path, repeat: int, batch: int) -> np.ndarray:
    """One minibatch's packed Grams (taps, n(n+1)/2), memory-mapped: slicing reads only what is used."""
    return np.load(_gram_path(Path(cache_dir), repeat, batch), mmap_mode="r")


def load_grams(cache_dir: str | Path, repeat: int, batch: int, taps: Sequence[int]) -> torch.Tensor:
    """Full (len(taps), n, n) float32 Grams of the chosen taps (by index) of one minibatch — for a few
    taps; whole stacks go to CkaAccumulator packed."""
    rows = load_packed_grams(cache_dir, repeat, batch)[list(taps)]
    return unpack_upper(torch.from_numpy(np.ascontiguousarray(rows)))
