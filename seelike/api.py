"""Notebook entry point: CKA (and the other similarity measures) of two in-memory models without the workflow.

from seelike.api import compare
df = compare(vit, resnet, images)            # images: (N,3,H,W) tensor, or an iterable of batches
df = compare(vit, resnet, loader_a, loader_b)  # each model with its own preprocessing, same image order
dfs = compare_measures(vit, resnet, images, measures=["linear_cka", "dcor", "rsa"])  # measure → frame
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.cka import MIN_BATCH, cka_from_grams, gram
from seelike.device import exact_fp32, pick_device
from seelike.models.taps import Tap, discover_taps, record_taps
from seelike.similarity import MEASURES, MeasureOptions, measures_from_grams


def _batches(images, batch_size: int) -> Iterable:
    return images.split(batch_size) if isinstance(images, torch.Tensor) else images


def _grams(model: nn.Module, taps: list[Tap], x: torch.Tensor) -> torch.Tensor:
    out: dict[str, torch.Tensor] = {}
    with record_taps(model, taps, lambda t, a: out.__setitem__(t.name, gram(a.detach()))):
        model(x)
    return torch.stack([out[t.name] for t in taps])


def _gram_stream(
    model_a: nn.Module,
    model_b: nn.Module | None,
    images_a,
    images_b,
    batch_size: int,
    device: str,
    progress: Progress | None,
) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None]], list[str], list[str], torch.device]:
    """Per minibatch, the stacked Grams of every tap of both models (None for b when self-similarity), the tap
    names of each model, and the device."""
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

    return grams(), [t.name for t in taps_a], [t.name for t in taps_b], dev


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
    grams, names_a, names_b, dev = _gram_stream(
        model_a, model_b, images_a, images_b, batch_size, device, progress
    )
    return cka_from_grams(grams, names_a, names_b, dev)


@exact_fp32()
@torch.inference_mode()
def compare_measures(
    model_a: nn.Module,
    model_b: nn.Module | None,
    images_a,
    images_b=None,
    measures: Sequence[str] = MEASURES,
    options: MeasureOptions | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, pd.DataFrame]:
    """`compare` under several similarity measures (`seelike.similarity.MEASURES`) from one forward pass per
    minibatch: measure → tap × tap frame. `bures` is computed for every tap pair here (O(n³) each)."""
    grams, names_a, names_b, dev = _gram_stream(
        model_a, model_b, images_a, images_b, batch_size, device, progress
    )
    return measures_from_grams(grams, names_a, names_b, measures, options, dev)
