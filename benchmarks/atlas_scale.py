"""Atlas at scale (issue #21, item 6): what an M-model atlas costs, measured on the real workflow.

Builds the model-zoo atlas (`cka.pairs: all`, target `atlas_all`) of a zoo of random-init timm models of mixed
families in stages — the first 8 models, then 16, then 24 (`--stages`), each stage adding models to the finished
atlas of the previous one, as a user grows an atlas — with snakemake on a generated config under benchmarks/out/,
and measures in one run:

- per added model: its `cache` job (wall time from the rule's `benchmark:` file; the cache's own streaming time
  from meta.json) against a bare forward pass of the same model over the same images in a fresh process (same
  loader, batch, threads and exact-fp32 setting, no hooks); the peak memory of both (the kernel's high-water
  mark VmHWM of the job's process, read from /proc while it runs; the benchmark file's sampled max_rss beside
  it), also above the bare process's resident set before its first batch (imports, model, sample list: the
  baseline both share); and its cache's size on disk;
- per pair job (`cka` from the two caches, 20 permutations): wall and CPU time against the two models' tap
  counts (law: t = c0 + c2·taps_a·taps_b); and the CKA step alone (`cka_from_caches` in-process, one thread) on
  the first 4 models' pairs at this protocol and at one with 8× less work per tap cell (`run_probe`: the same
  models' caches at 256 images, minibatch 64), which separates start-up, bookkeeping and the work that grows
  with images × repeats × minibatch size (`kernel_times`, `fit_kernel`);
- per stage: the `atlas` rule's time and peak memory, the page's size and its load time in headless Chromium
  (Playwright, from `goto` to `body[data-ready]`, median of 3 loads after one warm-up), disk in all, and the
  snakemake wall time; and pages of larger atlases (M = 24, 48, 80) made from the last stage's page data by
  repeating its models (`synthetic_pages`: `write_page` time, size, load);
- growth with M: the totals of an M-model atlas (every job of its first M models plus its atlas job) against
  growth laws fitted on the first stage's jobs (cache and pair jobs) and the first two stages (atlas job, page
  size and load), so the later stages verify the extrapolation; and an 80-model atlas at the paper's protocol
  extrapolated from the laws fitted on all jobs (`paper_extrapolation`: its assumptions are stated there).

Wall times of 2-thread jobs on a shared 2-core machine vary with the other load (and OpenMP threads that wait
for a descheduled sibling spin, so CPU time inflates too): the laws use CPU seconds, the step's rates
single-threaded CPU seconds, and every ratio comes from one run.

Writes benchmarks/out/atlas_scale[_small]/{results.json, results.md, models.csv, pairs.csv, stages.csv,
atlas_scale.png} and prints the tables.

    python benchmarks/atlas_scale.py                  # 24 models in stages 8/16/24, 1,024 images, minibatch 128
    python benchmarks/atlas_scale.py --stages 8 12 16 # the largest zoo that fits an hour on 2 shared cores
    python benchmarks/atlas_scale.py --small          # smoke test: stages 2/3, 128 images, minibatch 64
    python benchmarks/atlas_scale.py --analyse-only   # redo the analysis and report from results.json

Run it under `nice -n 19` on a shared machine. Everything runs on the CPU (`device: cpu`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from seelike.atlas.data import SCORE_KEYS  # the pair scores a page entry carries
from seelike.models.kinds import BLOCK_OUTPUT_KINDS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
DATASET = "digits"
SIZE = 64  # px: every architecture below builds and runs at 64 px (ViT-likes with img_size=64)
MIB = 2**20

# The zoo, in the order models are added: each stage's first models mix families. Default depths and widths
# (the real tiny variants); ViT-like models built for 64 px (img_size), Swin with 4-px windows.
# fmt: off
ZOO: list[tuple[str, str, dict[str, Any]]] = [
    # stage 1 (M = 8): the growth laws are fitted on its jobs
    ("vit_tiny", "vit_tiny_patch16_224", {"img_size": SIZE}),
    ("resnet18", "resnet18", {}),
    ("convnext_atto", "convnext_atto", {}),
    ("effnet_b0", "efficientnet_b0", {}),
    ("swin_tiny", "swin_tiny_patch4_window7_224", {"img_size": SIZE, "window_size": 4}),
    ("mixer_s16", "mixer_s16_224", {"img_size": SIZE}),
    ("levit_128s", "levit_128s", {"img_size": SIZE}),
    ("regnetx_002", "regnetx_002", {}),
    # M = 9-12
    ("deit_tiny_dist", "deit_tiny_distilled_patch16_224", {"img_size": SIZE}),
    ("resnet10t", "resnet10t", {}),
    ("mnv3_small", "mobilenetv3_small_100", {}),
    ("pvt_v2_b0", "pvt_v2_b0", {}),
    # M = 13-16: the most taps (CaiT 170, ResNetV2-50 119), beyond the first stage's range
    ("cait_xxs24", "cait_xxs24_224", {"img_size": SIZE}),
    ("ghostnet_100", "ghostnet_100", {}),
    ("resnetv2_50", "resnetv2_50", {}),
    ("maxvit_pico", "maxvit_rmlp_pico_rw_256", {"img_size": SIZE}),
    # M = 17-24
    ("xcit_nano", "xcit_nano_12_p16_224", {"img_size": SIZE}),
    ("convit_tiny", "convit_tiny", {"img_size": SIZE}),
    ("poolformer_s12", "poolformer_s12", {}),
    ("effnet_lite0", "tf_efficientnet_lite0", {}),
    ("mnv2_050", "mobilenetv2_050", {}),
    ("convnext_femto", "convnext_femto", {}),
    ("resmlp_12", "resmlp_12_224", {"img_size": SIZE}),
    ("mobilevit_xxs", "mobilevit_xxs", {}),
]
# fmt: on
FULL = {"stages": (8, 16, 24), "n_images": 1024, "batch_size": 128, "test_fraction": 0.6}
SMALL = {"stages": (2, 3), "n_images": 128, "batch_size": 64, "test_fraction": 0.6}
# The second protocol of the pair jobs (run_probe): the first 4 models at 1/8 of the main run's work per tap cell.
PROBE = {"models": 4, "n_images": 256, "batch_size": 64}
PROBE_ERRORS = (RuntimeError, OSError, KeyError, ValueError)
PERMUTATIONS = 20  # the schema default
PAGE_LOADS = 3

# The 80-model extrapolation (README): the paper's protocol as config/paper.yaml runs it, and its exact form.
PAPER_PROTOCOLS = {
    "paper.yaml (n = 128)": {"n_images": 10240, "repeats": 20, "batch_size": 128},
    "exact (n = 1024)": {"n_images": 10240, "repeats": 20, "batch_size": 1024},
}
# An average zoo model at 224 px: the paper's pair, ViT-B/16 and ResNet-50 (86 taps each in the H200 run's
# discovery; 15 block outputs on average).
PAPER_MODEL = {"taps": 86, "blocks": 15}
# Measured on one NVIDIA H200 by benchmarks/atlas_gpu.py (BENCHMARKS.md "Atlas at scale", "The GPU side"), per CKA
# minibatch n: the cache rule's images/s for the paper's pair (random-init ViT-B/16 and ResNet-50 at 224 px, exact
# fp32, 12 loader workers; harmonic mean = the mean time per image of the two; at n = 1024 over 4 minibatches, so
# the loader's start-up is in it: the Gram pass alone ran at 571 img/s), and the `cka` step on that GPU (20
# permutations, jackknife groups): seconds per tap cell per image (the slope between 2,048 and 4,096 images) and
# its fixed seconds per pair.
GPU_RATES = {
    128: {"cache_img_s": 886.5, "step_s_per_cell_image": 7.184e-9, "step_fixed_s": 0.011},
    1024: {"cache_img_s": 402.7, "step_s_per_cell_image": 1.575e-8, "step_fixed_s": 0.060},
}


# ------------------------------------------------------------------------------------------------ pure helpers
def pair_count(m: int) -> int:
    """Pair jobs of an M-model atlas: every unordered cross pair once plus one self pair per model."""
    return m * (m + 1) // 2


def fit_linear(
    columns: Sequence[Sequence[float]], y: Sequence[float], intercept: bool = True
) -> tuple[list[float], float]:
    """Least squares y ≈ c0 + Σ ck·columns[k] (c0 = 0 without `intercept`); returns ([c0, c1, ...], R²)."""
    import numpy as np

    y_arr = np.asarray(y, dtype=float)
    ones = [np.ones_like(y_arr) if intercept else np.zeros_like(y_arr)]
    x = np.column_stack([*ones, *[np.asarray(c, dtype=float) for c in columns]])
    coef, *_ = np.linalg.lstsq(x, y_arr, rcond=None)
    resid = y_arr - x @ coef
    ss = float(((y_arr - y_arr.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0
    return [float(c) for c in coef], r2


def pair_terms(taps: Sequence[int]) -> list[tuple[int, int]]:
    """(taps_a, taps_b) of every pair job of a zoo with these tap counts (self pairs included)."""
    return [(taps[i], taps[j]) for i in range(len(taps)) for j in range(i, len(taps))]


def block_cells(blocks: Sequence[int]) -> int:
    """Block-output cells the page holds: Σ over the pairs (self pairs included) of blocks_a × blocks_b."""
    return sum(a * b for a, b in pair_terms(blocks))


def pair_seconds(
    coef: Sequence[float],
    ta: int,
    tb: int,
    scale: float = 1.0,
    work: Sequence[float] | None = None,
) -> float:
    """A pair job's time from the law t = c0 + c1·(ta + tb) + c2·ta·tb at the measured protocol, at `scale` × its
    work per tap cell (`work_scale`). `work` = [w1, w2]: the CKA step's cost per tap and per tap cell that grows
    with the work (measured at two protocols, `fit_kernel`), added (scale − 1) times; the rest of the job (start-up,
    bookkeeping) is not scaled. Without `work` every tap term of the law is scaled (an upper bound)."""
    c0, c1, c2 = coef
    if work is None:
        return c0 + scale * (c1 * (ta + tb) + c2 * ta * tb)
    w1, w2 = work
    return c0 + c1 * (ta + tb) + c2 * ta * tb + (scale - 1.0) * (w1 * (ta + tb) + w2 * ta * tb)


def work_scale(protocol: dict[str, int], measured: dict[str, int]) -> float:
    """Work of a pair's CKA per tap cell relative to the measured protocol: minibatches (n_images × repeats / n)
    × n² per minibatch (U-centred Gram triangles) = n_images × repeats × n."""

    def work(p: dict[str, int]) -> float:
        return p["n_images"] * p.get("repeats", 1) * p["batch_size"]

    return work(protocol) / work(measured)


def cache_bytes(taps: int, protocol: dict[str, int]) -> float:
    """A Gram cache on disk: taps × minibatches × n(n+1)/2 fp32 per repeat (float32 packed upper triangles)."""
    n, images, repeats = protocol["batch_size"], protocol["n_images"], protocol.get("repeats", 1)
    return taps * (images / n) * repeats * n * (n + 1) / 2 * 4


def protocol_images(protocol: dict[str, int]) -> int:
    """Images one model's cache runs (and one pair's CKA step reads): n_images × repeats."""
    return protocol["n_images"] * protocol.get("repeats", 1)


def cache_gpu_seconds(protocol: dict[str, int], rates: dict[int, dict[str, float]]) -> float:
    """One model's cache pass on the GPU at the measured images/s of its minibatch size (`GPU_RATES`)."""
    return protocol_images(protocol) / rates[protocol["batch_size"]]["cache_img_s"]


def gpu_step_seconds(ta: int, tb: int, protocol: dict[str, int], rates: dict[int, dict]) -> float:
    """One pair's CKA step were it run on the GPU (the `cka` rule pins the CPU): its fixed cost plus the
    measured cost per tap cell per image at the protocol's minibatch size (`GPU_RATES`); no job start-up."""
    rate = rates[protocol["batch_size"]]
    return rate["step_fixed_s"] + rate["step_s_per_cell_image"] * ta * tb * protocol_images(
        protocol
    )


@dataclass
class Growth:
    """Laws fitted on measured jobs: per-model cache time and disk (means), pair time (tap fit), pair table bytes
    (cell fit), the atlas job, page size and page load (linear in the page's block cells)."""

    cache_s: float
    fetch_s: float
    cache_mb: float
    pair_coef: list[float]
    table_coef: list[float]  # bytes = d0 + d1·ta·tb
    atlas_coef: list[float]  # s = a0 + a1·cells
    page_coef: list[float]  # bytes = p0 + p1·cells
    load_coef: list[float]  # s = l0 + l1·cells
    fixed_s: float = 0.0  # once per atlas (the sample list)
    pair_work: list[float] | None = (
        None  # [w1, w2]: the work-scaled CKA step per tap / cell (fit_kernel)
    )
    notes: dict[str, Any] = field(default_factory=dict)

    def predict(self, taps: Sequence[int], blocks: Sequence[int]) -> dict[str, float]:
        m, cells = len(taps), block_cells(blocks)
        pairs = pair_terms(taps)
        pair_s = sum(pair_seconds(self.pair_coef, a, b) for a, b in pairs)
        tables = sum(self.table_coef[0] + self.table_coef[1] * a * b for a, b in pairs)
        atlas_s = self.atlas_coef[0] + self.atlas_coef[1] * cells
        page = self.page_coef[0] + self.page_coef[1] * cells
        return {
            "models": m,
            "pairs": len(pairs),
            "cache_s": m * (self.cache_s + self.fetch_s),
            "pair_s": pair_s,
            "atlas_s": atlas_s,
            "total_s": self.fixed_s + m * (self.cache_s + self.fetch_s) + pair_s + atlas_s,
            "disk_mb": m * self.cache_mb + (tables + page) / 1e6,
            "page_mb": page / 1e6,
            "load_s": self.load_coef[0] + self.load_coef[1] * cells,
            "cells": cells,
        }


def paper_extrapolation(
    growth: Growth,
    measured: dict[str, int],
    m: int = 80,
    model: dict[str, float] = PAPER_MODEL,
    atlas_law: dict[str, list[float]] | None = None,
) -> list[dict[str, Any]]:
    """An m-model atlas at the paper's protocols on one GPU (README): GPU caches at the cache rule's images/s
    measured on an H200 (`GPU_RATES`), CPU pair jobs from the measured law with the CKA step's work scaled by
    `work_scale`, or, were the step run on the GPU, its measured time there plus the measured job start-up (the
    law's c0), caches on disk from their format, pair tables from their measured bytes per tap cell, the page
    from the measured page laws, the atlas job (time, peak memory) from `atlas_law` (linear in the tap cells of
    every pair table it reads)."""
    taps, blocks = [int(model["taps"])] * m, [int(model["blocks"])] * m
    cells, tap_cells = block_cells(blocks), block_cells(taps)
    atlas = {}
    if atlas_law:
        atlas = {
            "atlas_rule_s": atlas_law["s"][0] + atlas_law["s"][1] * tap_cells,
            "atlas_peak_gib": (atlas_law["peak_mib"][0] + atlas_law["peak_mib"][1] * tap_cells)
            / 1024,
        }
    tables = sum(growth.table_coef[0] + growth.table_coef[1] * a * b for a, b in pair_terms(taps))
    rows = []
    for label, proto in PAPER_PROTOCOLS.items():
        scale = work_scale(proto, measured)
        pair_s = sum(
            pair_seconds(growth.pair_coef, a, b, scale, growth.pair_work)
            for a, b in pair_terms(taps)
        )
        cache_s = m * cache_gpu_seconds(proto, GPU_RATES)
        gpu_pair_s = sum(
            growth.pair_coef[0] + gpu_step_seconds(a, b, proto, GPU_RATES)
            for a, b in pair_terms(taps)
        )
        rows.append(
            {
                "protocol": label,
                "models": m,
                "pairs": pair_count(m),
                "gpu_cache_h": cache_s / 3600,
                "cpu_pair_core_h": pair_s / 3600,  # CPU seconds (the law's basis) = core-seconds
                "gpu_pair_h": gpu_pair_s / 3600,  # the pair jobs one after another on that GPU
                "pair_work_scale": scale,
                "pair_s_mean": pair_s / pair_count(m),
                "cache_disk_gb": m * cache_bytes(int(model["taps"]), proto) / 1e9,
                "page_mb": (growth.page_coef[0] + growth.page_coef[1] * cells) / 1e6,
                "page_load_s": growth.load_coef[0] + growth.load_coef[1] * cells,
                "tables_gb": tables / 1e9,
                "tap_cells": tap_cells,
                **atlas,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ inputs
def make_weights(path: Path, arch: str, kwargs: dict[str, Any], seed: int) -> None:
    """timm's seeded random initialisation saved as safetensors (loaded with `source: checkpoint`)."""
    if path.exists():
        return
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def workflow_config(
    zoo: Sequence[tuple[str, str, dict]], weights: Path, scale: dict
) -> dict[str, Any]:
    """The generated config: digits upsampled to SIZE px, every model a checkpoint of its random init, cka.pairs
    all; the other analyses shrunk so the config checks pass (the target builds only the atlas)."""
    pre = {"input_size": [3, SIZE, SIZE], "crop_pct": 1.0, "interpolation": "bilinear"}
    small = {"n_images": 64, "batch_size": 64}
    return {
        "seed": 0,
        "device": "cpu",
        "num_workers": 0,
        "analysis_dataset": DATASET,
        "datasets": {
            DATASET: {
                "source": "digits",
                "image_size": SIZE,
                "test_fraction": scale["test_fraction"],
            }
        },
        "models": {
            name: {
                "source": "checkpoint",
                "arch": arch,
                "kwargs": dict(kwargs),
                "path": str(weights / f"{name}.safetensors"),
                "data_config": dict(pre),
            }
            for name, arch, kwargs in zoo
        },
        "cka": {
            "n_images": scale["n_images"],
            "batch_size": scale["batch_size"],
            "repeats": 1,
            "permutations": PERMUTATIONS,
            "pairs": "all",
        },
        "attention": dict(small),
        "erf": {"n_images": 2, "batch_size": 2},
        "skip": dict(small),
        "localisation": dict(small),
        "probes": {"n_test": 64, "batch_size": 64},
    }


# ------------------------------------------------------------------------------------------------ measuring
class JobWatcher:
    """Exact peak memory of every rule job: polls /proc for the python processes of the run's scripts
    (`<run>/.snakemake/scripts/`), names each by the rule log it holds open (`logs/<rule>/...`), and keeps the
    kernel's high-water mark of its resident set (VmHWM), which misses no spike between polls."""

    def __init__(self, run: Path, interval: float = 0.25) -> None:
        self.marker = str(run / ".snakemake" / "scripts")
        self.logs = str(run / "logs") + "/"
        self.interval = interval
        self.peak_kib: dict[str, int] = {}  # log path relative to logs/ → VmHWM
        self._names: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> JobWatcher:  # noqa: PYI034 - py3.10 has no typing.Self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _name(self, pid: int) -> str | None:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(self.logs):
                    return target[len(self.logs) :]
        except OSError:
            pass
        return None

    def _poll(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if self.marker.encode() not in fh.read():
                        continue
                if self._names.get(pid) is None:
                    self._names[pid] = self._name(pid)
                name = self._names[pid]
                if name is None:
                    continue
                hwm = _status_kib("VmHWM", pid)
                self.peak_kib[name] = max(self.peak_kib.get(name, 0), hwm)
            except (OSError, StopIteration, ValueError):
                continue

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval)


def read_benchmark(path: Path) -> dict[str, float] | None:
    """A rule's benchmark file: wall seconds, max_rss (MB, sampled by snakemake), cpu_time."""
    if not path.exists():
        return None
    head, row = path.read_text().strip().splitlines()[:2]
    rec = dict(zip(head.split("\t"), row.split("\t"), strict=True))

    def num(key: str) -> float | None:
        try:
            return float(rec[key])
        except (KeyError, ValueError):
            return None

    return {"s": num("s"), "max_rss_mb": num("max_rss"), "cpu_s": num("cpu_time")}


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bare_worker(model_json: str, samples: str, meta_json: str) -> None:
    """Child mode: the cache's images through the bare model (no hooks), as the cache job loads and feeds it;
    prints the loop's seconds and the process's VmHWM as JSON."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "2"  # the cache rule's threads
    import torch

    from seelike.analyses.cache import repeat_loader
    from seelike.data.samples import read_samples
    from seelike.device import exact_fp32
    from seelike.models.load import load_model

    model, info = load_model(model_json, "cpu")
    plan = json.loads(Path(meta_json).read_text())["plan"]
    dataset_cfg = {"image_size": SIZE, "source": "digits"}
    rows, n_seen = read_samples(samples), 0
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode(), exact_fp32():
        for r in range(plan["repeats"]):
            for x, _ in repeat_loader(rows, plan, r, dataset_cfg, info["data_config"]):
                model(x)
                n_seen += len(x)
    loop = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_SELF)
    res = {
        "loop_s": loop,
        "images": n_seen,
        "peak_kib": _status_kib("VmHWM"),
        "base_kib": base,
        "cpu_s": use.ru_utime + use.ru_stime,  # the whole process, as snakemake's cpu_time of a job
    }
    # beside the run folder, for --analyse-only (results/models/<model>/model.json → <out>/bare/<model>.json)
    side = Path(model_json).resolve().parents[4] / "bare" / f"{Path(model_json).parent.name}.json"
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps(res))
    print(json.dumps(res))


def _status_kib(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(x.split()[1]) for x in fh if x.startswith(field + ":"))


def bare_forward(run: Path, model: str) -> dict[str, float]:
    """The bare forward of `model` over its cache's images in a fresh process: process wall, loop, peak."""
    cache = run / "results" / "cache" / DATASET / model
    cmd = [
        sys.executable, __file__, "--bare-worker",
        str(run / "results" / "models" / model / "model.json"),
        str(run / "results" / "samples" / f"{DATASET}.csv"),
        str(cache / "meta.json"),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=run)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bare forward of {model} failed: {proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "wall_s": wall,
        "loop_s": res["loop_s"],
        "peak_mib": res["peak_kib"] / 1024,
        "base_mib": res["base_kib"] / 1024,
        "cpu_s": res.get("cpu_s"),
    }


class PageTimer:
    """Headless Chromium (Debian's, through Playwright): seconds from `goto` to `body[data-ready]`."""

    def __enter__(self) -> PageTimer:  # noqa: PYI034
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        self.warm = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.browser.close()
        self._pw.stop()

    def load(self, html: Path, repeats: int = PAGE_LOADS) -> dict[str, Any]:
        """Median seconds of `repeats` loads, each in a fresh browser context, after one untimed warm-up load
        (the browser's first page pays its own start)."""
        times, errors = [], []
        for _ in range(repeats + (not self.warm)):
            ctx = self.browser.new_context(viewport={"width": 1400, "height": 1000})
            tab = ctx.new_page()
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            tab.goto(html.as_uri(), timeout=600_000)
            tab.wait_for_selector("body[data-ready]", state="attached", timeout=600_000)
            times.append(time.perf_counter() - t0)
            ctx.close()
        if not self.warm:
            times, self.warm = times[1:], True
        return {"load_s": statistics.median(times), "loads_s": times, "errors": errors[:5]}


# ------------------------------------------------------------------------------------------------ the CKA step
def kernel_times(out: Path, repeats: int = 2) -> dict[str, Any]:
    """The pair jobs' step without its job: `cka_from_caches` (what the cka rule runs: read both caches,
    U-centre, the stacked product and 20 permutation draws, the long table) in this process, on one torch
    thread, timed in CPU seconds (min of `repeats`), for the probe's pairs in the main run (its protocol) and
    in the probe run (1/work_ratio of the work per tap cell). Start-up noise gone, the two protocols separate
    the work per tap cell from per-cell bookkeeping (`fit_kernel`)."""
    import torch

    from seelike.analyses.cka_tables import cka_from_caches

    torch.set_num_threads(1)
    names = [n for n, _, _ in ZOO[: PROBE["models"]]]
    rows = []
    for label, folder in (("main", out / "run"), ("probe", out / "probe")):
        caches = folder / "results" / "cache" / DATASET
        for i, a in enumerate(names):
            for b in names[i:]:
                times = []
                for _ in range(repeats):
                    t0 = time.process_time()
                    cka_from_caches(caches / a, caches / b, "cpu", permutations=PERMUTATIONS)
                    times.append(time.process_time() - t0)
                ta, tb = model_taps(folder, a)[0], model_taps(folder, b)[0]
                rows.append(
                    {
                        "protocol": label,
                        "a": a,
                        "b": b,
                        "taps_a": ta,
                        "taps_b": tb,
                        "cpu_s": min(times),
                    }
                )
        print(
            f"  kernel, {label}: {sum(r['cpu_s'] for r in rows if r['protocol'] == label):.1f} s CPU",
            flush=True,
        )
    return {"kernel": rows}


def fit_kernel(rows: Sequence[dict], ratio: float) -> dict[str, Any]:
    """Per protocol the law cpu = k0 + k1·(taps_a + taps_b) + k2·taps_a·taps_b of the in-process step; the part
    of (k1, k2) that grows with the work per tap cell, w = (k_main − k_probe) / (1 − 1/ratio), and the rest,
    per-tap and per-cell bookkeeping, f = k_main − w."""
    laws = {}
    for label in ("main", "probe"):
        rs = [r for r in rows if r["protocol"] == label]
        coef, r2 = fit_linear(
            [[r["taps_a"] + r["taps_b"] for r in rs], [r["taps_a"] * r["taps_b"] for r in rs]],
            [r["cpu_s"] for r in rs],
        )
        laws[label] = {"coef": coef, "r2": r2}
    main, probe = laws["main"]["coef"], laws["probe"]["coef"]
    work = [(m - p) / (1.0 - 1.0 / ratio) for m, p in zip(main[1:], probe[1:], strict=True)]
    return {**laws, "work": work, "fixed": [m - w for m, w in zip(main[1:], work, strict=True)]}


# ------------------------------------------------------------------------------------------------ larger pages
SYNTHETIC_M = (24, 48, 80)
SYNTHETIC_M_SMALL = (6,)


def page_data(html: Path) -> dict[str, Any]:
    """The atlas data a page carries inline (`<script type="application/json" id="atlas-data">`)."""
    text = html.read_text(encoding="utf-8")
    start = text.index('id="atlas-data">') + len('id="atlas-data">')
    return json.loads(text[start : text.index("</script>", start)])


def _transposed(pair: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: [list(col) for col in zip(*pair[k], strict=True)] for k in ("cka", "se", "p", "distinct")
    }
    cell = pair.get("score_cell")
    return out | {k: pair.get(k) for k in SCORE_KEYS} | {"score_cell": cell[::-1] if cell else None}


def replicate_atlas(data: dict[str, Any], m: int) -> dict[str, Any]:
    """An m-model atlas made of copies of a measured one's models (model i is copy i // k of model i % k): the
    same blocks per model and the same cells; the pair of two copies is their originals' pair, two copies of one
    model a cross pair with that model's self matrix (score 1)."""
    base, k = data["models"], len(data["models"])
    names = [base[i % k]["name"] + (f"_{i // k}" if i >= k else "") for i in range(m)]
    models = [{**base[i % k], "name": names[i]} for i in range(m)]
    lookup = {(p["a"], p["b"]): p for p in data["pairs"]}
    twin = {"score": 1.0, "score_se": 0.0, "score_p": 1 / (data["permutations"] + 1), "score_tau": None,
            "score_calibrated": 1.0, "diagonal": 1.0, "diagonal_se": 0.0, "score_cell": [0, 0]}  # fmt: skip
    pairs = []
    for i in range(m):
        for j in range(i, m):
            a, b = base[i % k]["name"], base[j % k]["name"]
            p = lookup[(a, b)] if (a, b) in lookup else _transposed(lookup[(b, a)])
            entry = {
                "a": names[i],
                "b": names[j],
                **{key: p[key] for key in ("cka", "se", "p", "distinct")},
            }
            extra = (
                twin
                if a == b and i != j
                else {key: p.get(key) for key in (*SCORE_KEYS, "score_cell")}
            )
            pairs.append(entry | extra)
    return {**data, "models": models, "pairs": pairs}


def synthetic_pages(
    html: Path, folder: Path, pages: PageTimer, ms=SYNTHETIC_M
) -> list[dict[str, Any]]:
    """Pages of larger atlases made from a measured page's data (`replicate_atlas`): the time `write_page`
    takes (the page part of the atlas job: clustering, embedding, JSON; not reading the tables or the pair
    scores), the page's size and its load in Chromium."""
    from seelike.atlas.page import write_page

    data = page_data(html)
    rows = []
    for m in ms:
        big = replicate_atlas(data, m)
        path = folder / f"atlas_M{m}.html"
        t0 = time.perf_counter()
        write_page(big, path)
        write_s = time.perf_counter() - t0
        load = pages.load(path)
        cells = block_cells([len(x["blocks"]) for x in big["models"]])
        rows.append({"models": m, "cells": cells, "write_page_s": write_s,
                     "page_mb": path.stat().st_size / 1e6, **load})  # fmt: skip
        print(
            f"  synthetic M = {m}: page {rows[-1]['page_mb']:.1f} MB, load {load['load_s']:.1f} s",
            flush=True,
        )
        path.unlink()
    return rows


# ------------------------------------------------------------------------------------------------ the run
def model_taps(run: Path, model: str) -> tuple[int, int]:
    """(taps, block outputs) of a model, from its taps.csv."""
    import pandas as pd

    t = pd.read_csv(run / "results" / "models" / model / "taps.csv")
    return len(t), int(t["kind"].isin(BLOCK_OUTPUT_KINDS).sum())


def run_snakemake(run: Path, cores: int) -> tuple[float, str, dict[str, int], str]:
    """The workflow on the run folder's config (target atlas_all): wall seconds, log, jobs run per rule."""
    cmd = [
        SNAKEMAKE, "atlas_all",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(run),
        "--profile", str(REPO / "profiles" / "default"),
        "--configfile", str(run / "config.yaml"),
        "--cores", str(cores),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(log[-6000:], file=sys.stderr)
        raise RuntimeError(f"the workflow failed ({proc.returncode})")
    jobs: dict[str, int] = {}
    for rule in re.findall(r"^\s*(?:local)?rule (\w+):$", log, flags=re.MULTILINE):
        jobs[rule] = jobs.get(rule, 0) + 1
    return wall, log, jobs, shlex.join(cmd)


def model_rows(run: Path, names: Sequence[str], watcher: JobWatcher, stage: int) -> list[dict]:
    rows = []
    for name in names:
        bench = read_benchmark(run / "results" / "benchmarks" / "cache" / DATASET / f"{name}.tsv")
        fetch = read_benchmark(run / "results" / "benchmarks" / "models" / f"{name}.tsv")
        cache = run / "results" / "cache" / DATASET / name
        meta = json.loads((cache / "meta.json").read_text())
        taps, blocks = model_taps(run, name)
        bare = bare_forward(run, name)
        images = meta["plan"]["n_images"] * meta["plan"]["repeats"]
        peak = watcher.peak_kib.get(f"cache/{DATASET}/{name}.log")
        rows.append(
            {
                "stage": stage,
                "model": name,
                "arch": next(a for n, a, _ in ZOO if n == name),
                "taps": taps,
                "blocks": blocks,
                "fetch_s": fetch["s"],
                "cache_s": bench["s"],
                "fetch_cpu_s": fetch["cpu_s"],
                "cache_cpu_s": bench["cpu_s"],
                "bare_cpu_s": bare.get("cpu_s"),
                "stream_s": images / meta["images_per_second"],
                "bare_wall_s": bare["wall_s"],
                "bare_loop_s": bare["loop_s"],
                "time_ratio": bench["s"] / bare["wall_s"],
                "stream_ratio": images / meta["images_per_second"] / bare["loop_s"],
                "cache_peak_mib": peak / 1024 if peak else None,
                "cache_max_rss_mib": bench["max_rss_mb"],
                "bare_peak_mib": bare["peak_mib"],
                "mem_ratio": (peak / 1024) / bare["peak_mib"] if peak else None,
                # above the bare process's resident set before its first batch (imports, model, samples)
                "base_mib": bare["base_mib"],
                "cache_extra_mib": peak / 1024 - bare["base_mib"] if peak else None,
                "bare_extra_mib": bare["peak_mib"] - bare["base_mib"],
                "cache_mb": tree_bytes(cache) / 1e6,
            }
        )
        print(
            f"  {name}: {taps} taps, cache {bench['s']:.1f} s vs bare {bare['wall_s']:.1f} s, "
            f"peak {rows[-1]['cache_peak_mib'] or 0:.0f} vs {bare['peak_mib']:.0f} MiB",
            flush=True,
        )
    return rows


def pair_rows(
    run: Path, names: Sequence[str], done: set, taps: dict, watcher: JobWatcher, stage: int
):
    rows = []
    for i, a in enumerate(names):
        for b in names[i:]:
            if (a, b) in done:
                continue
            done.add((a, b))
            bench = read_benchmark(
                run / "results" / "benchmarks" / "cka" / DATASET / f"{a}__{b}.tsv"
            )
            peak = watcher.peak_kib.get(f"cka/{DATASET}/{a}__{b}.log") if watcher else None
            table = run / "results" / "cka" / DATASET / f"{a}__{b}.parquet"
            rows.append(
                {
                    "stage": stage,
                    "a": a,
                    "b": b,
                    "taps_a": taps[a],
                    "taps_b": taps[b],
                    "s": bench["s"],
                    "cpu_s": bench["cpu_s"],
                    "peak_mib": peak / 1024 if peak else None,
                    "max_rss_mib": bench["max_rss_mb"],
                    "table_bytes": tree_bytes(table),
                }
            )
    return rows


def stage_row(run: Path, m: int, wall: float, jobs: dict, pages: PageTimer) -> dict[str, Any]:
    atlas = read_benchmark(run / "results" / "benchmarks" / "atlas" / f"{DATASET}.tsv")
    html = run / "results" / "atlas" / DATASET / "index.html"
    load = pages.load(html)
    disk = {
        "cache": tree_bytes(run / "results" / "cache" / DATASET),
        "cka": tree_bytes(run / "results" / "cka" / DATASET),
        "atlas": tree_bytes(run / "results" / "atlas" / DATASET),
        "figure": sum(
            tree_bytes(run / "results" / "figures" / DATASET / f"atlas_overview.{e}")
            for e in ("png", "pdf")
        ),
    }
    return {
        "models": m,
        "snakemake_wall_s": wall,
        "jobs": jobs,
        "atlas_s": atlas["s"],
        "atlas_cpu_s": atlas["cpu_s"],
        "atlas_peak_mib": None,
        "atlas_max_rss_mib": atlas["max_rss_mb"],
        "page_mb": html.stat().st_size / 1e6,
        "load_s": load["load_s"],
        "loads_s": load["loads_s"],
        "page_errors": load["errors"],
        "disk_mb": {k: v / 1e6 for k, v in disk.items()},
        "disk_total_mb": sum(disk.values()) / 1e6,
    }


# ------------------------------------------------------------------------------------------------ analysis
# Two bases for every time: "wall" (the jobs' wall seconds) and "cpu" (their CPU seconds, snakemake's cpu_time:
# all threads of the job's processes; the laws and the extrapolation use it, as it barely depends on the other
# load of a shared machine). fetch_model is a local rule with one thread: two run at once on 2 cores, so its wall
# time counts threads / cores; every other job holds both cores (threads: 2) or runs alone. The atlas job is
# timed by wall (its benchmark file is rewritten per stage, so only the last stage's CPU time is on disk).
BASES = {
    "wall": {"cache": "cache_s", "fetch": "fetch_s", "pair": "s"},
    "cpu": {"cache": "cache_cpu_s", "fetch": "fetch_cpu_s", "pair": "cpu_s"},
}
ONE_THREAD_RULES = ("fetch_model",)


def job_weight(rule: str, cores: int, basis: str = "wall") -> float:
    return 1.0 / cores if basis == "wall" and rule in ONE_THREAD_RULES else 1.0


def fit_growth(
    models: list[dict],
    pairs: list[dict],
    stages: list[dict],
    fixed_s: float,
    cores: int,
    basis: str = "wall",
    pages: Sequence[dict] = (),
) -> Growth:
    """The growth laws: cache and pair laws from the given jobs, the atlas job from the given stages, page size
    and load from the stages and `pages` (larger pages, `synthetic_pages`), all linear in the page's block cells
    (through the origin when there is one point only)."""
    key = BASES[basis]
    # c0 + c2·ta·tb: the per-tap term is not identifiable in the jobs' noise (fit_kernel resolves it in-process)
    (c0, c2), pair_r2 = fit_linear(
        [[p["taps_a"] * p["taps_b"] for p in pairs]], [p[key["pair"]] for p in pairs]
    )
    pair_coef = [c0, 0.0, c2]
    table_coef, _ = fit_linear(
        [[p["taps_a"] * p["taps_b"] for p in pairs]], [p["table_bytes"] for p in pairs]
    )

    def stage_fit(name: str, unit: float = 1.0, rows: Sequence[dict] = stages) -> list[float]:
        cells, ys = [s["cells"] for s in rows], [s[name] * unit for s in rows]
        if len(rows) == 1:
            return [0.0, ys[0] / cells[0]]
        return fit_linear([cells], ys)[0]

    weight = job_weight("fetch_model", cores, basis)
    return Growth(
        cache_s=statistics.mean(r[key["cache"]] for r in models),
        fetch_s=statistics.mean(r[key["fetch"]] for r in models) * weight,
        cache_mb=statistics.mean(r["cache_mb"] for r in models),
        pair_coef=pair_coef,
        table_coef=table_coef,
        atlas_coef=stage_fit("atlas_s"),
        page_coef=stage_fit("page_mb", 1e6, [*stages, *pages]),
        load_coef=stage_fit("load_s", 1.0, [*stages, *pages]),
        fixed_s=fixed_s,
        notes={
            "basis": basis,
            "pair_r2": pair_r2,
            "fitted_on": {
                "models": len(models),
                "pairs": len(pairs),
                "stages": [s["models"] for s in stages],
            },
        },
    )


def measured_totals(
    models: list[dict],
    pairs: list[dict],
    stage: dict,
    fixed_s: float,
    cores: int,
    basis: str = "wall",
) -> dict[str, float]:
    """An M-model atlas from scratch: the jobs of its first M models and their pairs, and its atlas job."""
    key = BASES[basis]
    names = {r["model"] for r in models[: stage["models"]]}
    mods = [r for r in models if r["model"] in names]
    prs = [p for p in pairs if p["a"] in names and p["b"] in names]
    w = job_weight("fetch_model", cores, basis)
    cache_s = sum(r[key["cache"]] + w * r[key["fetch"]] for r in mods)
    pair_s = sum(p[key["pair"]] for p in prs)
    tables = sum(p["table_bytes"] for p in prs) / 1e6
    html = stage["page_mb"]
    return {
        "models": stage["models"],
        "pairs": len(prs),
        "cache_s": cache_s,
        "pair_s": pair_s,
        "atlas_s": stage["atlas_s"],
        "total_s": fixed_s + cache_s + pair_s + stage["atlas_s"],
        "disk_mb": sum(r["cache_mb"] for r in mods) + tables + html,
        "page_mb": html,
        "load_s": stage["load_s"],
    }


def enrich(result: dict[str, Any], out: Path) -> None:
    """Fill what a result lacks from the run folders (CPU seconds from the benchmark files, the bare forwards'
    CPU from <out>/bare/; a bare forward with no such file is run again now and marked `bare_cpu_later`)."""
    run = out / "run"
    bench = run / "results" / "benchmarks"
    probe = out / "probe"
    if (
        "probe" not in result
        and not result["scale"].get("small")
        and (probe / "config.yaml").exists()
    ):
        names = [n for n, _, _ in ZOO[: PROBE["models"]]]
        taps = {n: model_taps(probe, n)[0] for n in names}
        work = result["scale"]["n_images"] * result["scale"]["batch_size"]
        result["probe"] = {
            **PROBE,
            "work_ratio": work / (PROBE["n_images"] * PROBE["batch_size"]),
            "pairs": pair_rows(probe, names, set(), taps, None, 0),
        }
    for r in result["models"]:
        name = r["model"]
        if r.get("cache_cpu_s") is None:
            r["cache_cpu_s"] = read_benchmark(bench / "cache" / DATASET / f"{name}.tsv")["cpu_s"]
            r["fetch_cpu_s"] = read_benchmark(bench / "models" / f"{name}.tsv")["cpu_s"]
        if r.get("bare_cpu_s") is None:
            side = out / "bare" / f"{name}.json"
            if not side.exists():
                bare_forward(run, name)
                r["bare_cpu_later"] = True
            r["bare_cpu_s"] = json.loads(side.read_text())["cpu_s"]
    for folder, rows in (
        (run, result["pairs"]),
        (out / "probe", (result.get("probe") or {}).get("pairs", [])),
    ):
        for p in rows:
            if p.get("cpu_s") is None:
                tsv = (
                    folder / "results" / "benchmarks" / "cka" / DATASET / f"{p['a']}__{p['b']}.tsv"
                )
                p["cpu_s"] = read_benchmark(tsv)["cpu_s"]
    for s in result["stages"]:
        s.setdefault("atlas_cpu_s", None)
    result["stages"][-1]["atlas_cpu_s"] = read_benchmark(bench / "atlas" / f"{DATASET}.tsv")[
        "cpu_s"
    ]


def analyse(result: dict[str, Any]) -> None:
    """Per basis (wall, cpu): growth laws from the first stage's jobs and the first two stages (`first`) and from
    all jobs and stages (`all`), the measured totals of each stage's atlas from scratch and their predictions;
    the overhead of snakemake per stage; the 80-model extrapolation on the CPU basis."""
    models, pairs, stages = result["models"], result["pairs"], result["stages"]
    fixed, cores = result["fixed_s"], result["cores"]
    for old in ("growth_first_stage", "growth_all"):  # an earlier version's keys
        result.pop(old, None)
    for m in models:
        m["cpu_ratio"] = m["cache_cpu_s"] / m["bare_cpu_s"] if m.get("bare_cpu_s") else None
    order = [r["model"] for r in models]
    taps = {r["model"]: r["taps"] for r in models}
    blocks = {r["model"]: r["blocks"] for r in models}
    for s in stages:
        s["cells"] = block_cells([blocks[n] for n in order[: s["models"]]])
        s["tap_cells"] = block_cells([taps[n] for n in order[: s["models"]]])
    if len(stages) > 1:  # the atlas job reads every pair's whole table: taps_a × taps_b rows each
        result["atlas_law"] = {
            "s": fit_linear([[s["tap_cells"] for s in stages]], [s["atlas_s"] for s in stages])[0],
            "peak_mib": fit_linear(
                [[s["tap_cells"] for s in stages if s.get("atlas_peak_mib")]],
                [s["atlas_peak_mib"] for s in stages if s.get("atlas_peak_mib")],
            )[0],
        }
    first = stages[0]["models"]
    result["laws"], result["totals"], result["predicted"] = {}, {}, {}
    for basis in BASES:
        g_pred = fit_growth(
            [r for r in models if r["stage"] == first],
            [p for p in pairs if p["stage"] == first],
            stages[:2],
            fixed,
            cores,
            basis,
        )
        g_all = fit_growth(models, pairs, stages, fixed, cores, basis, result.get("synthetic", []))
        if result.get("kernel"):
            kernel = fit_kernel(result["kernel"], result["probe"]["work_ratio"])
            g_all.pair_work = kernel["work"]
            g_all.notes["kernel"] = kernel
        result["laws"][basis] = {"first": g_pred.__dict__, "all": g_all.__dict__}
        result["totals"][basis] = [
            measured_totals(models, pairs, s, fixed, cores, basis) for s in stages
        ]
        result["predicted"][basis] = [
            g_pred.predict(
                [taps[n] for n in order[: s["models"]]], [blocks[n] for n in order[: s["models"]]]
            )
            for s in stages
        ]
    for s, t in zip(stages, result["totals"]["wall"], strict=True):
        prev = max((x for x in result["totals"]["wall"] if x["models"] < s["models"]), key=lambda x: x["models"],
                   default=None)  # fmt: skip
        new_jobs = t["total_s"] - (prev["total_s"] - prev["atlas_s"] if prev else 0.0)
        s["overhead_s"] = (
            s["snakemake_wall_s"] - new_jobs
        )  # parse, DAG, scheduling, job start outside the job
    measured = {
        "n_images": result["scale"]["n_images"],
        "repeats": 1,
        "batch_size": result["scale"]["batch_size"],
    }
    result["paper_80"] = paper_extrapolation(
        Growth(**result["laws"]["cpu"]["all"]), measured, atlas_law=result.get("atlas_law")
    )


def plot(result: dict[str, Any], path: Path) -> None:
    """Against M on log-log axes: job time of an M-model atlas (CPU and wall), disk, page size and page load —
    measured per stage (and the larger pages), with the laws (CPU: fitted on the first stage's jobs and the first
    two stages' pages; the page panels also the law fitted on every page) over the zoo repeated to 80 models;
    and the pair jobs' CPU time against the tap product with the law fitted on all of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    laws = result["laws"]
    first, wall, every = (
        Growth(**laws[b][k]) for b, k in (("cpu", "first"), ("wall", "first"), ("cpu", "all"))
    )
    order = [r["model"] for r in result["models"]]
    taps = {r["model"]: r["taps"] for r in result["models"]}
    blocks = {r["model"]: r["blocks"] for r in result["models"]}
    ms = list(range(2, max(SYNTHETIC_M) + 1))
    zoo = [
        (
            [taps[order[i % len(order)]] for i in range(m)],
            [blocks[order[i % len(order)]] for i in range(m)],
        )
        for m in ms
    ]
    pred, pred_wall, pred_all = ([g.predict(*z) for z in zoo] for g in (first, wall, every))
    meas, meas_wall = result["totals"]["cpu"], result["totals"]["wall"]
    synth = result.get("synthetic") or []
    fit = laws["cpu"]["first"]["notes"]["fitted_on"]
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.6))
    ax = axes[0]
    ax.plot(ms, [p["total_s"] / 60 for p in pred], "-", color="C3", label="CPU, law")
    ax.plot(
        ms, [p["pair_s"] / 60 for p in pred], ":", color="C3", label="CPU of the pair jobs, law"
    )
    ax.plot(
        ms,
        [p["cache_s"] / 60 for p in pred],
        "--",
        color="C3",
        lw=0.8,
        label="CPU of the caches, law",
    )
    ax.plot(ms, [p["total_s"] / 60 for p in pred_wall], "-", color="0.6", label="wall, law")
    ax.plot(
        [t["models"] for t in meas], [t["total_s"] / 60 for t in meas], "o", color="C3", label="CPU"
    )
    ax.plot([t["models"] for t in meas_wall], [t["total_s"] / 60 for t in meas_wall], "s", color="0.4",
            label="wall")  # fmt: skip
    ax.set_ylabel("job time of an M-model atlas (min)")
    panels = [
        ("disk_mb", "disk (MB)"),
        ("page_mb", "page size (MB)"),
        ("load_s", "page load in Chromium (s)"),
    ]
    for ax, (key, label) in zip(axes[1:4], panels, strict=True):
        if key != "load_s":  # the load barely moves below M = 16: its first-stages slope is noise
            ax.plot(ms, [p[key] for p in pred], "-", color="0.5", label="law (first stages)")
        if key != "disk_mb":
            ax.plot(ms, [p[key] for p in pred_all], "--", color="C0", label="law (every page)")
            ax.plot([p["models"] for p in synth], [p[key] for p in synth], "^", color="C0",
                    label="larger pages (repeated models)")  # fmt: skip
        ax.plot(
            [t["models"] for t in meas], [t[key] for t in meas], "o", color="C3", label="measured"
        )
        ax.set_ylabel(label)
    for ax in axes[:4]:
        ax.set_xscale("log")
        ax.set_yscale("linear" if ax is axes[3] else "log")
        ax.set_xticks([2, 4, 8, 16, 24, 48, 80])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel(
            f"models M (laws: jobs of M = {fit['models']}, zoo repeated beyond {len(order)})"
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    ax = axes[4]
    prs = result["pairs"]
    ax.scatter([p["taps_a"] * p["taps_b"] for p in prs], [p["cpu_s"] for p in prs], s=9, alpha=0.6,
               label="cka jobs (CPU)")  # fmt: skip
    kernel = [k for k in result.get("kernel") or [] if k["protocol"] == "main"]
    ax.scatter([k["taps_a"] * k["taps_b"] for k in kernel], [k["cpu_s"] for k in kernel], s=14, marker="x",
               color="k", label="the CKA step alone (in-process, 1 thread)")  # fmt: skip
    c0, _, c2 = laws["cpu"]["all"]["pair_coef"]
    xs = sorted({p["taps_a"] * p["taps_b"] for p in prs})
    ax.plot(xs, [c0 + c2 * x for x in xs], color="C3", lw=1, label="law c0 + c2·taps_a·taps_b")
    ax.set_xlabel("taps_a × taps_b")
    ax.set_ylabel("pair job CPU (s)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(
        f"Atlas at scale: {len(order)} random-init timm models, {result['scale']['n_images']} digits images at "
        f"{SIZE} px, minibatch {result['scale']['batch_size']}, {PERMUTATIONS} permutations, CPU "
        f"(snakemake --cores {result['cores']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ report
def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(vals) if vals else math.nan


def _models_md(r: dict[str, Any]) -> list[str]:
    out = [
        "Per model: its cache job against a bare forward pass over the same images (fresh process, same loader,",
        "batch and threads, no hooks). Wall and CPU seconds of the whole process; peaks: VmHWM of the process",
        "(snakemake's sampled max_rss in brackets); extra = above the bare process's resident set before its first",
        "batch (imports, model, sample list).",
        "",
        (
            "| M | model | arch | taps | blocks | cache job s (CPU) | bare fwd s (CPU) | ratio wall / CPU "
            "| stream / bare loop | cache peak MiB (max_rss) | bare peak MiB | ratio | extra MiB cache / bare "
            "| cache MB |"
        ),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in r["models"]:
        out.append(
            f"| {m['stage']} | {m['model']} | `{m['arch']}` | {m['taps']} | {m['blocks']} "
            f"| {m['cache_s']:.1f} ({m['cache_cpu_s']:.1f}) | {m['bare_wall_s']:.1f} ({_f(m['bare_cpu_s'])}) "
            f"| {m['time_ratio']:.2f} / {_f(m['cpu_ratio'], '{:.2f}')} | {m['stream_ratio']:.2f} "
            f"| {_f(m['cache_peak_mib'], '{:.0f}')} ({_f(m['cache_max_rss_mib'], '{:.0f}')}) "
            f"| {m['bare_peak_mib']:.0f} | {_f(m['mem_ratio'], '{:.2f}')} "
            f"| {_f(m['cache_extra_mib'], '{:.0f}')} / {m['bare_extra_mib']:.0f} | {m['cache_mb']:.2f} |"
        )
    ms = r["models"]
    later = [m["model"] for m in ms if m.get("bare_cpu_later")]
    out += [
        "",
        (
            f"Means: cache job {_mean(ms, 'cache_s'):.1f} s wall, {_mean(ms, 'cache_cpu_s'):.1f} s CPU = "
            f"{_mean(ms, 'time_ratio'):.2f}× / {_mean(ms, 'cpu_ratio'):.2f}× the bare forward process "
            f"(streaming loop {_mean(ms, 'stream_ratio'):.2f}× the bare loop, wall); peak "
            f"{_mean(ms, 'mem_ratio'):.2f}× the bare process's ({_mean(ms, 'cache_extra_mib'):.0f} vs "
            f"{_mean(ms, 'bare_extra_mib'):.0f} MiB above its baseline); cache {_mean(ms, 'cache_mb'):.2f} MB; "
            f"fetch_model {_mean(ms, 'fetch_s'):.1f} s wall, {_mean(ms, 'fetch_cpu_s'):.1f} s CPU."
        ),
    ]
    if later:
        out.append(
            f"The bare forwards' CPU time of {', '.join(later)} was measured again after the run."
        )
    return out


def _law_line(label: str, g: dict) -> str:
    c0, _, c2 = g["pair_coef"]
    return (
        f"- {label} ({g['notes']['fitted_on']['pairs']} jobs): t = {c0:.2f} s + {c2 * 1e3:.4f} ms·taps_a·taps_b "
        f"(R² {g['notes']['pair_r2']:.2f})"
    )


def _pairs_md(r: dict[str, Any]) -> list[str]:
    prs = r["pairs"]
    laws = r["laws"]
    out = [
        _law_line("CPU, all pair jobs", laws["cpu"]["all"]),
        _law_line("CPU, first stage only", laws["cpu"]["first"]),
        _law_line("wall, all pair jobs", laws["wall"]["all"]),
    ]
    kernel = laws["cpu"]["all"]["notes"].get("kernel")
    if kernel:
        pr = r["probe"]
        (k0, k1, k2), (p0, p1, p2) = kernel["main"]["coef"], kernel["probe"]["coef"]
        (w1, w2), (f1, f2) = kernel["work"], kernel["fixed"]
        out += [
            (
                f"- the CKA step alone (`cka_from_caches` in-process, 1 thread, CPU s) on the first {pr['models']} "
                f"models' {len(r['kernel']) // 2} pairs: {k0:.3f} s + {k1 * 1e3:.2f} ms·(taps_a + taps_b) + "
                f"{k2 * 1e3:.4f} ms·taps_a·taps_b (R² {kernel['main']['r2']:.2f}) at this protocol; "
                f"{p0:.3f} s + {p1 * 1e3:.2f} ms·(…) + {p2 * 1e3:.4f} ms·(…) (R² {kernel['probe']['r2']:.2f}) at "
                f"{pr['n_images']} images, minibatch {pr['batch_size']} ({pr['work_ratio']:.0f}× less work per tap "
                "cell)"
            ),
            (
                f"- so per unit of this protocol's work: {w1 * 1e3:.2f} ms per tap and {w2 * 1e3:.4f} ms per tap cell "
                f"grow with the work (n_images × repeats × n); {f1 * 1e3:.2f} ms per tap and {f2 * 1e3:.4f} ms per "
                "cell do not; the rest of a job (its CPU minus the step's) is start-up: "
                f"{_mean(prs, 'cpu_s') - _mean(r['kernel'], 'cpu_s'):.1f} s CPU on average"
            ),
        ]
    table = laws["cpu"]["all"]["table_coef"]
    return [
        "",
        (
            f"Pair jobs ({len(prs)}, `cka` with {PERMUTATIONS} permutations): {_mean(prs, 's'):.1f} s wall "
            f"({min(p['s'] for p in prs):.1f}–{max(p['s'] for p in prs):.1f}), {_mean(prs, 'cpu_s'):.1f} s CPU "
            f"({min(p['cpu_s'] for p in prs):.1f}–{max(p['cpu_s'] for p in prs):.1f}); peak "
            f"{_f(max((p['peak_mib'] or 0) for p in prs), '{:.0f}')} MiB; table {table[0] / 1e3:.1f} kB + "
            f"{table[1]:.1f} B·taps_a·taps_b"
        ),
        *out,
    ]


def _stages_md(r: dict[str, Any]) -> list[str]:
    out = [
        "",
        "Per stage (models added to the previous stage's finished atlas):",
        "",
        (
            "| M | jobs run | snakemake wall s | of which outside jobs s | atlas job s | atlas peak MiB | page MB "
            f"| page load s (median of {PAGE_LOADS}) | disk MB (caches / cka / atlas) |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["stages"]:
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(s["jobs"].items()) if k != "atlas_all")
        d = s["disk_mb"]
        out.append(
            f"| {s['models']} | {jobs} | {s['snakemake_wall_s']:.0f} | {s['overhead_s']:.0f} | {s['atlas_s']:.1f} "
            f"| {_f(s['atlas_peak_mib'], '{:.0f}')} | {s['page_mb']:.2f} | {s['load_s']:.2f} "
            f"({', '.join(f'{x:.2f}' for x in s['loads_s'])}) | {s['disk_total_mb']:.1f} "
            f"({d['cache']:.1f} / {d['cka']:.1f} / {d['atlas']:.1f}) |"
        )
    return out


def _synthetic_md(r: dict[str, Any]) -> list[str]:
    rows = r.get("synthetic") or []
    if not rows:
        return []
    last = r["stages"][-1]["models"]
    out = [
        "",
        (
            f"Pages of larger atlases, made from the M = {last} page's data by repeating its models (same blocks "
            "and cells; `write_page` = the page part of the atlas job: clustering, embedding, JSON):"
        ),
        "",
        "| M | block cells | write_page s | page MB | page load s | console errors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in rows:
        out.append(
            f"| {p['models']} | {p['cells']} | {p['write_page_s']:.1f} | {p['page_mb']:.1f} "
            f"| {p['load_s']:.2f} ({', '.join(f'{x:.2f}' for x in p['loads_s'])}) | {len(p['errors'])} |"
        )
    return out


def _growth_md(r: dict[str, Any]) -> list[str]:
    fit = r["laws"]["cpu"]["first"]["notes"]["fitted_on"]
    out = [
        "",
        (
            "Growth: an M-model atlas from scratch (every job of its first M models and their pairs, its atlas job), "
            f"measured (predicted from the cache and pair jobs of the first {fit['models']} models and the atlas "
            f"job / page of stages {', '.join(map(str, fit['stages']))}):"
        ),
        "",
        (
            "| M | pairs | caches CPU s | pairs CPU s | atlas s | total CPU min | total wall min | disk MB "
            "| page MB | page load s | block cells |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = zip(
        r["totals"]["cpu"], r["predicted"]["cpu"], r["totals"]["wall"], r["predicted"]["wall"], r["stages"],
        strict=True,
    )  # fmt: skip
    for t, p, tw, pw, s in rows:
        out.append(
            f"| {t['models']} | {t['pairs']} | {t['cache_s']:.0f} ({p['cache_s']:.0f}) | {t['pair_s']:.0f} "
            f"({p['pair_s']:.0f}) | {t['atlas_s']:.1f} ({p['atlas_s']:.1f}) | {t['total_s'] / 60:.1f} "
            f"({p['total_s'] / 60:.1f}) | {tw['total_s'] / 60:.1f} ({pw['total_s'] / 60:.1f}) "
            f"| {t['disk_mb']:.1f} ({p['disk_mb']:.1f}) | {t['page_mb']:.2f} ({p['page_mb']:.2f}) "
            f"| {t['load_s']:.2f} ({p['load_s']:.2f}) | {s['cells']} |"
        )
    g = r["laws"]["cpu"]["all"]
    out += [
        "",
        (
            f"Laws (all jobs and stages): per model a cache job of {g['cache_s']:.1f} s CPU + fetch_model "
            f"{g['fetch_s']:.1f} s CPU and {g['cache_mb']:.2f} MB of cache (∝ M); pair jobs as above (M(M+1)/2 of "
            f"them, ∝ taps_a·taps_b each); atlas job {g['atlas_coef'][0]:.1f} s + {g['atlas_coef'][1] * 1e3:.3f} "
            f"ms/cell; page {g['page_coef'][0] / 1e6:.2f} MB + {g['page_coef'][1]:.1f} B/cell; load "
            f"{g['load_coef'][0]:.2f} s + {g['load_coef'][1] * 1e3:.3f} ms/cell (cells = Σ over the pairs of "
            "blocks_a × blocks_b ≈ (M·blocks)²/2; page laws fitted on the stages and the larger pages)."
        ),
    ]
    return out


def _paper_md(r: dict[str, Any]) -> list[str]:
    out = [
        "",
        *(
            [
                "(Smoke test: rates from a few jobs on 128 images; the numbers below only show that it runs.)"
            ]
            if r["scale"].get("small")
            else []
        ),
        (
            f"Extrapolation to 80 models at the paper's protocol ({PAPER_MODEL['taps']} taps and "
            f"{PAPER_MODEL['blocks']} blocks per model; caches on one GPU at the images/s measured on an H200 "
            "(GPU_RATES); pair jobs on the CPU: the job law plus (work × − 1) × the CKA step's work-scaled part; "
            "or, were the step run on the GPU (the rule pins the CPU), the H200's measured step plus the job "
            "law's start-up):"
        ),
        "",
        (
            "| protocol | pairs | GPU cache h | pair job CPU s (mean) | pair jobs core-h | pair jobs on the GPU h "
            "| pair work × | caches GB | tables GB | page MB | page load s | atlas job s | atlas peak GiB |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in r["paper_80"]:
        out.append(
            f"| {p['protocol']} | {p['pairs']} | {p['gpu_cache_h']:.1f} | {p['pair_s_mean']:.0f} "
            f"| {p['cpu_pair_core_h']:.0f} | {_f(p.get('gpu_pair_h'))} | {p['pair_work_scale']:.0f} "
            f"| {p['cache_disk_gb']:.0f} "
            f"| {p['tables_gb']:.1f} | {p['page_mb']:.0f} | {p['page_load_s']:.1f} "
            f"| {_f(p.get('atlas_rule_s'), '{:.0f}')} | {_f(p.get('atlas_peak_gib'), '{:.1f}')} |"
        )
    law = r.get("atlas_law")
    if law:
        out += [
            "",
            (
                f"Atlas job against the tap cells of the tables it reads (Σ taps_a·taps_b, stages): "
                f"{law['s'][0]:.1f} s + {law['s'][1] * 1e6:.1f} µs/cell; peak {law['peak_mib'][0]:.0f} MiB + "
                f"{law['peak_mib'][1] * 1e3:.2f} KiB/cell."
            ),
        ]
    return out


def render(r: dict[str, Any]) -> str:
    out = [
        (
            f"{r['date']} · {r['machine']} · torch {r['torch']} · timm {r['timm']} · "
            f"{r['scale']['n_images']} digits images at {SIZE} px, minibatch {r['scale']['batch_size']}, "
            f"{PERMUTATIONS} permutations · snakemake --cores {r['cores']} · {r['wall_s'] / 60:.1f} min in all"
        ),
        "",
        *_models_md(r),
        *_pairs_md(r),
        *_stages_md(r),
        *_synthetic_md(r),
        *_growth_md(r),
        *_paper_md(r),
        "",
        f"Command: `{r['command']}`; the workflow, per stage: `{r['snakemake_command']}`",
    ]
    return "\n".join(out) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def machine() -> str:
    cpu = "cpu"
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} × {cpu}, {mem:.0f} GiB RAM, load {os.getloadavg()[0]:.1f} at start"


def run_stages(
    args, scale: dict, out: Path, checkpoint: Callable[[dict, list[int]], None] | None = None
) -> dict[str, Any]:
    """Every stage's snakemake run and rows; `checkpoint(rows, stages done)` after each stage, so a run stopped
    in a later stage leaves the finished stages' results (`--analyse-only` reads them)."""
    run = out / "run"
    zoo = ZOO[: max(scale["stages"])]
    for name, arch, kwargs in zoo:
        make_weights(out / "weights" / f"{name}.safetensors", arch, kwargs, seed=0)
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)
    models, pairs, stages, done = [], [], [], set()
    taps: dict[str, int] = {}
    cmd = ""
    with JobWatcher(run) as watcher, PageTimer() as pages:
        for m in scale["stages"]:
            cfg = workflow_config(zoo[:m], out / "weights", scale)
            (run / "config.yaml").write_text(json.dumps(cfg, indent=1))
            print(f"== stage M = {m}", flush=True)
            wall, log, jobs, cmd = run_snakemake(run, args.cores)
            (out / f"snakemake_M{m}.log").write_text(log)
            new = [n for n, _, _ in zoo[:m] if n not in taps]
            models += model_rows(run, new, watcher, m)
            taps.update({r["model"]: r["taps"] for r in models})
            pairs += pair_rows(run, [n for n, _, _ in zoo[:m]], done, taps, watcher, m)
            stages.append(stage_row(run, m, wall, jobs, pages))
            peak = watcher.peak_kib.pop(f"atlas/{DATASET}.log", None)
            stages[-1]["atlas_peak_mib"] = peak / 1024 if peak else None
            print(f"  stage M = {m}: {wall:.0f} s, page {stages[-1]['page_mb']:.2f} MB, "
                  f"load {stages[-1]['load_s']:.2f} s", flush=True)  # fmt: skip
            if checkpoint:
                checkpoint(
                    _stage_rows(run, models, pairs, stages, cmd), [s["models"] for s in stages]
                )
    return _stage_rows(run, models, pairs, stages, cmd)


def _stage_rows(run: Path, models: list, pairs: list, stages: list, cmd: str) -> dict[str, Any]:
    samples = read_benchmark(run / "results" / "benchmarks" / "samples" / f"{DATASET}.tsv")
    return {"models": models, "pairs": pairs, "stages": stages, "snakemake_command": cmd,
            "fixed_s": (samples or {}).get("s") or 0.0}  # fmt: skip


def run_probe(args, scale: dict, out: Path) -> dict[str, Any]:
    """The first PROBE["models"] models' caches and pair jobs again at a second protocol (fewer images, smaller
    minibatch), in a run folder of their own: the CKA step on the same pairs at two work levels separates what
    grows with the work per tap cell from bookkeeping (`kernel_times`, `fit_kernel`)."""
    run = out / "probe"
    zoo = ZOO[: PROBE["models"]]
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True, exist_ok=True)
    cfg = workflow_config(zoo, out / "weights", {**scale, **PROBE})
    (run / "config.yaml").write_text(json.dumps(cfg, indent=1))
    print(f"== probe: {PROBE}", flush=True)
    with JobWatcher(run) as watcher:
        wall, log, _, _ = run_snakemake(run, args.cores)
    (out / "snakemake_probe.log").write_text(log)
    names = [n for n, _, _ in zoo]
    taps = {n: model_taps(run, n)[0] for n in names}
    pairs = pair_rows(run, names, set(), taps, watcher, 0)
    work = scale["n_images"] * scale["batch_size"] / (PROBE["n_images"] * PROBE["batch_size"])
    return {"probe": {**PROBE, "work_ratio": work, "wall_s": wall, "pairs": pairs}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--small", action="store_true", help="smoke test: stages 2/4, 128 images, minibatch 64"
    )
    ap.add_argument(
        "--stages", type=int, nargs="+", help="models per stage (default 8 16 24; small 2 4)"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="default benchmarks/out/atlas_scale[_small]"
    )
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep a previous run folder (resume)")
    ap.add_argument(
        "--bare-worker", nargs=3, metavar=("MODEL_JSON", "SAMPLES", "META"), help=argparse.SUPPRESS
    )
    ap.add_argument(
        "--analyse-only", action="store_true", help="redo the analysis and report from results.json"
    )
    ap.add_argument(
        "--extras-only",
        action="store_true",
        help="add the CKA step's times (kernel_times) and the larger pages (synthetic_pages) to results.json,"
        " then redo the analysis",
    )
    args = ap.parse_args(argv)
    if args.bare_worker:
        bare_worker(*args.bare_worker)
        return 0
    scale = {**(SMALL if args.small else FULL), "small": args.small}
    if args.stages:
        scale["stages"] = tuple(sorted(args.stages))
    if max(scale["stages"]) > len(ZOO):
        ap.error(f"at most {len(ZOO)} models")
    out = (
        args.out
        or REPO / "benchmarks" / "out" / ("atlas_scale_small" if args.small else "atlas_scale")
    ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.analyse_only or args.extras_only:
        result = json.loads((out / "results.json").read_text())
        if args.extras_only:
            enrich(result, out)
            if "probe" in result:
                result |= kernel_times(out)
            result |= run_synthetic(out, bool(result["scale"].get("small")))
        write_outputs(result, out)
        return 0
    import timm
    import torch

    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="minutes"),
        "machine": machine(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "command": shlex.join(["python", "benchmarks/atlas_scale.py", *(argv or sys.argv[1:])]),
        "cores": args.cores,
        "scale": scale,
    }

    def checkpoint(rows: dict[str, Any], done: list[int]) -> None:
        part = result | rows | {"scale": {**scale, "stages": tuple(done)}}
        (out / "results.json").write_text(json.dumps(part, indent=1, default=str) + "\n")

    result |= run_stages(args, scale, out, checkpoint)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    if not args.small:
        try:
            result |= run_probe(args, scale, out)
        except PROBE_ERRORS as e:  # the stages' results stand without it
            print(
                f"probe failed; pair jobs extrapolated with every tap term scaled: {e}",
                file=sys.stderr,
            )
        if "probe" in result:
            result |= kernel_times(out)
    result |= run_synthetic(out, args.small)
    result["wall_s"] = time.perf_counter() - t0
    write_outputs(result, out)
    return 0


def run_synthetic(out: Path, small: bool = False) -> dict[str, Any]:
    """Larger pages from the last stage's (`synthetic_pages`), under <out>/pages/."""
    html = out / "run" / "results" / "atlas" / DATASET / "index.html"
    folder = out / "pages"
    folder.mkdir(exist_ok=True)
    print("== pages of larger atlases", flush=True)
    with PageTimer() as pages:
        return {
            "synthetic": synthetic_pages(
                html, folder, pages, SYNTHETIC_M_SMALL if small else SYNTHETIC_M
            )
        }


def write_outputs(result: dict[str, Any], out: Path) -> None:
    enrich(result, out)
    analyse(result)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_csv(out / "models.csv", result["models"])
    write_csv(out / "pairs.csv", result["pairs"])
    write_csv(
        out / "stages.csv", [{k: v for k, v in s.items() if k != "jobs"} for s in result["stages"]]
    )
    plot(result, out / "atlas_scale.png")
    md = render(result)
    (out / "results.md").write_text(md)
    print(md)
    print(
        f"written: {out}/results.md, results.json, models.csv, pairs.csv, stages.csv, atlas_scale.png"
    )


if __name__ == "__main__":
    sys.exit(main())
