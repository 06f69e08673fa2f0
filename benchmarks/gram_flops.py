"""FLOP budget of the cache rule: the Gram of every tap vs the model's forward pass, per image.

The cache rule runs a model once and computes, per minibatch of n images, X Xᵀ for every tap (2·n²·p flops
for p features per image), so per image the Grams cost 2·n·Σp — linear in the CKA batch size — while the
forward costs a fixed amount. This bounds the cache's throughput relative to a bare forward pass before any
timing: at equal arithmetic rates it is at most forward / (forward + Gram). Runs on CPU in seconds.

    python benchmarks/gram_flops.py --archs vit_base_patch16_224 resnet50 --batches 128 256 1024
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode


def budget(arch: str, size: int, batches: list[int]) -> list[dict]:
    import timm

    from seelike.models.load import disable_fused_attention
    from seelike.models.taps import discover_taps, record_taps

    model = disable_fused_attention(timm.create_model(arch, pretrained=False)).eval()
    taps = discover_taps(model)
    features: dict[str, int] = {}
    x = torch.randn(1, 3, size, size)
    with (
        torch.no_grad(),
        record_taps(model, taps, lambda t, a: features.__setitem__(t.name, a[0].numel())),
    ):
        model(x)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    forward, p = counter.get_total_flops(), sum(features.values())
    return [
        {
            "arch": arch,
            "taps": len(taps),
            "features_M": p / 1e6,
            "forward_GF": forward / 1e9,
            "n": n,
            "gram_GF": 2 * n * p / 1e9,
            "ratio": 2 * n * p / forward,
            "bound": forward / (forward + 2 * n * p),
            "gram_MB_per_batch": len(taps) * n * n * 4 / 1e6,
        }
        for n in batches
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--archs", nargs="+", default=["vit_base_patch16_224", "resnet50"])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256, 1024])
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    print(
        "| arch | taps | features/image (M) | forward GFLOP/image | CKA batch n | Gram GFLOP/image | Gram / forward |"
        " throughput bound | Gram MB / batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        for r in budget(arch, args.size, args.batches):
            print(
                f"| {r['arch']} | {r['taps']} | {r['features_M']:.1f} | {r['forward_GF']:.1f} | {r['n']} |"
                f" {r['gram_GF']:.1f} | {r['ratio']:.2f} | {r['bound']:.0%} | {r['gram_MB_per_batch']:.0f} |"
            )


if __name__ == "__main__":
    main()
