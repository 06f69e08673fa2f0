"""Notebook entry point: CKA of two in-memory models without the workflow.

from seelike.api import compare
df = compare(vit, resnet, images)            # images: (N,3,H,W) tensor, or an iterable of batches
df = compare(vit, resnet, loader_a, loader_b)  # each model with its own preprocessing, same image order
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.cka import MIN_BATCH, cka_from_grams, gram
from seelike.device import exact_fp32, pick_device
from seelike.models.taps import Tap, discover_taps, record_taps


def _batches(images, batch_size: int) -> Iterable:
    return images.split(batch_size) if isinstance(images, torch.Tensor) else images


def _grams(model: nn.Module, taps: list[Tap], x: torch.Tensor) -> torch.Tensor:
    out: dict[str, torch.Tensor] = {}
    with record_taps(model, taps, lambda t, a: out.__setitem__(t.name, gram(a.detach()))):
        model(x)
    return torch.stack([out[t.name] for t in taps])


@exact_fp32()
@torch.inference_mode()
def compare(
    model_a: nn.Module,
    model_b: nn.Module | None,
    images_a,
    images_b=None,
    batch_size: int = 256,
    device: str = "auto",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Minibatch CKA (unbiased HSIC) between every tap of `model_a` (rows) and `model_b` (columns; self
    if None). `images_b` defaults to `images_a`; both must yield the same images in the same batches.

    The frame is `seelike.cka.cka_from_grams`'s, as `cka_matrix` returns it: minibatches of fewer than 4
    images are dropped with a warning, constant taps get CKA 0, a ConstantRepresentationWarning and are listed
    in `df.attrs["constant_rows"/"constant_cols"]`, dropped minibatches in `df.attrs["dropped_batches"]`.
    `progress(0, batch, n_batches)` is called after each minibatch (`seelike.analyses.stream`).
    """
    dev = pick_device(device)
    model_a = model_a.eval().to(dev)
    model_b = model_a if model_b is None else model_b.eval().to(dev)
    taps_a, taps_b = discover_taps(model_a), discover_taps(model_b)
    same = model_b is model_a and images_b is None
    batches_a = _batches(images_a, batch_size)
    batches_b = _batches(images_b, batch_size) if images_b is not None else None

    def grams() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        other = iter(stream(batches_b, dev)) if batches_b is not None else None
        for batch in stream(batches_a, dev, progress=progress):
            xa = batch.x
            xb = xa if other is None else next(other, None)
            xb = xb.x if other is not None and xb is not None else xb
            if xb is None or len(xa) != len(xb):
                got = "no batch" if xb is None else f"{len(xb)} images"
                raise ValueError(
                    f"batch {batch.index}: {len(xa)} images for model a but {got} for model b"
                )
            if len(xa) < MIN_BATCH:  # dropped by the accumulator, not worth a forward pass
                yield torch.zeros(len(taps_a), len(xa), len(xa)), None
                continue
            ga = _grams(model_a, taps_a, xa)
            yield ga, (None if same else _grams(model_b, taps_b, xb))

    return cka_from_grams(grams(), [t.name for t in taps_a], [t.name for t in taps_b], dev)
