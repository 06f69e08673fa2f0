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
from torch.utils.data import DataLoader

from seelike.analyses.stream import Progress, stream, with_extra_meta
from seelike.cka import gram, pack_upper, packed_size, unpack_upper
from seelike.data.loader import make_loader, read_samples, select
from seelike.data.samples import samples_hash
from seelike.device import exact_fp32, place_model
from seelike.io import atomic_write, read_json, write_json
from seelike.models.taps import Tap, discover_taps, record_taps, tap_record

log = logging.getLogger(__name__)

# 1: full (taps, n, n) Grams and pooled features; 2: packed upper triangles, no pooled features.
CACHE_FORMAT = 2


class CacheMismatchError(ValueError):
    """Two caches (or a cache and a request) come from different sample lists or plans."""


class CacheFormatError(ValueError):
    """A cache was written in another (older) storage format."""


class CacheDamagedError(ValueError):
    """A finished cache's file is truncated, unreadable or gone (a full disk, an interrupted copy)."""


def _rebuild_hint(cache_dir: str | Path) -> str:
    return (
        f"rebuild this cache: `snakemake --forcerun {cache_dir}` (`--forcerun cache` rebuilds every cache), "
        f"or delete {cache_dir} and rerun the workflow"
    )


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


def repeat_loader(
    samples: pd.DataFrame,
    plan: dict[str, Any],
    repeat: int,
    dataset_cfg: dict[str, Any],
    data_config: dict[str, Any],
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """The images of repeat `repeat` of a cache plan (`plan`: split, n_images, seed and batch_size, as in
    meta.json), in the plan's minibatches (or `batch_size`), with a model's preprocessing (`data_config`): the
    one loader of the cache and of every analysis that streams a cache's images again (Fig 5's head subsets)."""
    return make_loader(
        repeat_rows(samples, plan["split"], plan["n_images"], repeat, plan["seed"]),
        dataset_cfg,
        data_config,
        split=None,
        batch_size=batch_size or plan["batch_size"],
        num_workers=num_workers,
    )


class _GramPass:
    """The cache's forward passes: every tap's packed fp32 Gram of one minibatch, filled tap by tap inside the
    hooks (each activation is reduced while the forward pass runs, nothing else of it is kept), and each tap's
    per-image activation shape."""

    def __init__(self, model: torch.nn.Module, taps: list[Tap], device: torch.device):
        self.model, self.taps, self.device = model, taps, device
        self.slot = {t.name: i for i, t in enumerate(taps)}
        self.shapes: dict[str, list[int]] = {}
        self.fired: set[str] = set()
        self.packed: torch.Tensor | None = None

    def on_tap(self, tap: Tap, x: torch.Tensor) -> None:
        self.shapes.setdefault(tap.name, list(x.shape[1:]))
        self.fired.add(tap.name)
        self.packed[self.slot[tap.name]] = pack_upper(gram(x.detach()))  # centred, exact fp32

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """(taps, n(n+1)/2) float32 packed Grams of the images `x` (on the device)."""
        self.packed = torch.empty(
            (len(self.taps), packed_size(len(x))), dtype=torch.float32, device=self.device
        )
        self.fired.clear()
        try:
            self.model(x)
            if len(self.fired) != len(self.taps):
                missing = [t.name for t in self.taps if t.name not in self.fired][:5]
                raise RuntimeError(f"taps {missing} did not fire in the forward pass")
            return self.packed.cpu().numpy()
        finally:
            self.packed = None

    def write_repeat(self, loader, partial: Path, repeat: int, progress: Progress | None) -> int:
        """Write the Grams of every minibatch of `loader` not yet in `partial`; returns the images run."""
        done = {b for b in range(len(loader)) if _gram_path(partial, repeat, b).exists()}
        if len(done) == len(loader):
            log.info("repeat %d already cached, skipping", repeat)
            return 0
        n_seen = 0
        for b, x, _ in stream(loader, self.device, progress=progress, repeat=repeat, skip=done):
            packed = self(x)
            with atomic_write(_gram_path(partial, repeat, b)) as tmp, open(tmp, "wb") as fh:
                np.save(fh, packed)
            n_seen += len(x)
        return n_seen


def _open_partial(partial: Path, stamp: dict[str, Any]) -> None:
    """`partial` ready for this run: a partial cache of another plan, model or format is discarded, one of the
    same stamp kept (its minibatches are not rerun)."""
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


def _cache_stamp(model_info: dict[str, Any], samples_csv: str | Path, plan: dict[str, Any]) -> dict:
    identity = {
        k: model_info.get(k)
        for k in ("name", "arch", "source", "kwargs", "weights_sha256", "checkpoint_sha256")
    }
    return {
        "format": CACHE_FORMAT,
        "plan": {**plan, "samples_hash": samples_hash(samples_csv)},
        "model": identity,
    }


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
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: Progress | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the streaming pass and write the cache directory (see module docstring); `meta.json` also holds
    `extra_meta` (the rule's metadata; the cache's own keys win, `with_extra_meta`). `progress(repeat, batch,
    n_batches)` after each minibatch written (`seelike.analyses.stream`); minibatches already in a partial cache
    are neither rerun nor reported. `device`: `seelike.device.analysis_device` (default: where the model is)."""
    device = place_model(model, device)
    out_dir = Path(out_dir)
    samples = read_samples(samples_csv)
    plan = {
        "n_images": int(n_images),
        "batch_size": int(batch_size),
        "repeats": int(repeats),
        "seed": int(seed),
        "split": split,
    }
    stamp = _cache_stamp(model_info, samples_csv, plan)
    taps = discover_taps(model)
    partial = out_dir.with_name(out_dir.name + ".partial")
    _open_partial(partial, stamp)
    grams = _GramPass(model, taps, device)
    t0, n_seen = time.time(), 0
    with record_taps(model, taps, grams.on_tap), torch.inference_mode():
        for r in range(repeats):
            loader = repeat_loader(
                samples, plan, r, dataset_cfg, model_info["data_config"], num_workers=num_workers
            )
            n_seen += grams.write_repeat(loader, partial, r, progress)
        elapsed = time.time() - t0
        if (
            not grams.shapes
        ):  # every batch came from a previous run: one tiny forward for the shapes
            loader = repeat_loader(
                samples, plan, 0, dataset_cfg, model_info["data_config"], batch_size=MIN_SHAPE_BATCH
            )
            grams(next(iter(loader))[0].to(device))
    speed = round(n_seen / elapsed, 2) if n_seen and elapsed > 0 else None
    meta = with_extra_meta(
        extra_meta, _cache_meta(stamp, model_info, taps, grams.shapes, speed, device)
    )
    (partial / "stamp.json").unlink()
    write_json(partial / "meta.json", meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return meta


def _cache_meta(
    stamp: dict[str, Any],
    model_info: dict[str, Any],
    taps: list[Tap],
    shapes: dict[str, list[int]],
    images_per_second: float | None,
    device: torch.device,
) -> dict[str, Any]:
    """The cache's own metadata (module docstring): its stamp, taps, minibatch plan and storage."""
    plan = stamp["plan"]
    n, size = plan["n_images"], plan["batch_size"]
    batch_sizes = [min(size, n - i) for i in range(0, n, size)]
    return {
        **stamp,
        "gram_storage": "float32 upper triangle with diagonal, (taps, n(n+1)/2) per minibatch",
        "model_name": model_info["name"],
        "family": model_info.get("family"),
        "taps": [tap_record(t, shapes[t.name]) for t in taps],
        "batch_sizes": batch_sizes,
        "gram_bytes": gram_bytes(len(taps), batch_sizes, plan["repeats"]),
        "images_per_second": images_per_second,
        "device": str(device),
    }


def gram_bytes(n_taps: int, batch_sizes: Sequence[int], repeats: int) -> int:
    """Disk of a cache's Grams: taps × repeats × Σ_batches n(n+1)/2 × 4 bytes (float32)."""
    return int(n_taps * repeats * sum(packed_size(n) for n in batch_sizes) * 4)


def _gram_path(cache_dir: Path, repeat: int, batch: int) -> Path:
    return Path(cache_dir) / "grams" / f"r{repeat:02d}_b{batch:04d}.npy"


MIN_SHAPE_BATCH = 2


def read_cache_meta(cache_dir: str | Path) -> dict[str, Any]:
    """A finished cache's metadata; refuses unfinished caches (FileNotFoundError), a meta.json that is not a
    JSON object (`CacheDamagedError`) and caches of another storage format (`CacheFormatError`), each naming
    the file and how to rebuild it."""
    path = Path(cache_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{cache_dir} is not a finished activation cache (no {path}); {_rebuild_hint(cache_dir)}"
        )
    try:
        meta = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheDamagedError(
            f"{path} is not readable JSON ({e}; {path.stat().st_size} bytes): the cache is damaged; "
            f"{_rebuild_hint(cache_dir)}"
        ) from e
    if not isinstance(meta, dict):
        raise CacheDamagedError(
            f"{path} holds a JSON {type(meta).__name__}, not the cache's metadata object; "
            f"{_rebuild_hint(cache_dir)}"
        )
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
    """One minibatch's packed Grams (taps, n(n+1)/2), memory-mapped: slicing reads only what is used. A file
    that is gone, truncated or unreadable raises `CacheDamagedError` naming it, its expected and actual size
    and how to rebuild the cache."""
    path = _gram_path(Path(cache_dir), repeat, batch)
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        raise CacheDamagedError(_damaged_gram_file(path, cache_dir, e)) from e


def _damaged_gram_file(path: Path, cache_dir: str | Path, error: Exception) -> str:
    """Why a Gram file could not be read: missing, its size against the size its .npy header announces, or
    an unreadable header."""
    hint = _rebuild_hint(cache_dir)
    if not path.exists():
        return f"{path} is missing from the finished cache {cache_dir}; {hint}"
    actual = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            expected = fh.tell() + int(np.prod(shape)) * dtype.itemsize
    except (OSError, ValueError, EOFError):
        return f"{path} is damaged: no readable .npy header in its {actual} bytes ({error}); {hint}"
    state = "truncated" if actual < expected else "damaged"
    return (
        f"{path} is {state}: {actual} bytes, expected {expected} ({dtype} {tuple(shape)} plus the .npy "
        f"header); {hint}"
    )


def load_grams(cache_dir: str | Path, repeat: int, batch: int, taps: Sequence[int]) -> torch.Tensor:
    """Full (len(taps), n, n) float32 Grams of the chosen taps (by index) of one minibatch — for a few
    taps; whole stacks go to CkaAccumulator packed."""
    rows = load_packed_grams(cache_dir, repeat, batch)[list(taps)]
    return unpack_upper(torch.from_numpy(np.ascontiguousarray(rows)))
