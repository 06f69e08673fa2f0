"""The activation cache: ONE streaming forward pass per (model, dataset) that keeps, per minibatch, the
fp32 Gram matrix of every tap, and per image a pooled vector per tap — never a dataset's activations.

Layout of `results/cache/{dataset}/{model}/`:
    meta.json                 taps (name, kind, shape), plan (images per repeat, batch size, repeats),
                              sample-list hash, model identity
    grams/r{R}_b{B}.npy       float32 (taps, n, n) for repeat R, minibatch B
    pooled/{mode}/{i}.npy     float32 (images of repeat 0, C): mode `mean` = mean over spatial positions /
                              patch tokens, `cls` = first prefix token (ViTs)
Storage of the Grams is taps × batches × n² × 4 bytes (README). A run writes into `<out>.partial/` and
renames at the end; an interrupted run resumes from the minibatches already written there.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from seelike.cka import gram
from seelike.data.loader import make_loader, read_samples, select
from seelike.data.samples import samples_hash
from seelike.io import atomic_write, read_json, sha256_json, write_json
from seelike.models.taps import Tap, discover_taps, record_taps, tap_record

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class CacheMismatchError(ValueError):
    """Two caches (or a cache and a request) come from different sample lists or plans."""


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


def token_layout(model: torch.nn.Module) -> int:
    """Number of prefix tokens (CLS, registers, distillation) before the patch tokens; 0 for CNNs."""
    return int(getattr(model, "num_prefix_tokens", 0) or 0)


def pool(x: torch.Tensor, num_prefix: int) -> dict[str, torch.Tensor]:
    """Per-image pooled vectors of one activation: CNN (B,C,H,W) → spatial mean; tokens (B,N,C) → mean of
    the patch tokens and the first prefix token; anything else flattened."""
    if x.dim() == 4:
        return {"mean": x.mean(dim=(2, 3))}
    if x.dim() == 3:
        out = {"mean": x[:, num_prefix:].mean(1)}
        if num_prefix:
            out["cls"] = x[:, 0]
        return out
    return {"mean": x.reshape(len(x), -1)}


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
    progress=None,
) -> dict[str, Any]:
    """Run the streaming pass and write the cache directory (see module docstring)."""
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
    num_prefix = token_layout(model)
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
    pooled_dims: dict[tuple[str, str], int] = {}
    grams_buf: dict[str, torch.Tensor] = {}
    pooled_buf: dict[tuple[str, str], torch.Tensor] = {}
    want_pooled = [False]

    def on_tap(tap: Tap, x: torch.Tensor) -> None:
        shapes.setdefault(tap.name, list(x.shape[1:]))
        grams_buf[tap.name] = gram(x.detach())  # centred, exact fp32 (see seelike.cka.gram)
        if want_pooled[0]:
            for mode, v in pool(x.detach().float(), num_prefix).items():
                pooled_buf[(mode, tap.name)] = v

    pooled_files: dict[tuple[str, str], np.ndarray] = {}
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
        want_pooled[0] = r == 0
        done = {
            b for b in range(n_batches) if (partial / "grams" / f"r{r:02d}_b{b:04d}.npy").exists()
        }
        if r == 0 and len(done) < n_batches:
            done = set()  # pooled features are written as the pass goes: redo repeat 0 whole
        if len(done) == n_batches and (r > 0 or (partial / "pooled_done").exists()):
            log.info("repeat %d already cached, skipping", r)
            continue
        with record_taps(model, taps, on_tap), torch.inference_mode():
            offset = 0
            for b, (x, _) in enumerate(loader):
                if b in done:
                    offset += len(x)
                    continue
                grams_buf.clear()
                pooled_buf.clear()
                model(x.to(device, non_blocking=True))
                stack = torch.stack([grams_buf[t.name] for t in taps]).cpu().numpy()
                with (
                    atomic_write(partial / "grams" / f"r{r:02d}_b{b:04d}.npy") as tmp,
                    open(tmp, "wb") as fh,
                ):
                    np.save(fh, stack)
                if want_pooled[0]:
                    for (mode, name), v in pooled_buf.items():
                        key = (mode, name)
                        if key not in pooled_files:
                            idx = next(t.index for t in taps if t.name == name)
                            path = partial / "pooled" / mode / f"{idx:03d}.npy"
                            path.parent.mkdir(parents=True, exist_ok=True)
                            pooled_dims[key] = v.shape[1]
                            pooled_files[key] = np.lib.format.open_memmap(
                                path, mode="w+", dtype=np.float32, shape=(n_images, v.shape[1])
                            )
                        pooled_files[key][offset : offset + len(x)] = v.cpu().numpy()
                offset += len(x)
                n_seen += len(x)
                if progress is not None:
                    progress(r, b, n_batches)
        if r == 0:
            for mm in pooled_files.values():
                mm.flush()
            pooled_files.clear()
            (partial / "pooled_done").touch()
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
        want_pooled[0] = False
        with record_taps(model, taps, on_tap), torch.inference_mode():
            model(x.to(device))
    batch_sizes = [min(batch_size, n_images - i) for i in range(0, n_images, batch_size)]
    meta = {
        **stamp,
        "model_name": model_info["name"],
        "family": model_info.get("family"),
        "num_prefix_tokens": num_prefix,
        "taps": [tap_record(t, shapes[t.name]) for t in taps],
        "batch_sizes": batch_sizes,
        "pooled_modes": sorted({m for m, _ in pooled_dims} | _existing_modes(partial)),
        "gram_bytes": int(sum(len(taps) * n * n * 4 for n in batch_sizes) * repeats),
        "images_per_second": round(n_seen / elapsed, 2) if n_seen and elapsed > 0 else None,
        "device": str(device),
    }
    (partial / "pooled_done").unlink(missing_ok=True)
    (partial / "stamp.json").unlink()
    write_json(partial / "meta.json", meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return meta


MIN_SHAPE_BATCH = 2


def _existing_modes(partial: Path) -> set[str]:
    d = partial / "pooled"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def read_cache_meta(cache_dir: str | Path) -> dict[str, Any]:
    path = Path(cache_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{cache_dir} is not a finished activation cache (no meta.json); rerun its rule"
        )
    return read_json(path)


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


def load_grams(cache_dir: str | Path, repeat: int, batch: int) -> np.ndarray:
    return np.load(Path(cache_dir) / "grams" / f"r{repeat:02d}_b{batch:04d}.npy")


def plan_hash(meta: dict[str, Any]) -> str:
    return sha256_json(meta["plan"])[:16]
