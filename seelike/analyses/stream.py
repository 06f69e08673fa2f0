"""The streaming layer every analysis uses: batches onto the device, a stop after n images, one progress protocol.

`stream(batches, device, ...)` yields `Batch(index, x, y)` for each item of `batches` (images (B, 3, H, W), or
(images, labels) tuples as a `DataLoader` gives them): `x` on `device`, cut so that no more than `n_images`
images are seen in all (a partial last batch is taken), `y` cut likewise (labels stay where they are; None when
the item has none). Batches listed in `skip` are neither moved nor reported (a resumed run's finished ones).

Progress has ONE protocol, `Progress = Callable[[repeat, batch, n_batches], None]`, called once per batch AFTER
the consumer has finished with it (when the loop asks for the next one), so a progress callback that raises
stops a run with that batch's output already written. `n_batches` is what the stream will yield in all: the
iterable's length, capped by `n_images` when the batch size is known (-1 when unknown). Analyses that do not
iterate over images report through the same shape (linear probes: `(0, tap, n_taps)`).
`seelike.rules.Progress` is the logger the workflow passes.

Metadata an analysis writes next to its output is its own keys over the caller's `extra_meta` (the rule's
metadata): `with_extra_meta`, one merge order for every analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, NamedTuple

import torch

__all__ = ["Batch", "Progress", "n_batches_of", "stream", "with_extra_meta"]

Progress = Callable[[int, int, int], None]


class Batch(NamedTuple):
    index: int  # position in the iterable (skipped batches count)
    x: torch.Tensor  # on the device, at most the images still wanted
    y: Any  # labels of those images (as given, not moved), or None


def n_batches_of(batches: Iterable, n_images: int | None = None) -> int:
    """How many batches `stream` will yield from `batches`: its length, capped by `n_images` when the batch
    size is known (a DataLoader's `batch_size`); -1 when the iterable has no length."""
    try:
        n = len(batches)  # type: ignore[arg-type]
    except TypeError:
        return -1
    size = getattr(batches, "batch_size", None)
    if n_images is not None and size:
        n = min(n, math.ceil(n_images / size))
    return n


def _split(item: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None)
    return item, None


def stream(
    batches: Iterable,
    device: str | torch.device | None = None,
    *,
    n_images: int | None = None,
    progress: Progress | None = None,
    repeat: int = 0,
    n_batches: int | None = None,
    skip: Collection[int] = (),
) -> Iterator[Batch]:
    """Yield the batches of `batches` on `device` until `n_images` images were yielded (module docstring).

    `repeat` and `n_batches` are what progress reports (n_batches defaults to `n_batches_of(batches, n_images)`).
    """
    device = torch.device(device) if device is not None else None
    total = n_batches_of(batches, n_images) if n_batches is None else n_batches
    seen = 0
    for b, item in enumerate(batches):
        if n_images is not None and seen >= n_images:
            break
        if b in skip:
            continue
        x, y = _split(item)
        take = len(x) if n_images is None else min(len(x), n_images - seen)
        if take < len(x):
            x = x[:take]
            y = y[:take] if y is not None else None
        if device is not None:
            x = x.to(device, non_blocking=True)
        yield Batch(b, x, y)
        seen += take
        if progress is not None:
            progress(repeat, b, total)


def with_extra_meta(extra: dict[str, Any] | None, own: dict[str, Any]) -> dict[str, Any]:
    """An analysis's output metadata: the caller's `extra` keys (the rule's metadata) first, then the analysis's
    `own`, which win where both have a key (e.g. a cache's `model` is its identity record, not a name)."""
    return {**(extra or {}), **own}
