"""Cost of each similarity measure (`seelike.similarity.MEASURES`) as a fraction of the forward pass.

Everything is measured in ONE run, on ONE minibatch of `--batch` images per model (random tensors, or the first
images under `--images`), with random-weight timm models (`pretrained=False`, no network):

- bare forward: `model(x)` in eval mode under `torch.inference_mode()` and `seelike.device.exact_fp32()` — the
  model as the cache rule loads it (timm's own `fused_attn` setting; `exact_fp32` runs fused attention on SDPA's
  math backend, as `build_cache` does), no hooks;
- cache step: the same forward with every tap hooked, each activation reduced to its batch-centred fp32 Gram
  packed as an upper triangle inside its hook (`discover_taps` / `record_taps` / `seelike.cka.gram` /
  `pack_upper`, exactly `build_cache`'s per-minibatch work, without data loading and the `np.save`);
- each measure: one accumulator `add` of that minibatch's packed Grams (`make_accumulator`, as
  `seelike.analyses.cka_tables.measures_from_caches` builds them; float32 numpy input like the memory-mapped
  cache files), for the self pair of each model (`add(packed, None)`) and for the cross pair of two models
  (both stacks, same images), with 0 and `--permutations` permutation draws (`bures` has no null); `bures` on
  its default cells (block-output pairs, `bures_cells`) and, once, on all tap pairs; then the end-of-run
  `result()` + `jackknife_se()` + `null()` after the minibatches added.

Times are medians of `--repeats` model passes and of `--measure-repeats` adds, each after one warm-up, in this
process's CPU time on one torch thread by default (`--clock cpu --threads 1`): on a machine shared with other
jobs that is nearly independent of their load, where wall time and multi-threaded runs are not. Ratios
divide by the bare forward of the model(s) the pair involves (cross pair: the sum of both forward passes).
The measures always run on CPU (the `cka` and `similarity` rules run on CPU by design); `--device cuda` moves
the model passes to a GPU (synchronised timing).

    python benchmarks/measures_cost.py                       # vit_small_patch16_224 and resnet50, batch 64
    python benchmarks/measures_cost.py --batch 128
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
# the timer (set by --clock): this process's CPU time (all its threads), or wall time
CLOCK: list[Callable[[], float]] = [time.process_time]


def log(msg: str) -> None:
    print(f"  {msg} ...", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = CLOCK[0]()
        fn()
        _sync(device)
        times.append(CLOCK[0]() - t0)
    return statistics.median(times)


def build_model(arch: str, size: int) -> torch.nn.Module:
    """Random-weight timm model in eval mode; a ViT-like model is built for `size` px (`img_size`)."""
    import timm

    from seelike.models.load import built_input_size

    model = timm.create_model(arch, pretrained=False)
    built = built_input_size(model)
    if built is not None and built[1:] != (size, size):
        model = timm.create_model(arch, pretrained=False, img_size=size)
    return model.eval()


def images(model: torch.nn.Module, args: argparse.Namespace) -> torch.Tensor:
    """One minibatch: seeded random tensors, or the first `--batch` images under `--images` through timm's
    eval transform at `--image-size`."""
    if not args.images:
        g = torch.Generator().manual_seed(args.seed)
        return torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    found = (p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = sorted(found)[: args.batch]
    if len(files) < args.batch:
        raise SystemExit(f"--images {args.images}: {len(files)} images, --batch needs {args.batch}")
    cfg = resolve_data_config({}, model=model)
    cfg["input_size"] = (3, args.image_size, args.image_size)
    cfg["crop_pct"] = 1.0 if args.image_size != 224 else cfg.get("crop_pct", 0.875)
    tf = create_transform(**cfg)
    return torch.stack([tf(Image.open(f).convert("RGB")) for f in files])


def model_pass(arch: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Bare forward and cache step of one minibatch; the packed Grams (taps, n(n+1)/2) as float32 numpy."""
    from seelike.cka import gram, pack_upper, packed_size
    from seelike.device import exact_fp32
    from seelike.models.taps import BLOCK_OUTPUT_KINDS, discover_taps, record_taps, tap_record

    torch.manual_seed(args.seed)
    model = build_model(arch, args.image_size).to(device)
    x = images(model, args).to(device)
    n = len(x)
    taps = discover_taps(model)
    slot = {t.name: i for i, t in enumerate(taps)}
    buf: list[torch.Tensor] = []
    shapes: dict[str, list[int]] = {}

    def on_tap(tap, a: torch.Tensor) -> None:  # build_cache's hook
        shapes.setdefault(tap.name, list(a.shape[1:]))
        buf[0][slot[tap.name]] = pack_upper(gram(a.detach()))

    def cache_step() -> None:
        buf[:] = [torch.empty((len(taps), packed_size(n)), dtype=torch.float32, device=device)]
        model(x)

    with exact_fp32(), torch.inference_mode():
        log(f"{arch}: bare forward")
        forward = timed(lambda: model(x), args.repeats, device)
        log(f"{arch}: cache step")
        with record_taps(model, taps, on_tap):
            cache = timed(cache_step, args.repeats, device)
    packed = buf[0].cpu().numpy()
    features = sum(int(np.prod(s)) for s in shapes.values())
    return {
        "arch": arch,
        "n": n,
        "taps": [tap_record(t, shapes[t.name]) for t in taps],
        "block_taps": sum(t.kind in BLOCK_OUTPUT_KINDS for t in taps),
        "features": features,
        "forward": forward,
        "cache": cache,
        "packed": packed,
    }


def measure_cost(
    measure: str,
    ga: np.ndarray,
    gb: np.ndarray | None,
    n_a: int,
    n_b: int,
    permutations: int,
    cells: np.ndarray | None,
    repeats: int,
    warmup: int = 1,
) -> dict:
    """Median seconds of one accumulator `add` of the minibatch (batch ids differ, so every add draws its
    own permutations), and of the end-of-run result + jackknife SE + null after all the adds."""
    from seelike.device import exact_fp32
    from seelike.similarity import make_accumulator

    with exact_fp32():  # as measures_from_caches
        acc = make_accumulator(measure, n_a, n_b, None, "cpu", permutations, 0, cells)
        times = []
        for b in range(warmup + repeats):
            t0 = CLOCK[0]()
            acc.add(ga, gb, batch_id=b)
            if b >= warmup:
                times.append(CLOCK[0]() - t0)
        t0 = CLOCK[0]()
        acc.result()
        acc.jackknife_se()
        acc.null()
        final = CLOCK[0]() - t0
    return {"add": statistics.median(times), "final": final, "batches": acc.batches}


def pair_rows(a: dict, b: dict | None, args: argparse.Namespace) -> list[dict]:
    """Every measure for the self pair of `a` (b None) or the cross pair a × b."""
    from seelike.analyses.cka_tables import bures_cells
    from seelike.similarity import MEASURES

    other = a if b is None else b
    label = f"{a['arch']} (self)" if b is None else f"{a['arch']} × {b['arch']}"
    ga, gb = a["packed"], None if b is None else b["packed"]
    n_a, n_b = len(a["taps"]), len(other["taps"])
    forward = a["forward"] + (0.0 if b is None else b["forward"])
    block_cells = bures_cells(a["taps"], other["taps"])
    perms = sorted({0, args.permutations})
    rows = []
    for measure in MEASURES:
        variants = [("", block_cells if measure == "bures" else None, args.measure_repeats, 1)]
        if measure == "bures" and not args.no_bures_all:
            variants.append((" (all pairs)", None, args.bures_all_repeats, 0))
        for suffix, cells, repeats, warmup in variants:
            row = {"pair": label, "measure": measure + suffix, "forward": forward, "n": a["n"]}
            row["cells"] = int(cells.sum()) if cells is not None else n_a * n_b
            if measure == "bures" and suffix == "":
                row["cells_what"] = "block outputs"
            for p in perms if measure != "bures" else [0]:
                log(f"{label}: {measure}{suffix}, {p} permutations")
                c = measure_cost(measure, ga, gb, n_a, n_b, p, cells, repeats, warmup)
                row[f"add_{p}"], row[f"final_{p}"] = c["add"], c["final"]
                row["batches"] = c["batches"]
            rows.append(row)
    return rows


def _ms(s: float | None) -> str:
    if s is None:
        return "—"
    ms = s * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


def _frac(s: float | None, ref: float) -> str:
    if s is None:
        return "—"
    r = s / ref
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2%}" if r >= 0.001 else f"{r:.3%}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "resnet50"])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64, help="CKA minibatch n (cka.batch_size)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed model passes (median), after 1 warm-up")  # fmt: skip
    ap.add_argument("--measure-repeats", type=int, default=7,
                    help="timed accumulator adds (median), after 1 warm-up")  # fmt: skip
    ap.add_argument("--permutations", type=int, default=20, help="null draws; 0 is run too")
    ap.add_argument("--images", help="a folder of images (e.g. ../shared/data/imagenet-sample); "
                    "default: random tensors")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: the process's CPU time (default; robust to other jobs on a shared "
                    "machine when single-threaded), wall: wall time (forced with --device cuda)")  # fmt: skip
    ap.add_argument("--device", default="cpu", help="for the model passes; the measures run on CPU")
    ap.add_argument("--no-bures-all", action="store_true", help="skip bures on all tap pairs")
    ap.add_argument("--bures-all-repeats", type=int, default=1,
                    help="timed adds of bures on all tap pairs (no warm-up)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "wall" or device.type == "cuda":
        args.clock = "wall"
        CLOCK[0] = time.perf_counter
    import timm

    t_start, cpu_start = time.time(), time.process_time()
    cmd = shlex.join(["python", "benchmarks/measures_cost.py", *sys.argv[1:]])
    load0 = os.getloadavg()
    passes = [model_pass(arch, args, device) for arch in args.models]
    rows = []
    for m in passes:
        rows += pair_rows(m, None, args)
    for a, b in itertools.combinations(passes, 2):
        rows += pair_rows(a, b, args)
    load1 = os.getloadavg()

    P = args.permutations
    print(f"Command: `{cmd}`  ")
    print(
        f"{datetime.date.today()} · torch {torch.__version__} · timm {timm.__version__} · "
        f"{torch.get_num_threads()} torch threads on {os.cpu_count()} CPUs · model passes on {device}, "
        f"measures on cpu · {'images from ' + args.images if args.images else 'random images'} at "
        f"{args.image_size} px · medians of {args.repeats} passes / {args.measure_repeats} adds · "
        f"{args.clock} time · load average {load0[0]:.1f} at start, {load1[0]:.1f} at end · "
        f"{time.time() - t_start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU in all\n"
    )
    print("| model | taps | block-output taps | features/image (M) | n | bare forward (ms) | "
          "cache step (ms) | cache / forward |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in passes:
        print(
            f"| {m['arch']} | {len(m['taps'])} | {m['block_taps']} | {m['features'] / 1e6:.1f} | "
            f"{m['n']} | {_ms(m['forward'])} | {_ms(m['cache'])} | {m['cache'] / m['forward']:.2f}× |"
        )
    print()
    print(
        f"| pair | measure | cells | add, 0 perm. (ms) | / forward | add, {P} perm. (ms) | / forward | "
        f"result + SE + null, {P} perm. (ms) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        add_p = r.get(f"add_{P}") if "bures" not in r["measure"] else None
        final = r.get(f"final_{P}", r.get("final_0"))
        cells = f"{r['cells']:,}" + (f" ({r['cells_what']})" if "cells_what" in r else "")
        print(
            f"| {r['pair']} | {r['measure']} | {cells} | {_ms(r['add_0'])} | "
            f"{_frac(r['add_0'], r['forward'])} | {_ms(add_p)} | {_frac(add_p, r['forward'])} | "
            f"{_ms(final)} (k = {r['batches']}) |"
        )
    for pair in dict.fromkeys(r["pair"] for r in rows):
        sel = [r for r in rows if r["pair"] == pair and r["measure"] != "bures (all pairs)"]
        s0 = sum(r["add_0"] for r in sel)
        sp = sum(r.get(f"add_{P}", r["add_0"]) for r in sel)
        fwd = sel[0]["forward"]
        print(
            f"| {pair} | **all {len(sel)} measures** | | {_ms(s0)} | {_frac(s0, fwd)} | {_ms(sp)} | "
            f"{_frac(sp, fwd)} | |"
        )
    print(
        f"\nTimes are {args.clock} time ({torch.get_num_threads()} thread(s)). "
        "add = one accumulator `add` of one minibatch's packed Grams (median); / forward = that time over the "
        "bare forward pass of the pair's model(s) on the same minibatch (cross pair: both forward passes); "
        "bures has no permutation null; k = minibatches added before result() + jackknife_se() + null()."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
