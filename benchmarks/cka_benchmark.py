"""CKA step benchmark (issue 3): ours vs a naive per-pair loop vs the peer library torch_cka, on the SAME
activations of two random-weight timm models, plus the cost of the forward passes for scale.

    python benchmarks/cka_benchmark.py [--images 2048] [--batch 256] [--size 128]

Prints one table: wall time, peak extra RSS, max |Δ| from the float64 reference (= the naive loop, written
from the formula in float64). "ours" = fp32 Grams of every tap (done inside the cache pass) + the float64
U-centred stacked accumulation (the cka rule).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import psutil
import timm
import torch
from torch import nn

from seelike.cka import CkaAccumulator, gram
from seelike.models.load import disable_fused_attention
from seelike.models.taps import discover_taps, record_taps


class PeakRss:
    """Peak resident memory above the starting level while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.proc, self.base, self.peak, self.run = (
            psutil.Process(),
            psutil.Process().memory_info().rss,
            0,
            True,
        )
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    def _poll(self):
        while self.run:
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.run = False
        self.t.join()


def hsic_ref(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. eq. 5 in float64, term by term."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ K @ L @ one
    ) / (n * (n - 3))


def naive_step(acts_a, acts_b, sums):
    """Per-pair loop in float64: the reference."""
    ga = [a.reshape(len(a), -1).double().numpy() for a in acts_a]
    gb = [b.reshape(len(b), -1).double().numpy() for b in acts_b]
    ka, kb = [x @ x.T for x in ga], [y @ y.T for y in gb]
    for i, K in enumerate(ka):
        for j, L in enumerate(kb):
            sums["kl"][i, j] += hsic_ref(K, L)
            sums["kk"][i, j] += hsic_ref(K, K)
            sums["ll"][i, j] += hsic_ref(L, L)


class Replay(nn.Module):
    """Feeds stored activations to torch_cka's hooks: layer i returns activation i of the current batch."""

    def __init__(self, n):
        super().__init__()
        self.layers = nn.ModuleList(nn.Identity() for _ in range(n))
        self.current = []

    def forward(self, _idx):
        for layer, a in zip(self.layers, self.current, strict=True):
            layer(a)
        return torch.zeros(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vit = disable_fused_attention(
        timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=args.size)
    ).eval()
    cnn = timm.create_model("resnet18", pretrained=False).eval()
    taps_a, taps_b = discover_taps(vit), discover_taps(cnn)
    from torch_cka import CKA

    ra, rb = Replay(len(taps_a)), Replay(len(taps_b))
    peer = CKA(
        ra,
        rb,
        "a",
        "b",
        [f"layers.{i}" for i in range(len(taps_a))],
        [f"layers.{i}" for i in range(len(taps_b))],
        device="cpu",
    )
    n_batches = args.images // args.batch
    peer_sums = torch.zeros(len(taps_a), len(taps_b), 3)
    acc = CkaAccumulator(len(taps_a), len(taps_b))
    sums = {k: np.zeros((len(taps_a), len(taps_b))) for k in ("kl", "kk", "ll")}
    t = {"forward": 0.0, "ours": 0.0, "ours_step": 0.0, "naive": 0.0, "peer": 0.0}
    peak = {"ours": 0, "naive": 0, "peer": 0}
    gen = torch.Generator().manual_seed(0)
    for b in range(n_batches):
        x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
        acts = {"a": [], "b": []}
        for key, model, taps in (("a", vit, taps_a), ("b", cnn, taps_b)):
            t0 = time.perf_counter()
            with (
                record_taps(
                    model,
                    taps,
                    lambda tp, v, key=key, acts=acts: acts[key].append(v.detach().clone()),
                ),
                torch.inference_mode(),
            ):
                model(x)
            t["forward"] += time.perf_counter() - t0
        with PeakRss() as pr:
            t0 = time.perf_counter()
            ga = torch.stack([gram(v) for v in acts["a"]])  # done inside the cache pass
            gb = torch.stack([gram(v) for v in acts["b"]])
            t1 = time.perf_counter()
            acc.add(ga, gb)  # the cka rule, from cached Grams
            t["ours"] += time.perf_counter() - t0
            t["ours_step"] += time.perf_counter() - t1
        peak["ours"] = max(peak["ours"], pr.peak)
        with PeakRss() as pr:
            t0 = time.perf_counter()
            naive_step(acts["a"], acts["b"], sums)
            t["naive"] += time.perf_counter() - t0
        peak["naive"] = max(peak["naive"], pr.peak)
        with PeakRss() as pr:
            t0 = time.perf_counter()
            ra.current, rb.current = acts["a"], acts["b"]
            peer.hsic_matrix = torch.zeros(len(taps_a), len(taps_b), 3)
            peer.model1_features, peer.model2_features = {}, {}
            ra(None)
            rb(None)
            # torch_cka.compare's inner loop body for one batch (its DataLoader/model driving bypassed)
            for i, (_, f1) in enumerate(peer.model1_features.items()):
                X = f1.flatten(1)
                K = X @ X.t()
                K.fill_diagonal_(0.0)
                peer.hsic_matrix[i, :, 0] += peer._HSIC(K, K)
                for j, (_, f2) in enumerate(peer.model2_features.items()):
                    Y = f2.flatten(1)
                    L = Y @ Y.t()
                    L.fill_diagonal_(0)
                    peer.hsic_matrix[i, j, 1] += peer._HSIC(K, L)
                    peer.hsic_matrix[i, j, 2] += peer._HSIC(L, L)
            peer_sums += peer.hsic_matrix
            t["peer"] += time.perf_counter() - t0
        peak["peer"] = max(peak["peer"], pr.peak)
        print(f"batch {b + 1}/{n_batches} done", flush=True)
    ref = sums["kl"] / np.sqrt(sums["kk"] * sums["ll"])
    ours = acc.result()
    peer_m = (peer_sums[:, :, 1] / (peer_sums[:, :, 0].sqrt() * peer_sums[:, :, 2].sqrt())).numpy()
    ok = np.isfinite(ref)
    dev = {
        "ours": float(np.abs(ours - ref)[ok].max()),
        "naive": 0.0,
        "peer": float(np.nanmax(np.abs(peer_m - ref)[ok])),
    }
    print(
        f"\nworkload: vit_tiny (depth 2, {len(taps_a)} taps) × resnet18 ({len(taps_b)} taps), "
        f"{n_batches * args.batch} images of {args.size}px, batch {args.batch}, {args.threads} CPU threads"
    )
    print(f"forward passes of both models: {t['forward']:.2f} s")
    print(
        f"seelike CKA step from cached Grams (the cka rule): {t['ours_step']:.3f} s = "
        f"{100 * t['ours_step'] / t['forward']:.2f}% of the forward passes; Gram computation inside the "
        f"cache pass: {t['ours'] - t['ours_step']:.2f} s\n"
    )
    print(
        "| method | CKA step wall (s) | vs ours | % of forward | peak extra RSS (MB) | max abs dev vs float64 ref |"
    )
    print("|---|---|---|---|---|---|")
    for k, label in (
        ("ours", "seelike (centred fp32 Grams + stacked U-centred product)"),
        ("naive", "naive per-pair loop (float64)"),
        ("peer", "torch_cka 0.21"),
    ):
        print(
            f"| {label} | {t[k]:.3f} | {t[k] / t['ours']:.1f}× | {100 * t[k] / t['forward']:.1f}% | "
            f"{peak[k] / 1e6:.0f} | {dev[k]:.2e} |"
        )


if __name__ == "__main__":
    main()
