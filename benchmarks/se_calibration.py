"""Does the uncertainty a user is promised hold on real activations? (issue #22, items 1 and 3)

One streaming pass of a real model over every image of a folder keeps each minibatch's packed fp32 Grams of the
chosen taps in a memory-mapped store (`--store`, reused by later runs). The Gram of any subset of a minibatch's
images is a principal submatrix, so the same pass is re-cut into smaller minibatches with no second forward pass.
The images are split once, seeded: a pilot (`--pilot` images: the first full minibatches) and the rest, cut into
disjoint repeats. Then:

1. **The planner** (`seelike.planner`), fitted on the pilot alone as a user would, predicts each cell's SE for
   every (minibatch n, images N, one repeat); against it, the SD of each cell over the disjoint repeats of N
   images measured at minibatch n. Printed per (n, N): RMS predicted SE / RMS measured SD over the cells (a
   variance-level ratio: the SD of one cell over 20 repeats is itself ±16% noisy, a per-cell ratio's median is
   biased by it), its 90% interval from a bootstrap over repeats, and the planner's own 90% range for its
   prediction (`PrecisionModel.se_range`: refits with each pilot minibatch left out, what the pilot's size
   allows it to promise).
2. **Every measure of `cka.measures`** (`--measures`): per cell, the jackknife SE of one repeat (RMS over the
   repeats) against the SD over the repeats, at each n and the smallest N; and the permutation null on
   independent representations (model a's Grams of repeat r against model b's Grams of repeat r + 1: different
   images, so every cell is null): the share of cells with p ≤ 0.05 and the null_z mean and SD.

    python benchmarks/se_calibration.py --checkpoint resources/efficientnet_lite0.safetensors \\
        --arch tf_efficientnet_lite0 --images /tmp/cifar --size 128 --store /tmp/lite0_cifar128.grams
Prints markdown tables (BENCHMARKS.md "Planner calibration", VALIDATION.md "Every measure's SE and null").
Run it under `nice -n 19` on a shared machine; `--batches-per-repeat`/`--max-images` shrink it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from seelike.cka import CkaAccumulator, gram, pack_upper, unpack_upper
from seelike.data.loader import make_loader
from seelike.data.samples import build_samples
from seelike.device import exact_fp32
from seelike.models.kinds import BLOCK_OUTPUT_KINDS
from seelike.models.load import create_model, resolve_data_config
from seelike.models.taps import discover_taps, record_taps
from seelike.planner import add_recut, precision_model, recut


# ---------------------------------------------------------------- the Gram store: one pass, every minibatch
def build_store(args: argparse.Namespace) -> tuple[np.memmap, dict]:
    """Packed Grams (minibatches, taps, n(n+1)/2) of every full minibatch of the folder, memory-mapped; reused
    when `--store` exists with the same settings."""
    store, info_path = Path(args.store), Path(args.store + ".json")
    settings = {
        k: getattr(args, k) for k in ("checkpoint", "arch", "images", "size", "batch", "max_images")
    }
    if store.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if info["settings"] == settings:
            shape = tuple(info["shape"])
            return np.memmap(store, np.float32, "r", shape=shape), info
    torch.set_num_threads(args.threads)
    spec = {"source": "checkpoint", "arch": args.arch, "path": args.checkpoint, "kwargs": {}}
    model = create_model(spec).eval()
    taps = [t for t in discover_taps(model) if t.kind in BLOCK_OUTPUT_KINDS]
    # CIFAR-10's train/ and test/ folders are one pool here: every image is a draw from the same population
    split_dirs = {s: s for s in ("train", "test") if (Path(args.images) / s).is_dir()}
    ds = {
        "source": "imagefolder",
        "root": args.images,
        "test_fraction": 1.0,
        "split_dirs": split_dirs,
    }
    samples = build_samples(ds, seed=0)  # seeded shuffle: minibatches mix classes
    samples = samples.iloc[np.random.default_rng(0).permutation(len(samples))]  # and splits
    data_cfg = resolve_data_config(model)
    if args.size:
        data_cfg = {**data_cfg, "input_size": [3, args.size, args.size], "crop_pct": 1.0}
    n_total = min(len(samples), args.max_images or len(samples))
    n_batches = n_total // args.batch
    loader = make_loader(samples, ds, data_cfg, split=None, n_images=n_batches * args.batch,
                         batch_size=args.batch, num_workers=1)  # fmt: skip
    tri = args.batch * (args.batch + 1) // 2
    out = np.memmap(store, np.float32, "w+", shape=(n_batches, len(taps), tri))
    slot = {t.name: i for i, t in enumerate(taps)}
    buf = torch.empty(len(taps), tri)

    def on_tap(tap, x):
        buf[slot[tap.name]] = pack_upper(gram(x.detach()))

    t0 = time.time()
    with record_taps(model, taps, on_tap), torch.inference_mode(), exact_fp32():
        for b, (x, _) in enumerate(loader):
            model(x)
            out[b] = buf.numpy()
            if b % 10 == 0:
                print(f"  minibatch {b + 1}/{n_batches}, {time.time() - t0:.0f} s", file=sys.stderr)
    out.flush()
    info = {
        "settings": settings,
        "shape": list(out.shape),
        "taps": [t.name for t in taps],
        "seconds": time.time() - t0,
    }
    info_path.write_text(json.dumps(info))
    return np.memmap(store, np.float32, "r", shape=out.shape), info


# ---------------------------------------------------------------- (1) the planner against disjoint repeats
def recut_accumulators(
    store: np.ndarray, cuts: list[int], batches: range
) -> dict[int, CkaAccumulator]:
    """Self-similarity accumulators of the store's minibatches `batches`, each re-cut at every size in `cuts`
    (the store's minibatch b holds cuts (b − batches.start)·(B/cut) …, in order)."""
    taps = store.shape[1]
    accs = {c: CkaAccumulator(taps, taps) for c in cuts}
    for b in batches:
        add_recut(accs, unpack_upper(torch.from_numpy(np.array(store[b]))), None)
    return accs


def repeat_indices(
    per_repeat: int, cut: int, batch: int, first: int, count: int
) -> list[list[int]]:
    """Sub-minibatch positions (in an accumulator re-cut at `cut` starting at store minibatch `first`) of
    `count` disjoint repeats of `per_repeat` store minibatches each."""
    k = batch // cut
    return [list(range((r * per_repeat) * k, (r + 1) * per_repeat * k)) for r in range(count)]


def rms(v: np.ndarray, axis=None) -> np.ndarray:
    return np.sqrt(np.mean(np.square(v), axis=axis))


def planner_check(
    store: np.ndarray, args: argparse.Namespace, rng: np.random.Generator
) -> list[dict]:
    batch, cuts = args.batch, sorted(args.cuts)
    pilot_batches = args.pilot // batch
    rest = range(pilot_batches, store.shape[0])
    t0 = time.time()
    pilot = recut_accumulators(store, cuts, range(pilot_batches))
    feats = [1] * store.shape[1]  # costs are not checked here
    model = precision_model(pilot, pilot_batches * batch, pilot_batches, feats, feats, True,
                            refits=True)  # fmt: skip
    accs = recut_accumulators(store, cuts, rest)
    values = accs[max(cuts)].result()
    cells = np.triu(values >= 0.05, k=1)
    print(f"\n(1) planner: pilot {pilot_batches} × {batch} images re-cut at {cuts}, "
          f"delete-one-minibatch refits; {cells.sum()} cells with CKA ≥ 0.05 (upper triangle); "
          f"{len(rest)} minibatches for the repeats; {time.time() - t0:.0f} s", flush=True)  # fmt: skip
    rows = []
    for big_n in args.n_images:
        per = big_n // batch
        count = min(args.max_repeats, len(rest) // per)
        for c in cuts:
            if c > big_n:
                continue
            reps = repeat_indices(per, c, batch, 0, count)
            vals = np.stack([accs[c].subset(i).result()[cells] for i in reps])  # (R, cells)
            sd = vals.std(0, ddof=1)
            pred = model.se(c, big_n)[cells]
            ratio = rms(pred) / rms(sd)
            # the measured SD's own uncertainty: bootstrap over the repeats
            boots = [rms(pred) / rms(vals[rng.integers(0, count, count)].std(0, ddof=1))
                     for _ in range(500)]  # fmt: skip
            lo, hi = np.quantile(boots, [0.05, 0.95])
            row = {"batch": c, "N": big_n, "repeats": count, "rms_sd": rms(sd), "rms_pred": rms(pred),
                   "ratio": ratio, "ratio_lo": lo, "ratio_hi": hi,
                   "median_cell_ratio": float(np.median(pred / sd))}  # fmt: skip
            own = model.se_range(c, big_n, 1, cells, summary=rms)
            if own is not None:
                row["planner_lo"], row["planner_hi"] = own[0] / rms(sd), own[1] / rms(sd)
            rows.append(row)
    print(
        "\n| batch n | N | repeats | RMS SD (measured) | RMS SE (predicted) | predicted / measured "
        "[90% interval of the measurement] | planner's own 90% interval | median per-cell ratio |"
    )
    print("|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        own = f"{r['planner_lo']:.2f}–{r['planner_hi']:.2f}" if "planner_lo" in r else "—"
        print(f"| {r['batch']} | {r['N']} | {r['repeats']} | {r['rms_sd']:.4f} | {r['rms_pred']:.4f} | "
              f"**{r['ratio']:.2f}** [{r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}] | {own} | "
              f"{r['median_cell_ratio']:.2f} |")  # fmt: skip
    return rows


def per_cell_law(var: dict[int, np.ndarray], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The planner's earlier law, for comparison: a free least-squares (a, b) of Var·N = a + b/n per cell, a
    negative coefficient refitted as 0 with the other alone."""
    cuts = sorted(var)
    y = np.stack([var[c] * n_images for c in cuts])
    x = np.stack([np.ones(len(cuts)), 1.0 / np.asarray(cuts, float)], 1)
    (a, b), *_ = np.linalg.lstsq(x, y.reshape(len(cuts), -1), rcond=None)
    a, b = a.reshape(y.shape[1:]), b.reshape(y.shape[1:])
    neg_a, neg_b = a < 0, b < 0
    a, b = (np.where(neg_a, 0, a),
            np.where(neg_a, (y * x[:, 1, None, None]).sum(0) / (x[:, 1] ** 2).sum(), b))  # fmt: skip
    return np.where(neg_b & ~neg_a, y.mean(0), a), np.where(neg_b, 0, b)


def pilot_spread(store: np.ndarray, args: argparse.Namespace) -> None:
    """`--pilots` disjoint pilots of `--pilot` images each (from the start of the store), the repeats from the
    rest: per law (the planner's pooled shape, the earlier per-cell fit) the mean ± SD over pilots of predicted /
    measured (RMS over cells), and at n = max cut, N = min N, the per-cell ratio's median by CKA tercile."""
    from seelike.planner import fit_law

    batch, cuts = args.batch, sorted(args.cuts)
    per_pilot = args.pilot // batch
    first = per_pilot * args.pilots
    accs = recut_accumulators(store, cuts, range(first, store.shape[0]))
    values = accs[max(cuts)].result()
    cells = np.triu(values >= 0.05, k=1)
    sds = {}
    for big_n in args.n_images:
        per = big_n // batch
        count = min(args.max_repeats, (store.shape[0] - first) // per)
        for c in cuts:
            reps = repeat_indices(per, c, batch, 0, count)
            vals = np.stack([accs[c].subset(i).result()[cells] for i in reps])
            sds[(big_n, c)] = (vals.std(0, ddof=1), count)
    laws = {"pooled shape (planner)": lambda v, d: fit_law(v, args.pilot, d),
            "per-cell fit (earlier)": lambda v, d: per_cell_law(v, args.pilot)}  # fmt: skip
    ratios: dict = {}
    covered = dict.fromkeys(sds, 0)  # the planner's own range containing the measured SE
    for j in range(args.pilots):
        pilot = recut_accumulators(store, cuts, range(j * per_pilot, (j + 1) * per_pilot))
        model = precision_model(pilot, args.pilot, per_pilot, [1], [1], True)
        for (big_n, c), (sd, _) in sds.items():
            own = model.se_range(c, big_n, 1, cells, summary=rms)
            covered[(big_n, c)] += own is not None and own[0] <= rms(sd) <= own[1]
        var = {c: acc.jackknife_se() ** 2 for c, acc in pilot.items()}
        dof = {c: acc.batches - 1 for c, acc in pilot.items()}
        for name, law in laws.items():
            a, b = law(var, dof)
            for (big_n, c), (sd, _) in sds.items():
                pred = np.sqrt(np.clip(a + b / c, 0, None) / big_n)[cells]
                ratios.setdefault((name, big_n, c), []).append((rms(pred) / rms(sd), pred / sd))
    print(f"\n(1b) {args.pilots} disjoint pilots of {args.pilot} images; predicted / measured (RMS over "
          f"{cells.sum()} cells), mean ± SD over the pilots\n")  # fmt: skip
    print("| law | N (repeats) | " + " | ".join(f"n = {c}" for c in cuts) + " |")
    print("|---|---|" + "---|" * len(cuts))
    for name in laws:
        for big_n in args.n_images:
            cols = []
            for c in cuts:
                r = np.array([x[0] for x in ratios[(name, big_n, c)]])
                cols.append(f"{r.mean():.2f} ± {r.std(ddof=1):.2f}")
            print(f"| {name} | {big_n} ({sds[(big_n, cuts[0])][1]}) | " + " | ".join(cols) + " |")
    print("\nthe planner's own 90% range contains the measured SE in: "
          + ", ".join(f"N = {k[0]}, n = {k[1]}: {v}/{args.pilots}" for k, v in covered.items()))  # fmt: skip
    v = values[cells]
    edges = np.quantile(v, [1 / 3, 2 / 3])
    bands = {"low": v < edges[0], "middle": (v >= edges[0]) & (v < edges[1]), "high": v >= edges[1]}
    big_n, c = min(args.n_images), max(cuts)
    print(f"\nper-cell predicted / measured at n = {c}, N = {big_n} (mean over pilots), median by CKA "
          f"tercile (CKA cut at {edges[0]:.2f}, {edges[1]:.2f})\n")  # fmt: skip
    print("| law | " + " | ".join(bands) + " |")
    print("|---|" + "---|" * len(bands))
    for name in laws:
        r = np.mean([x[1] for x in ratios[(name, big_n, c)]], 0)
        print(f"| {name} | " + " | ".join(f"{np.median(r[m]):.2f}" for m in bands.values()) + " |")


# ---------------------------------------------------------------- (2) every measure: SE against SD, null rate
def sub_grams(store: np.ndarray, batches: range, cut: int) -> list[torch.Tensor]:
    """The packed Grams (T, cut(cut+1)/2) of the store's minibatches `batches`, each re-cut at `cut`."""
    out = []
    for b in batches:
        out += recut(unpack_upper(torch.from_numpy(np.array(store[b]))), cut)
    return out


def measures_check(store: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Per measure: RMS jackknife SE / RMS SD over disjoint repeats of `--measure-images` images at minibatch
    `--measure-batch`; and on independent representations (repeat r's Grams against repeat r + 1's: different
    images) the share of cells with p ≤ 0.05 under `--null-permutations` draws, and null_z's mean and SD."""
    from seelike.analyses.cka_tables import _combine_repeats
    from seelike.similarity import MEASURES, MeasureOptions, make_accumulator

    taps, batch, cut = store.shape[1], args.batch, args.measure_batch
    per = args.measure_images // batch
    first = args.pilot // batch  # the pilot's images are left out here too
    count = min(args.max_repeats, (store.shape[0] - first) // per)
    reps = [
        sub_grams(store, range(first + r * per, first + (r + 1) * per), cut) for r in range(count)
    ]
    options = MeasureOptions()
    measures = args.measures or list(MEASURES)
    upper = np.triu(np.ones((taps, taps), bool), k=1)
    rows = []
    print(f"\n(2) every measure: {count} disjoint repeats of {per * batch} images in minibatches of {cut}; "
          f"null: {min(count - 1, args.null_repeats)} pairs of disjoint repeats, "
          f"{args.null_permutations} draws", flush=True)  # fmt: skip
    for m in measures:
        t0 = time.time()
        vals, ses = [], []
        for grams in reps:
            acc = make_accumulator(m, taps, taps, options)
            for g in grams:
                acc.add(g)
            vals.append(acc.result())
            ses.append(acc.jackknife_se())
        vals, ses = np.stack(vals), np.stack(ses)
        cells = upper & (np.abs(vals.mean(0)) >= 0.05) & np.isfinite(vals).all(0)
        sd = vals.std(0, ddof=1)[cells]
        se = ses[:, cells]
        ratio = rms(se) / rms(sd)
        # its uncertainty: bootstrap over repeats (SD and SE resampled together)
        rng = np.random.default_rng(2)
        boots = []
        for _ in range(300):
            i = rng.integers(0, count, count)
            boots.append(rms(ses[i][:, cells]) / rms(vals[i].std(0, ddof=1)[cells]))
        lo, hi = np.quantile(boots, [0.05, 0.95])
        # the null on independent representations: every cell (diagonal included) is null
        p_rate, z_all = [], []
        for r in range(min(count - 1, args.null_repeats)):
            acc = make_accumulator(m, taps, taps, options, permutations=args.null_permutations,
                                   seed=r)  # fmt: skip
            for ga, gb in zip(reps[r], reps[r + 1], strict=True):
                acc.add(ga, gb)
            null = acc.null()
            if not np.isfinite(null).any():
                break  # a measure without a null (bures)
            value = acc.result()
            run = (value, acc.jackknife_se(), null, *acc.degenerate())
            cols, _, _ = _combine_repeats([run], args.null_permutations, same=False)
            p_rate.append(np.mean(cols["p_value"] <= 0.05))
            z_all.append(cols["null_z"].ravel())
        row = {"measure": m, "cells": int(cells.sum()), "rms_sd": rms(sd), "ratio": ratio,
               "ratio_lo": lo, "ratio_hi": hi, "seconds": time.time() - t0}  # fmt: skip
        if p_rate:
            z = np.concatenate(z_all)
            row.update(p05=float(np.mean(p_rate)),
                       p05_se=float(np.std(p_rate, ddof=1) / np.sqrt(len(p_rate))),
                       z_mean=float(np.nanmean(z)), z_sd=float(np.nanstd(z, ddof=1)))  # fmt: skip
        rows.append(row)
        print(f"  {m}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print(
        "\n| measure | cells | RMS SD over repeats | RMS jackknife SE / RMS SD [90%] | "
        "p ≤ 0.05 on independent representations (± SE) | null_z mean, SD |"
    )
    print("|---|---:|---:|---|---|---|")
    for r in rows:
        null = (f"{r['p05']:.1%} ± {r['p05_se']:.1%} | {r['z_mean']:.2f}, {r['z_sd']:.2f}"
                if "p05" in r else "— (no null) | —")  # fmt: skip
        print(f"| {r['measure']} | {r['cells']} | {r['rms_sd']:.4f} | **{r['ratio']:.2f}** "
              f"[{r['ratio_lo']:.2f}–{r['ratio_hi']:.2f}] | {null} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument(
        "--images", required=True, help="image folder (<root>[/<split>]/<class>/<image>)"
    )
    ap.add_argument("--size", type=int, default=None, help="input px (default: the model's)")
    ap.add_argument("--batch", type=int, default=256, help="minibatch of the pass (cuts divide it)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--store", required=True, help="memory-mapped Gram store (created if absent)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--pilot", type=int, default=1024, help="pilot images (the first minibatches)")
    ap.add_argument("--cuts", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--n-images", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--max-repeats", type=int, default=40)
    ap.add_argument("--measures", nargs="+", default=None, help="default: every measure")
    ap.add_argument("--measure-batch", type=int, default=128)
    ap.add_argument("--measure-images", type=int, default=1024)
    ap.add_argument("--null-repeats", type=int, default=20)
    ap.add_argument(
        "--null-permutations", type=int, default=39, help="39: p ≤ 0.05 ⇔ rank 1 or 2 of 40"
    )
    ap.add_argument("--pilots", type=int, default=0, help="(1b) this many disjoint pilots")
    ap.add_argument("--skip", nargs="+", default=[], choices=["planner", "measures"])
    ap.add_argument("--limit", type=int, default=None, help="use only the first minibatches")
    args = ap.parse_args(argv)
    store, info = build_store(args)
    print(f"store: {store.shape} ({info['seconds']:.0f} s to build)")
    if args.build_only:
        return 0
    if args.limit:
        store = store[: args.limit]
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(1)
    if "planner" not in args.skip:
        planner_check(store, args, rng)
    if args.pilots:
        pilot_spread(store, args)
    if "measures" not in args.skip:
        measures_check(store, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
