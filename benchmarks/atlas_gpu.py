"""The GPU rates behind an 80-model atlas at the paper's protocol (issue #21, item 6): one short run on a GPU.

`atlas_scale.py` measures the atlas on this repository's 2-core CPU and extrapolates to 80 models at the paper's
protocol; what it cannot measure here is the GPU side. This script measures it, in one process, on the paper's
pair (random-init timm `vit_base_patch16_224` and `resnet50` at 224 px) over synthetic JPEGs (paper_scale's):

- **cache**: `build_cache` (the `cache` rule's code: hooks, exact-fp32 Grams, files written) at CKA minibatch
  n = 128 and 1024: its images/s and peak GPU memory, against a bare forward of the same model at batch n under
  exact fp32 (random input on the GPU, no hooks, no loader) and against the loader alone (decode + resize,
  `num_workers` processes, no model), so a cache slower than its forward is attributed to the Grams or the JPEGs;
- **pair step**: `cka_from_caches` of the two caches with 20 permutations and the jackknife groups (the `cka`
  rule's call) on the GPU and on the CPU (`--cpu-threads`, the rule's 2 by default), seconds and µs per tap
  cell per image, the unit `atlas_scale.py --gpu-rates` scales to the paper's protocol.

Writes {results.json, results.md} into `--out` and prints the table. On a lent GPU machine (no snakemake
needed, only torch, timm, pandas, pillow):

    PYTHONPATH=$PWD python3 benchmarks/atlas_gpu.py --out $OUT             # 4,096 analysed images; ≈ 4 min on an H200
    python benchmarks/atlas_gpu.py --small --out /tmp/atlas_gpu_small     # CPU smoke test: tiny models, 64 px
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_scale import make_images

FULL = {
    "archs": {"vit_b16": ("vit_base_patch16_224", {}), "r50": ("resnet50", {})},
    "images": 8192,  # half of them the analysed test split: 4,096 images, 32 / 4 minibatches
    "batches": (128, 1024),
    "image_size": (320, 256),
}
SMALL = {
    "archs": {
        "vit_ti": ("vit_tiny_patch16_224", {"img_size": 64}),
        "r18": ("resnet18", {}),
    },
    "images": 256,
    "batches": (32, 128),
    "image_size": (80, 64),
    "input_size": 64,
}
PERMUTATIONS = 20  # the schema default


def model_and_info(
    name: str, arch: str, kwargs: dict[str, Any], size: int | None
) -> tuple[Any, dict]:
    """A random-init timm model (seed 0) and the model.json fields the cache reads."""
    import timm
    from timm.data import resolve_data_config

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    data_config = dict(resolve_data_config({}, model=model))
    if size:
        data_config["input_size"] = (3, size, size)
    info = {
        "name": name, "arch": arch, "source": "timm", "kwargs": kwargs, "family": None,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
    }  # fmt: skip
    return model, info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _rate(call, size: int, batch: int, n_images: int, device: torch.device) -> dict[str, Any]:
    """images/s and peak memory of `call(x)` on random (batch, 3, size, size) input under inference mode and
    exact fp32, timed over ⌈n_images / batch⌉ (≥ 2) batches after 2 warm-up batches."""
    from seelike.device import exact_fp32

    x = torch.randn(batch, 3, size, size, device=device)
    n_batches = max(2, -(-n_images // batch))
    with torch.inference_mode(), exact_fp32():
        for _ in range(2):
            call(x)
        sync(device)
        reset_peak(device)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            call(x)
        sync(device)
        dt = time.perf_counter() - t0
    return {"img_s": n_batches * batch / dt, "peak_mib": peak_mib(device)}


def bare_forward(
    model, size: int, batch: int, n_images: int, device: torch.device
) -> dict[str, Any]:
    """A plain forward at `batch` (`_rate`): no hooks, no loader."""
    return _rate(model, size, batch, n_images, device)


def gram_pass(model, size: int, batch: int, n_images: int, device: torch.device) -> dict[str, Any]:
    """The cache's forward pass (hooks, every tap's exact-fp32 packed Gram, copied to the host) on random input
    (`_rate`): the cache without its loader and files, at the same batch as `bare_forward`."""
    # the cache's own pass, so nothing here re-implements it
    from seelike.analyses.cache import _GramPass
    from seelike.models.taps import discover_taps, record_taps

    taps = discover_taps(model)
    grams = _GramPass(model, taps, device)
    with record_taps(model, taps, grams.on_tap):
        return _rate(grams, size, batch, n_images, device)


def loader_rate(
    samples: Path, dataset: dict, info: dict, batch: int, n: int, workers: int
) -> float:
    """images/s of the cache's loader alone (decode, resize, crop, collate; no model)."""
    from seelike.data.loader import make_loader

    loader = make_loader(
        samples, dataset, info["data_config"], "test", n, batch, num_workers=workers
    )
    t0, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def cache_run(
    model, info, samples, dataset, out: Path, n_images, batch, device, workers
) -> dict[str, Any]:
    """The cache rule's pass: wall images/s, the cache's own streaming rate, peak GPU memory, taps."""
    from seelike.analyses.cache import build_cache

    reset_peak(device)
    t0 = time.perf_counter()
    meta = build_cache(
        model, info, samples, dataset, out, n_images, batch, device=device, num_workers=workers
    )
    sync(device)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall, "img_s": n_images / wall, "stream_img_s": meta["images_per_second"],
        "peak_mib": peak_mib(device), "taps": len(meta["taps"]), "gram_bytes": meta["gram_bytes"],
    }  # fmt: skip


def pair_step(cache_a: Path, cache_b: Path, device: str, threads: int | None) -> dict[str, Any]:
    """The `cka` rule's step on `device`: seconds, tap cells."""
    from seelike.analyses.cka_tables import cka_from_caches

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        df, _, _ = cka_from_caches(
            cache_a, cache_b, device, permutations=PERMUTATIONS, with_groups=True
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    return {"seconds": dt, "cells": len(df), "mean_cka": float(df["cka"].mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--small", action="store_true", help="CPU smoke test: tiny models at 64 px")
    ap.add_argument("--workers", type=int, default=min(12, (os.cpu_count() or 2) - 1))
    ap.add_argument(
        "--cpu-threads", type=int, default=2, help="threads of the CPU pair step (the rule's 2)"
    )
    ap.add_argument("--skip-cpu-step", action="store_true", help="pair step on the GPU only")
    args = ap.parse_args(argv)
    p = SMALL if args.small else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="atlas_gpu_"))
    from seelike.data.samples import build_samples, write_samples

    t0 = time.perf_counter()
    per_class = -(-p["images"] // 8)  # 8 classes; half of the folder is the test split
    make_images(work / "images", 8, per_class, p["image_size"], seed=0)
    dataset = {"source": "imagefolder", "root": str(work / "images"), "test_fraction": 0.5}
    samples = work / "samples.csv"
    write_samples(build_samples(dataset, seed=0), samples)
    n_images = p["images"] // 2
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "workers": args.workers,
        "n_images": n_images, "permutations": PERMUTATIONS, "images_s": time.perf_counter() - t0,
        "models": [], "pairs": [],
    }  # fmt: skip
    caches: dict[int, list[Path]] = {}
    for name, (arch, kwargs) in p["archs"].items():
        model, info = model_and_info(name, arch, kwargs, p.get("input_size"))
        model.to(device)
        size = info["data_config"]["input_size"][-1]
        for batch in p["batches"]:
            out = work / f"cache_{name}_{batch}"
            row = {"model": name, "arch": arch, "batch": batch}
            row["bare"] = bare_forward(model, size, batch, n_images, device)
            row["gram_pass"] = gram_pass(model, size, batch, n_images, device)
            row["loader_img_s"] = loader_rate(samples, dataset, info, batch, n_images, args.workers)
            row["cache"] = cache_run(
                model, info, samples, dataset, out, n_images, batch, device, args.workers
            )
            caches.setdefault((batch, n_images), []).append(out)
            # a second cache of half the images: the pair step at two image counts separates its fixed cost
            # from the part that grows with the images (what the paper's 204,800 images per pair scale)
            few = n_images // 2
            out = work / f"cache_{name}_{batch}_{few}"
            cache_run(model, info, samples, dataset, out, few, batch, device, args.workers)
            caches.setdefault((batch, few), []).append(out)
            result["models"].append(row)
            print(json.dumps(row), flush=True)
        del model
        reset_peak(device)
    for (batch, images), (a, b) in caches.items():
        steps = {}
        if device.type == "cuda":
            pair_step(a, b, "cuda", None)  # warm-up: the first CUDA float64 kernels of this process
            steps["gpu"] = pair_step(a, b, "cuda", None)
        # the CPU step once per n on a GPU machine (its per-image cost is atlas_scale.py's to measure)
        if device.type != "cuda" or (not args.skip_cpu_step and images == n_images):
            steps["cpu"] = pair_step(a, b, "cpu", args.cpu_threads)
        row = {"batch": batch, "images": images, **steps}
        result["pairs"].append(row)
        print(json.dumps(row), flush=True)
    result["total_s"] = time.perf_counter() - t0
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "results.md").write_text(render(result))
    print(render(result))
    return 0


def render(r: dict[str, Any]) -> str:
    n = r["n_images"]
    lines = [
        (
            f"Device: {r['device']} · torch {r['torch']} · {r['cpu_count']} CPUs, loader {r['workers']} workers · "
            f"{n} images · {r['permutations']} permutations · {r['total_s']:.0f} s in all"
        ),
        "",
        (
            "| model | n | taps | bare fwd img/s | Gram pass img/s | loader img/s | cache img/s (stream) | "
            "Gram pass / bare | cache / bare | peak MiB (bare / Gram pass / cache) | Grams MB |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in r["models"]:
        c, b, g = m["cache"], m["bare"], m["gram_pass"]
        peaks = " / ".join(
            "–" if v is None else f"{v:.0f}" for v in (b["peak_mib"], g["peak_mib"], c["peak_mib"])
        )
        lines.append(
            f"| {m['arch']} | {m['batch']} | {c['taps']} | {b['img_s']:.0f} | {g['img_s']:.0f} | "
            f"{m['loader_img_s']:.0f} | {c['img_s']:.0f} ({c['stream_img_s']:.0f}) | "
            f"{g['img_s'] / b['img_s']:.2f} | {c['img_s'] / b['img_s']:.2f} | {peaks} | "
            f"{c['gram_bytes'] / 1e6:.0f} |"
        )
    lines += ["", "| n | images | tap cells | step on | seconds | µs per tap cell per image | mean CKA |",
              "|---:|---:|---:|---|---:|---:|---:|"]  # fmt: skip
    for p in r["pairs"]:
        for where in ("gpu", "cpu"):
            if where in p:
                s = p[where]
                lines.append(
                    f"| {p['batch']} | {p['images']} | {s['cells']} | {where} | {s['seconds']:.2f} | "
                    f"{s['seconds'] / s['cells'] / p['images'] * 1e6:.4f} | {s['mean_cka']:.4f} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
