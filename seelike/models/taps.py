"""Taps: the intermediate representations a model exposes, named in the paper's terms, in forward order.

The model's family record (`seelike.models.families.FAMILIES`) names its taps; each tap is a (module, where,
occurrence) triple: `where="output"` hooks the module's output, `where="input"` its first positional input (e.g. the
post-attention residual sum is the input of `norm2`, the ResNet residual sum the input of the final activation) —
sums that are no module's output; `occurrence` picks one firing of a module a block calls several times (CaiT's one
drop_path for both branches). One probe forward pass (`probe_layouts`) then orders the taps as they fire and records
each one's layout (`seelike.models.layout`: nchw, nhwc, tokens with prefix tokens, vector) and spatial grid, which
every analysis reads instead of guessing from shapes.

CNN families start with `stem_conv`, the raw output of the stem convolution (before any norm, activation or
pooling; an analogue of a ViT's patch embedding), then `stem`, the stem's output as the first unit sees it (after
norm + activation, and the max pool where the stem has one). `stem_conv` is not a block output
(`BLOCK_OUTPUT_KINDS`): per-block comparisons and default probes still start at `stem`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from seelike.models.kinds import BLOCK_OUTPUT_KINDS as _BLOCK_OUTPUT_KINDS

# torch is imported where a model runs: the `Tap` record is read without it (a dry run's cached decisions)
if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "BLOCK_OUTPUT_KINDS",
    "HookSite",
    "StopForward",
    "Tap",
    "TapFiringError",
    "add_hooks",
    "discover_taps",
    "hooks",
    "probe_layouts",
    "record_taps",
    "tap_family",
    "tap_record",
    "taps_table",
]


@dataclass(frozen=True)
class Tap:
    name: str  # unique, e.g. "blocks.3.attn_res" or "layer2.0.out"
    kind: str  # paper term, e.g. "attn_res", "mlp_hidden", "conv2", "out"
    module_path: str  # dotted path of the hooked module
    where: str  # "output" or "input"
    block: int | None  # running block index across the model (None for stem / final norm)
    index: int = 0  # position in forward order
    # which firing of the module in one forward (a drop_path shared by a block's branches), of `fires` firings
    occurrence: int = 0
    fires: int = 1
    item: int = 0  # a module returning a tuple: the item that is the per-image representation (TNT's patches)
    # filled in by the probe forward pass (`probe_layouts`): seelike.models.layout
    layout: str = "unknown"  # nchw, nhwc, tokens, vector, other
    grid_hw: tuple[int, int] | None = None  # spatial positions at probe_hw
    num_prefix_tokens: int = 0  # tokens: non-spatial tokens first
    shape: tuple[int, ...] | None = None  # per-image activation shape at probe_hw
    probe_hw: tuple[int, int] | None = None

    @property
    def spatial(self) -> bool:
        """The tap has grid positions (a map, or tokens on a grid)."""
        return self.layout in ("nchw", "nhwc") or (
            self.layout == "tokens" and self.grid_hw is not None
        )


def tap_record(tap: Tap, shape) -> dict:
    """A tap as stored in output metadata (cache, probe features): identity, place and activation shape."""
    return {
        "name": tap.name,
        "kind": tap.kind,
        "index": tap.index,
        "block": tap.block,
        "shape": shape,
        "layout": tap.layout,
        "grid_hw": list(tap.grid_hw) if tap.grid_hw else None,
        "num_prefix_tokens": tap.num_prefix_tokens,
    }


# What "a block's representation" means across families (defined torch-free in seelike.models.kinds): the input
# embedding / stem, then each ViT block's or CNN unit's output (per-block comparisons, Fig 12 and App. G).
BLOCK_OUTPUT_KINDS = _BLOCK_OUTPUT_KINDS


class TapFiringError(RuntimeError):
    """A tap fired a number of times other than once in a forward pass (a reused module)."""


def tap_family(model: nn.Module) -> str:
    """The name of the family record (`seelike.models.families.FAMILIES`) that describes `model`."""
    from seelike.models.families import family_of

    return family_of(model).name


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model sees: its data config's input size where the loader recorded one, else its patch
    embedding's `img_size` (a ViT built with `kwargs.img_size`), else timm's pretrained config, else 3×224×224."""
    from seelike.models.load import built_input_size

    given = getattr(model, "seelike_input_size", None)  # the data config's, set by load_model
    if given is not None:
        return tuple(int(v) for v in given)  # type: ignore[return-value]
    built = built_input_size(model)
    if built is not None:
        return built
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))  # type: ignore[return-value]


def _batch_item(o, batch: int) -> tuple[int, torch.Tensor | None]:
    """(index, tensor) of the first batch-first tensor of a module's value (the value itself: index 0); else the
    first tensor, or None."""
    import torch

    items = list(o) if isinstance(o, (tuple, list)) else [o]
    tensors = [(i, x) for i, x in enumerate(items) if isinstance(x, torch.Tensor)]
    for i, x in tensors:
        if x.dim() and x.shape[0] == batch:
            return i, x
    return tensors[0] if tensors else (0, None)


def discover_taps(model: nn.Module, img_hw: Sequence[int] | None = None) -> list[Tap]:
    """The model's taps in forward order, each with its layout and spatial grid.

    The model's family record (`seelike.models.families`) names the taps; one probe forward pass of two blank
    images (at `img_hw`, default the model's input size; on the model's device, the meta device included) orders
    them as they fire, reads each one's layout (`seelike.models.layout.infer_layout`) and leaves out what is not a
    per-image representation: a module whose output's first dimension is not the batch (windowed or unfolded
    attention internals), that returns no tensor, or that does not fire.
    """
    from seelike.models.families import family_of

    fam = family_of(model)
    raw = fam.discover(model)
    modules = dict(model.named_modules())
    missing = [r[2] for r in raw if r[2] not in modules]
    if missing:
        raise RuntimeError(
            f"tap discovery for family '{fam.name}' names absent modules: {missing[:5]}"
        )
    taps = [Tap(*r[:5], index=i, occurrence=r[5] if len(r) > 5 else 0) for i, r in enumerate(raw)]
    taps = probe_layouts(model, taps, img_hw, strict=fam.exact)
    if not fam.tokens_on_grid:  # tokens in another order than row-major: no positions to read
        taps = [replace(t, grid_hw=None) if t.layout == "tokens" else t for t in taps]
    return taps


# the probe's batch size: a window partition of 2 images has another leading dimension
BATCH_PROBE = 2


def blank_forward(model: nn.Module, img_hw: Sequence[int] | None = None) -> tuple[int, int]:
    """One forward pass of BATCH_PROBE blank images at the size the model sees (`input_size`, or `img_hw`), on
    the model's device (the meta device included), in eval mode, without gradients and in exact fp32 as every
    analysis pass (the probe is part of the analysis that calls it); returns the (H, W) it used. The structure
    probes (hooks registered around it by the caller) run through here."""
    import torch

    from seelike.device import analysis_device, exact_fp32

    c, h, w = input_size(model)
    if img_hw is not None:
        h, w = int(img_hw[0]), int(img_hw[1])
    device = analysis_device(model=model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), exact_fp32():
            model(torch.zeros(BATCH_PROBE, c, h, w, device=device))
    finally:
        model.train(was_training)
    return h, w


def probe_layouts(
    model: nn.Module, taps: list[Tap], img_hw: Sequence[int] | None = None, strict: bool = True
) -> list[Tap]:
    """`taps` in firing order with `layout`, `grid_hw`, `num_prefix_tokens` and `probe_hw` filled in from one
    forward pass of BATCH_PROBE blank images. With `strict`, a tap that fires wrongly (not once, no tensor, a
    leading dimension other than the batch) is an error (a family rule that names the wrong module); otherwise
    it is left out (the generic rule's leaf modules)."""
    from seelike.models.layout import infer_layout

    seen: dict[str, tuple[int, tuple[int, ...] | None]] = {}
    items: dict[str, int] = {}
    order: list[str] = []
    expected: dict[tuple[str, str], int] = {}
    for tap in taps:
        site = (tap.module_path, tap.where)
        expected[site] = max(expected.get(site, 0), tap.occurrence + 1)

    def cb(tap: Tap, t) -> None:
        order.append(tap.name)
        i, x = _batch_item(t, BATCH_PROBE)
        items[tap.name] = i
        seen[tap.name] = (len(order), tuple(x.shape) if x is not None else None)

    with record_taps(model, taps, cb, check_once=False, raw=True) as fired:
        h, w = blank_forward(model, img_hw)
        counts = dict(fired)
    declared = getattr(model, "num_prefix_tokens", None)
    channels_last = str(getattr(model, "output_fmt", "") or "").upper() == "NHWC"
    out, bad = [], []
    for tap in taps:
        shape = seen.get(tap.name, (0, None))[1]
        n_fired, n_expected = counts.get(tap.name, 0), expected[(tap.module_path, tap.where)]
        if n_fired != n_expected or shape is None or shape[0] != BATCH_PROBE:
            why = (
                (
                    f"its module fires more than once ({n_fired} times, expected {n_expected})"
                    if n_fired > n_expected
                    else f"its module fired {n_fired} times, expected {n_expected}"
                )
                if n_fired != n_expected
                else ("gave no tensor" if shape is None else f"gave shape {shape}, not batch-first")
            )
            bad.append(f"{tap.name} ({tap.module_path}: {why})")
            continue
        lay = infer_layout(shape[1:], (h, w), declared, channels_last)
        out.append(
            replace(
                tap,
                layout=lay.kind,
                grid_hw=lay.grid_hw,
                num_prefix_tokens=lay.num_prefix_tokens,
                shape=tuple(shape[1:]),
                probe_hw=(h, w),
                fires=n_fired,
                item=items[tap.name],
            )
        )
    if bad and strict:
        raise TapFiringError(f"taps that are not one per-image representation: {bad[:5]}")
    if bad:
        warnings.warn(
            f"left out of the taps (not one per-image representation): {bad[:8]}", stacklevel=2
        )
    out.sort(key=lambda t: seen[t.name][0])
    return [replace(t, index=i) for i, t in enumerate(out)]


def taps_named(taps: Sequence[Tap], names: Sequence[str], key: str) -> list[Tap]:
    """The taps called `names`, in the order given; a name that is not a tap is an error naming the config
    `key` and listing some valid names (all of them are in results/models/<model>/taps.csv)."""
    by_name = {t.name: t for t in taps}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(
            f"{key} names {unknown}: not a tap of this model; valid names include "
            f"{[t.name for t in taps][:12]} (all in results/models/<model>/taps.csv)"
        )
    return [by_name[n] for n in names]


def taps_table(taps: list[Tap]):
    """Taps as a tidy pandas frame (one row per tap, forward order)."""
    import pandas as pd

    return pd.DataFrame([asdict(t) for t in taps])


class StopForward(Exception):
    """Raised by a hook (`hooks`) once it has what it wanted: the rest of the model need not run. The `hooks`
    block it was raised in ends there, without error."""


# One observer of a module: (module, where, fn). where="output": `fn(output)` after the module runs;
# where="input": `fn(args)` with its positional inputs (a tuple) before it runs. What `fn` returns is ignored.
HookSite = tuple["nn.Module", str, Callable[[Any], None]]


def add_hooks(sites: Iterable[HookSite]) -> list[torch.utils.hooks.RemovableHandle]:
    """Register an observing hook for every (module, where, fn) of `sites` (`HookSite`) and return the handles,
    in order; a bad `where` removes those already registered and raises. Prefer `hooks`, which removes them."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module, where, fn in sites:
            if where == "output":
                handles.append(module.register_forward_hook(_observe_output(fn)))
            elif where == "input":
                handles.append(module.register_forward_pre_hook(_observe_input(fn)))
            else:
                raise ValueError(f"a hook's where must be 'output' or 'input', got {where!r}")
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles


def _observe_output(fn: Callable[[Any], None]):
    def hook(_m, _args, out) -> None:
        fn(out)

    return hook


def _observe_input(fn: Callable[[Any], None]):
    def hook(_m, args) -> None:
        fn(args)

    return hook


@contextlib.contextmanager
def hooks(sites: Iterable[HookSite]) -> Iterator[None]:
    """The one way an analysis observes modules: inside the block, `fn` of every (module, where, fn) of `sites`
    runs on each forward (`HookSite`: the module's output, or its positional inputs); hooks never change what
    the model computes. A hook that raises `StopForward` ends the forward pass and the block, without error.
    Every hook is removed on leaving the block, also when it raises."""
    handles = add_hooks(sites)
    try:
        yield
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def record_taps(
    model: nn.Module,
    taps: list[Tap],
    callback: Callable[[Tap, torch.Tensor], None],
    check_once: bool = True,
    raw: bool = False,
) -> Iterator[dict[str, int]]:
    """Hook every tap; `callback(tap, activation)` runs inside the hook, so in-place ops that follow
    (timm ResNet's `x += shortcut`, inplace ReLU) cannot corrupt what it sees. A tap reads firing number
    `tap.occurrence` of its module (a block whose branches share one drop_path module fires it once per branch).
    Yields, per tap, how often its module fired in the current forward; with `check_once`, a module firing more
    often than its taps expect raises `TapFiringError`. `raw`: pass the hook's value as is (a tuple, a list,
    anything), not its first tensor. The hooks are `hooks`' (removed on leaving, `StopForward` ends the block).
    """
    modules = dict(model.named_modules())
    sites: dict[tuple[str, str], list[Tap]] = {}
    for tap in taps:
        if tap.where not in ("output", "input"):
            raise ValueError(
                f"tap '{tap.name}': where must be 'output' or 'input', got {tap.where!r}"
            )
        sites.setdefault((tap.module_path, tap.where), []).append(tap)
    counts = {t.name: 0 for t in taps}
    fired: dict[tuple[str, str], int] = {}

    def fire(site: tuple[str, str], value) -> None:
        k = fired[site] = fired.get(site, 0) + 1
        group = sites[site]
        for tap in group:
            counts[tap.name] = k
        expected = max(max(t.occurrence + 1, t.fires) for t in group)
        if check_once and k > expected:
            raise TapFiringError(
                f"tap '{group[0].name}' ({site[0]}) fired {'twice' if k == 2 else f'{k} times'} in one forward, "
                f"expected {expected}: the "
                "module is reused; its family record must name each firing (Tap.occurrence)"
            )
        for tap in group:
            if tap.occurrence == k - 1:
                v = value[tap.item] if not raw and isinstance(value, (tuple, list)) else value
                callback(tap, v)

    # Counts reset before each forward so `check_once` is per pass.
    def reset(_args) -> None:
        fired.clear()
        for k in counts:
            counts[k] = 0

    observers: list[HookSite] = [
        (modules[site[0]], site[1], lambda v, s=site: fire(s, v)) for site in sites
    ]
    with hooks([*observers, (model, "input", reset)]):
        yield counts
