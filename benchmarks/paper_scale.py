"""Paper-scale benchmark: every GPU rule of the workflow vs a bare forward pass of the same model.

Runs the whole workflow on config/benchmark.yaml (random-weight timm ViT-B/16 and ResNet-50 at 224 px,
10,240 synthetic JPEGs, minibatch 1024), then prints one table:

- per GPU rule and model: images, batch, precision, the rule's images/s (wall time of the job from its
  `benchmark:` file, and for the cache its own streaming rate from meta.json), a bare forward pass of the
  same model at the same batch and precision (random input, no hooks, no data loading), and the ratio;
- the CKA step's time per pair, the peak GPU memory (whole DAG, sampled with nvidia-smi; bare forwards
  from torch), and the whole DAG's wall time.

The cache must reach at least 80% of the bare forward's throughput (the verdict is printed; exit
status 1 when it misses, on CUDA only).

    python benchmarks/paper_scale.py                 # GPU machine, paper scale
    python benchmarks/paper_scale.py --small         # CPU smoke test: tiny models, 64 images

Writes everything under benchmarks/out/<run>/ (the run folder, results.md, results.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# Settings of the --small CPU smoke test: the same DAG, tiny models and counts.
SMALL = {
    "archs": {"vit_b16": "vit_tiny_patch16_224", "r50": "resnet18"},
    "classes": 2,
    "per_class": 96,
    "image_size": (256, 192),
    "cka": {"n_images": 64, "batch_size": 32, "repeats": 1},
    "attention": {"n_images": 16, "batch_size": 8},
    "erf": {"n_images": 2, "batch_size": 2, "residual": ["post"]},
    "skip": {"n_images": 16, "batch_size": 8},
    "probes": {"n_test": 32, "batch_size": 16},
    "localisation": {"n_images": 32, "batch_size": 16},
    "num_workers": 2,
}
PAPER = {"classes": 10, "per_class": 2048, "image_size": (320, 256)}
CACHE_TARGET = 0.8


# ----------------------------------------------------------------------------------------- inputs
def _one_image(args: tuple[Path, int, tuple[int, int]]) -> None:
    import numpy as np
    from PIL import Image

    path, seed, (w, h) = args
    rng = np.random.default_rng(seed)
    # Smooth random structure plus mild noise: decodes and compresses like a photo, not like white noise.
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC
    )
    arr = np.asarray(low, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_images(
    root: Path, classes: int, per_class: int, size: tuple[int, int], seed: int
) -> float:
    """An ImageFolder of synthetic JPEGs (skipped when complete); returns seconds spent."""
    done = root / ".complete"
    want = f"{classes}x{per_class}@{size[0]}x{size[1]} seed {seed}"
    if done.exists() and done.read_text() == want:
        return 0.0
    t0 = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            jobs.append(
                (
                    root / f"class{c:02d}" / f"{i:05d}.jpg",
                    seed * 1_000_003 + c * per_class + i,
                    size,
                )
            )
    with mp.Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
        pool.map(_one_image, jobs, chunksize=64)
    done.write_text(want)
    return time.perf_counter() - t0


def make_weights(path: Path, arch: str, seed: int) -> None:
    """timm's seeded random initialisation saved as safetensors (the benchmark needs no network)."""
    if path.exists():
        return
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)


def run_config(base: dict[str, Any], out: Path, small: bool) -> dict[str, Any]:
    """The benchmark config with absolute paths (and the --small overrides)."""
    cfg = json.loads(json.dumps(base))
    ds = cfg["datasets"][cfg["analysis_dataset"]]
    ds["root"] = str(out / "images")
    for name, spec in cfg["models"].items():
        if small:
            spec["arch"] = SMALL["archs"].get(name, spec["arch"])
        spec["path"] = str(out / "weights" / f"{spec['arch']}.safetensors")
    if small:
        cfg["num_workers"] = SMALL["num_workers"]
        for section in ("cka", "attention", "erf", "skip", "probes", "localisation"):
            cfg.setdefault(section, {}).update(SMALL[section])
    return cfg


# ------------------------------------------------------------------------------------------ runs
class GpuMemorySampler:
    """Peak device memory in use (MiB), sampled with nvidia-smi every 200 ms while the DAG runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def _loop(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True)
                self.samples.append((time.time(), int(out.stdout.split()[0])))
            except (subprocess.SubprocessError, ValueError, IndexError, OSError):
                pass
            self._stop.wait(0.2)

    def __enter__(self) -> GpuMemorySampler:  # noqa: PYI034 - py3.10 has no typing.Self
        if self.available:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def peak(self, start: float | None = None, end: float | None = None) -> int | None:
        vals = [
            m
            for t, m in self.samples
            if (start is None or t >= start) and (end is None or t <= end)
        ]
        return max(vals) if vals else None


def parse_jobs(log: str) -> list[dict[str, Any]]:
    """Snakemake's job blocks: rule, wildcards, benchmark file, resources, start/end (epoch s)."""
    jobs: dict[str, dict[str, Any]] = {}
    stamp = None
    current = None
    for line in log.splitlines():
        s = line.strip()
        m = re.match(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", s)
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            continue
        m = re.match(r"^(?:local)?rule (\S+):$", s)
        if m:
            current = {"rule": m.group(1), "start": stamp, "wildcards": {}, "resources": {}}
            continue
        if current is not None:
            key, _, val = s.partition(": ")
            if key == "jobid":
                jobs[val] = current
            elif key == "benchmark":
                current["benchmark"] = val
            elif key == "wildcards":
                current["wildcards"] = dict(kv.split("=", 1) for kv in val.split(", "))
            elif key == "resources":
                current["resources"] = dict(kv.split("=", 1) for kv in val.split(", ") if "=" in kv)
                current = None
        m = re.match(r"^Finished jobid: (\d+)", s)
        if m and m.group(1) in jobs:
            jobs[m.group(1)]["end"] = stamp
    return list(jobs.values())


def rule_images(rule: str, cfg: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """(images processed, batch, precision) of one job of a GPU rule, from the config."""
    exact, default = "fp32, TF32 off", "fp32 (torch default TF32 settings)"
    if rule == "cache":
        c = cfg["cka"]
        return c["n_images"] * c.get("repeats", 1), c["batch_size"], exact
    if rule in ("attention_distance", "head_subset_cka"):
        a = cfg["attention"]
        return a["n_images"], a["batch_size"], default
    if rule == "receptive_field":
        e = cfg["erf"]
        return e["n_images"], e["batch_size"], default + ", + backward per tap"
    if rule == "skip_stats":
        s = cfg["skip"]
        return s["n_images"], s["batch_size"], default
    if rule == "localisation":
        lo = cfg.get("localisation", {})
        return lo.get("n_images", 2560), lo.get("batch_size", 256), default
    if rule in ("probe_features", "linear_probes"):
        # Images: the probe-training shots plus the test images; n_test null = the whole test split.
        pr = cfg.get("probes", {})
        return pr.get("n_test"), pr.get("batch_size", 128), default
    return None, None, "?"


def bare_forward(
    model_json: Path, batch: int, n_images: int, exact: bool
) -> tuple[float, int | None]:
    """images/s of a plain forward pass (random input, no hooks) and its peak torch memory (MiB)."""
    import torch

    from seelike.device import exact_fp32, pick_device
    from seelike.models.load import load_model

    device = pick_device("auto")
    model, info = load_model(model_json, device)
    x = torch.randn(batch, *info["data_config"]["input_size"], device=device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    ctx = exact_fp32() if exact else contextlib.nullcontext()
    n_batches = max(2, math.ceil(n_images / batch))
    with torch.inference_mode(), ctx:
        for _ in range(2):  # warm-up: kernels picked, allocator grown
            model(x)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            model(x)
        sync()
        dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) // 2**20 if cuda else None
    del model, x
    if cuda:
        torch.cuda.empty_cache()
    return n_batches * batch / dt, peak


def benchmark_seconds(path: Path) -> float | None:
    if not path.exists():
        return None
    rows = path.read_text().strip().splitlines()
    return float(rows[1].split("\t")[0]) if len(rows) > 1 else None


@contextlib.contextmanager
def _timer(store: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    store[key] = time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", action="store_true", help="CPU smoke test: tiny models, 64 images")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "benchmark.yaml")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder (default benchmarks/out/paper_scale[_small])",
    )
    ap.add_argument("--cores", default="all", help="snakemake --cores (default all)")
    ap.add_argument("--gpus", type=int, default=1, help="GPU jobs at once (--resources gpu=N)")
    ap.add_argument(
        "--keep", action="store_true", help="keep previous results (default: fresh run)"
    )
    args = ap.parse_args(argv)

    out = (
        args.out
        or REPO / "benchmarks" / "out" / ("paper_scale_small" if args.small else "paper_scale")
    ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(args.config.read_text())
    cfg = run_config(base, out, args.small)
    scale = SMALL if args.small else PAPER
    timings: dict[str, float] = {}
    timings["images_s"] = make_images(
        out / "images", scale["classes"], scale["per_class"], scale["image_size"], cfg["seed"]
    )
    with _timer(timings, "weights_s"):
        for spec in cfg["models"].values():
            make_weights(Path(spec["path"]), spec["arch"], cfg["seed"])

    run = out / "run"
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    (run / "config").mkdir(parents=True, exist_ok=True)
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [
        SNAKEMAKE,
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(run),
        "--profile", str(REPO / "profiles" / "default"),
        "--cores", str(args.cores),
        "--resources", f"gpu={args.gpus}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    print("$", shlex.join(cmd), flush=True)
    with GpuMemorySampler() as mem:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        dag_wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    (out / "snakemake.log").write_text(log)
    if proc.returncode != 0:
        print(log[-6000:], file=sys.stderr)
        print(
            f"the workflow failed ({proc.returncode}); full log in {out / 'snakemake.log'}",
            file=sys.stderr,
        )
        return 2

    import torch

    on_cuda = torch.cuda.is_available()
    rows: list[dict[str, Any]] = []
    bare_cache: dict[tuple[str, int, bool], tuple[float, int | None]] = {}
    jobs = parse_jobs(log)
    for job in jobs:
        if job["resources"].get("gpu") != "1":
            continue
        rule, wc = job["rule"], job["wildcards"]
        model = wc.get("model") or wc.get("a")
        n_images, batch, precision = rule_images(rule, cfg)
        secs = benchmark_seconds(run / job["benchmark"]) if job.get("benchmark") else None
        row: dict[str, Any] = {
            "rule": rule,
            "job": ",".join(f"{k}={v}" for k, v in wc.items()),
            "images": n_images,
            "batch": batch,
            "precision": precision,
            "wall_s": secs,
            "rule_img_s": (n_images / secs) if n_images and secs else None,
            "stream_img_s": None,
            "gpu_peak_mib": mem.peak(job.get("start"), (job.get("end") or 0) + 1)
            if mem.available
            else None,
        }
        if rule == "cache":
            meta_path = run / "results" / "cache" / wc["dataset"] / wc["model"] / "meta.json"
            if meta_path.exists():
                row["stream_img_s"] = json.loads(meta_path.read_text()).get("images_per_second")
        if model and batch:
            key = (model, batch, rule == "cache")
            if key not in bare_cache:
                bare_cache[key] = bare_forward(
                    run / "results" / "models" / model / "model.json",
                    batch,
                    n_images or batch,
                    rule == "cache",
                )
            row["bare_img_s"], row["bare_peak_mib"] = bare_cache[key]
            best = row["stream_img_s"] or row["rule_img_s"]
            row["ratio"] = best / row["bare_img_s"] if best else None
        rows.append(row)
    cka = [
        {"pair": f"{j['wildcards'].get('a')}__{j['wildcards'].get('b')}",
         "seconds": benchmark_seconds(run / j["benchmark"]) if j.get("benchmark") else None}
        for j in jobs if j["rule"] == "cka"
    ]  # fmt: skip
    result = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "small": args.small,
        "device": torch.cuda.get_device_name(0) if on_cuda else "cpu",
        "torch": torch.__version__,
        "command": shlex.join([sys.executable, *sys.argv]),
        "snakemake_command": shlex.join(cmd),
        "images": scale["classes"] * scale["per_class"],
        "models": {k: v["arch"] for k, v in cfg["models"].items()},
        "dag_wall_s": dag_wall,
        "dag_gpu_peak_mib": mem.peak(),
        "setup_s": timings,
        "gpu_rules": rows,
        "cka": cka,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (out / "results.md").write_text(md)
    print(md)
    caches = [r for r in rows if r["rule"] == "cache"]
    ok = all((r.get("ratio") or 0) >= CACHE_TARGET for r in caches) and bool(caches)
    print(f"cache ≥ {CACHE_TARGET:.0%} of bare forward: {'PASS' if ok else 'FAIL'}"
          + ("" if on_cuda else " (CPU smoke run: not a verdict)"))  # fmt: skip
    return 0 if ok or not on_cuda else 1


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x) if isinstance(x, (int, float)) else str(x)


def render(r: dict[str, Any]) -> str:
    lines = [
        f"Device: {r['device']} · torch {r['torch']} · {r['images']} synthetic JPEGs · models "
        + ", ".join(f"{k}={v}" for k, v in r["models"].items()),
        "",
        (
            "| rule | job | images | batch | precision | wall s | rule img/s | stream img/s"
            " | bare fwd img/s | ratio | GPU peak MiB (rule / bare) |"
        ),
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["gpu_rules"]:
        lines.append(
            f"| {row['rule']} | {row['job']} | {_f(row['images'], '{}')} | {_f(row['batch'], '{}')} "
            f"| {row['precision']} | {_f(row['wall_s'])} | {_f(row['rule_img_s'])} "
            f"| {_f(row['stream_img_s'])} | {_f(row.get('bare_img_s'))} | {_f(row.get('ratio'), '{:.2f}')} "
            f"| {_f(row['gpu_peak_mib'], '{}')} / {_f(row.get('bare_peak_mib'), '{}')} |"
        )
    lines += ["", "| CKA pair | seconds |", "|---|---:|"]
    lines += [f"| {c['pair']} | {_f(c['seconds'])} |" for c in r["cka"]]
    lines += [
        "",
        (
            f"Whole DAG wall time: {r['dag_wall_s']:.1f} s · peak GPU memory in use during the DAG: "
            f"{_f(r['dag_gpu_peak_mib'], '{} MiB')}"
        ),
        "",
        (
            "rule img/s = images / the job's wall time (startup and model load included); stream img/s ="
            " the cache's own rate over its data loop; ratio = (stream, else rule) / bare forward at the"
            " same batch and precision."
        ),
        "",
        f"Command: `{r['command']}`  ",
        f"Workflow: `{r['snakemake_command']}`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
