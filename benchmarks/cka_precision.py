"""How precise is a minibatch-CKA cell, and what does the paper's protocol buy? Measured on real activations.

One streaming pass of a real model over N_total images at the pilot batch size keeps each minibatch's packed
Grams of the chosen taps (block outputs by default). The Gram of any subset of a minibatch's images is a
principal submatrix, so the same pass is re-cut into smaller minibatches without another forward pass. Then:

1. SD against minibatch size at fixed N: disjoint repeats of N images each, every cut n; the empirical SD of
   each cell over the repeats, median over cells with mean CKA ≥ 0.05, and as a ratio to the SD at the largest n.
2. SD against N at fixed n: the jackknife SE (seelike.cka.CkaAccumulator.jackknife_se) of one repeat of N
   images, median over the same cells, with the 1/√N law it should follow.
3. The jackknife SE against the empirical SD over the disjoint repeats (the check quoted in VALIDATION.md).
4. The planner's law fitted on the whole pilot (jackknife variances of each cut, Var·N = a + b/n per cell):
   its predicted SD at the repeats' N for every n against the measured SD of (1).

    python benchmarks/cka_precision.py --checkpoint resources/efficientnet_lite0.safetensors \\
        --arch tf_efficientnet_lite0 --images /path/to/cifar10/test --pilot-batch 512 --n-total 9728
Prints markdown tables (BENCHMARKS.md, "CKA precision").
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from seelike.cka import CkaAccumulator, gram, pack_upper, unpack_upper
from seelike.data.loader import make_loader
from seelike.data.samples import build_samples
from seelike.device import exact_fp32
from seelike.models.kinds import BLOCK_OUTPUT_KINDS
from seelike.models.load import create_model, resolve_data_config
from seelike.models.taps import discover_taps, record_taps
from seelike.planner import recut


def pilot_grams(model, taps, loader, n_total: int) -> list[torch.Tensor]:
    """Packed (taps, n(n+1)/2) fp32 Grams of every pilot minibatch."""
    out, seen = [], 0
    slot = {t.name: i for i, t in enumerate(taps)}
    buf: list[torch.Tensor] = []

    def on_tap(tap, x):
        buf[0][slot[tap.name]] = pack_upper(gram(x.detach()))

    with record_taps(model, taps, on_tap), torch.inference_mode(), exact_fp32():
        for x, _ in loader:
            if seen >= n_total:
                break
            n = len(x)
            buf[:] = [torch.empty(len(taps), n * (n + 1) // 2)]
            model(x)
            out.append(buf[0].clone())
            seen += n
            print(f"  pilot batch {len(out)}: {seen} images", file=sys.stderr, flush=True)
    return out


def cka_of(batches: list[torch.Tensor]) -> CkaAccumulator:
    acc = CkaAccumulator(batches[0].shape[0], batches[0].shape[0])
    for g in batches:
        acc.add(g)
    return acc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--kwargs", default="{}", help="timm kwargs as JSON")
    ap.add_argument("--images", required=True, help="image folder (<root>/<class>/<image>)")
    ap.add_argument("--pilot-batch", type=int, default=512)
    ap.add_argument("--n-total", type=int, default=9728)
    ap.add_argument(
        "--repeat-images", type=int, default=512, help="N of each disjoint repeat in (1)"
    )
    ap.add_argument("--cuts", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument("--all-taps", action="store_true", help="every tap, not only block outputs")
    args = ap.parse_args()
    import json

    torch.set_num_threads(2)
    spec = {"source": "checkpoint", "arch": args.arch, "path": args.checkpoint,
            "kwargs": json.loads(args.kwargs)}  # fmt: skip
    model = create_model(spec).eval()
    taps = discover_taps(model)
    if not args.all_taps:
        taps = [t for t in taps if t.kind in BLOCK_OUTPUT_KINDS]
    ds = {"source": "imagefolder", "root": args.images, "test_fraction": 1.0}
    samples = build_samples(ds, seed=0)
    loader = make_loader(samples, ds, resolve_data_config(model), split="test",
                         n_images=args.n_total, batch_size=args.pilot_batch)  # fmt: skip
    t0 = time.time()
    packed = pilot_grams(model, taps, loader, args.n_total)
    grams = [unpack_upper(g) for g in packed]  # once: every cut below slices these
    print(
        f"pilot: {len(grams)} × {args.pilot_batch} images, {len(taps)} taps, {time.time() - t0:.0f} s\n"
    )
    per_rep = args.repeat_images // args.pilot_batch or 1
    n_reps = len(grams) // per_rep
    # (1) SD against n at fixed N, over disjoint repeats; (3) jackknife SE vs that SD
    rows, values = {}, None
    for c in args.cuts:
        accs = [cka_of([s for g in grams[r * per_rep : (r + 1) * per_rep] for s in recut(g, c)])
                for r in range(n_reps)]  # fmt: skip
        vals = np.stack([a.result() for a in accs])
        rows[c] = (vals.std(0, ddof=1), np.mean([a.jackknife_se() for a in accs], 0), vals.mean(0))
        values = vals.mean(0) if values is None else values
    cells = values >= 0.05
    np.fill_diagonal(cells, False)
    ref = rows[max(args.cuts)][0][cells]
    print(f"(1) SD of a cell's CKA over {n_reps} disjoint repeats of N = {per_rep * args.pilot_batch} "
          f"images ({cells.sum()} cells with CKA ≥ 0.05, self diagonal excluded)\n")  # fmt: skip
    top = max(args.cuts)
    # (4) the planner's law, fitted on the whole pilot's jackknife variances at every cut
    n_all = len(grams) * args.pilot_batch
    var = {
        c: cka_of([s for g in grams for s in recut(g, c)]).jackknife_se() ** 2 * n_all
        for c in args.cuts
    }
    x = np.stack([np.ones(len(args.cuts)), 1.0 / np.asarray(args.cuts, float)], 1)
    coef, *_ = np.linalg.lstsq(x, np.stack([var[c][cells] for c in args.cuts]), rcond=None)
    big_n = per_rep * args.pilot_batch
    print(
        f"| batch n | median SD | SD / SD at n = {top} (median) | jackknife SE / SD: median "
        "(cells within ×1.5) | planner-predicted SD / SD: median |"
    )
    print("|---|---|---|---|---|")
    for c, (sd, jk, _) in rows.items():
        ratio = np.median(sd[cells] / ref)
        if c < big_n:
            r = jk[cells] / sd[cells]
            jr = f"{np.median(r):.3g} ({np.mean((r > 1 / 1.5) & (r < 1.5)):.0%})"
        else:
            jr = "— (one minibatch)"
        pred = np.sqrt(np.clip(coef[0] + coef[1] / c, 0, None) / big_n)
        print(
            f"| {c} | {np.median(sd[cells]):.4g} | {ratio:.3g} | {jr} | {np.median(pred / sd[cells]):.3g} |"
        )
    # (2) SD against N at fixed n (jackknife on the first images)
    n_fixed = 128 if 128 in args.cuts else args.cuts[0]
    print(f"\n(2) jackknife SE against N at batch {n_fixed} (median over the same cells)\n")
    print("| N | median SE | SE·√N |")
    print("|---|---|---|")
    big_ns = [x for x in (512, 1024, 2048, 4096, 8192) if x <= len(grams) * args.pilot_batch]
    for big_n in big_ns:
        k = big_n // args.pilot_batch
        acc = cka_of([s for g in grams[:k] for s in recut(g, n_fixed)])
        se = np.median(acc.jackknife_se()[cells])
        print(f"| {big_n} | {se:.4g} | {se * np.sqrt(big_n):.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
