"""Notebook entry point: CKA of two in-memory models without the workflow.

from seelike.api import compare
df = compare(vit, resnet, images)            # images: (N,3,H,W) tensor, or an iterable of batches
df = compare(vit, resnet, loader_a, loader_b)  # each model with its own preprocessing, same image order
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import torch
from torch import nn

from seelike.cka import MIN_BATCH, CkaAccumulator, gram
from seelike.device import pick_device
from seelike.models.load import disable_fused_attention
from seelike.models.taps import Tap, discover_taps, record_taps


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
        return
    for b in images:
        yield b[0] if isinstance(b, (tuple, list)) else b


def _grams(model: nn.Module, taps: list[Tap], x: torch.Tensor) -> torch.Tensor:
    out: dict[str, torch.Tensor] = {}
    with record_taps(model, taps, lambda t, a: out.__setitem__(t.name, gram(a.detach()))):
        model(x)
    return torch.stack([out[t.name] for t in taps])


@torch.inference_mode()
def compare(
    model_a: nn.Module,
    model_b: nn.Module | None,
    images_a,
    images_b=None,
    batch_size: int = 256,
    device: str = "auto",
) -> pd.DataFrame:
    """Minibatch CKA (unbiased HSIC) between every tap of `model_a` (rows) and `model_b` (columns; self
    if None). `images_b` defaults to `images_a`; both must yield the same images in the same batches."""
    dev = pick_device(device)
    model_a = disable_fused_attention(model_a).eval().to(dev)
    model_b = model_a if model_b is None else disable_fused_attention(model_b).eval().to(dev)
    taps_a, taps_b = discover_taps(model_a), discover_taps(model_b)
    acc = CkaAccumulator(len(taps_a), len(taps_b), device=dev)
    same = model_b is model_a and images_b is None
    pairs = zip(
        _batches(images_a, batch_size),
        _batches(images_b if images_b is not None else images_a, batch_size),
    )
    for i, (xa, xb) in enumerate(pairs):
        if len(xa) != len(xb):
            raise ValueError(f"batch {i}: {len(xa)} images for model a but {len(xb)} for model b")
        if len(xa) < MIN_BATCH:
            acc.dropped.append(i)
            continue
        ga = _grams(model_a, taps_a, xa.to(dev))
        acc.add(ga, None if same else _grams(model_b, taps_b, xb.to(dev)), batch_id=i)
    return pd.DataFrame(
        acc.result(), index=[t.name for t in taps_a], columns=[t.name for t in taps_b]
    )
