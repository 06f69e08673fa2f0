"""Taps: the intermediate representations a model exposes, named in the paper's terms, in forward order.

A registry maps a model family to a discoverer, so a new family is one entry (`register_family`), not a branch
in every analysis. Each tap is a (module, where) pair: `where="output"` hooks the module's output,
`where="input"` its first positional input (e.g. the post-attention residual sum is the input of `norm2`,
the ResNet residual sum the input of the final activation) — sums that are no module's output.

CNN families start with `stem_conv`, the raw output of the stem convolution (before any norm, activation or
pooling; an analogue of a ViT's patch embedding), then `stem`, the stem's output as the first unit sees it (after
norm + activation, and the max pool where the stem has one). `stem_conv` is not a block output
(`BLOCK_OUTPUT_KINDS`): per-block comparisons and default probes still start at `stem`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from seelike.models.kinds import BLOCK_OUTPUT_KINDS as _BLOCK_OUTPUT_KINDS

__all__ = [
    "BLOCK_OUTPUT_KINDS",
    "Tap",
    "TapFiringError",
    "discover_taps",
    "record_taps",
    "register_family",
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


def tap_record(tap: Tap, shape) -> dict:
    """A tap as stored in output metadata (cache, probe features): identity, place and activation shape."""
    return {
        "name": tap.name,
        "kind": tap.kind,
        "index": tap.index,
        "block": tap.block,
        "shape": shape,
    }


# What "a block's representation" means across families (defined torch-free in seelike.models.kinds): the input
# embedding / stem, then each ViT block's or CNN unit's output (per-block comparisons, Fig 12 and App. G).
BLOCK_OUTPUT_KINDS = _BLOCK_OUTPUT_KINDS


class TapFiringError(RuntimeError):
    """A tap fired a number of times other than once in a forward pass (a reused module)."""


Discoverer = Callable[[nn.Module], list[tuple[str, str, str, str, int | None]]]
_FAMILIES: list[tuple[str, Callable[[nn.Module], bool], Discoverer]] = []


def register_family(name: str, detect: Callable[[nn.Module], bool], discover: Discoverer) -> None:
    """Add a model family; families are tried in registration order, `generic` last."""
    _FAMILIES.append((name, detect, discover))


def _has(m: nn.Module, *names: str) -> bool:
    return all(hasattr(m, n) for n in names)


def _is_identity(m: nn.Module | None) -> bool:
    return m is None or isinstance(m, nn.Identity)


# ---------------------------------------------------------------- ViT-like (ViT, DeiT, BEiT-style blocks)
def _is_vit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return (
        isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and len(blocks) > 0
        and all(_has(b, "attn", "norm1", "norm2", "mlp") for b in blocks)
    )


def _vit_taps(model: nn.Module) -> list[tuple[str, str, str, str, int | None]]:
    out: list[tuple[str, str, str, str, int | None]] = [
        ("embed", "embed", "blocks.0", "input", None)
    ]
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        # With LayerScale the branch is the ls output; BEiT-style gamma parameters have no module, so the
        # attention output stands in (documented in the README).
        attn_branch = f"{p}.ls1" if not _is_identity(getattr(blk, "ls1", None)) else f"{p}.attn"
        mlp_branch = f"{p}.ls2" if not _is_identity(getattr(blk, "ls2", None)) else f"{p}.mlp"
        out += [
            (f"{p}.norm1", "norm1", f"{p}.norm1", "output", i),
            (f"{p}.attn", "attn", attn_branch, "output", i),
            (f"{p}.attn_res", "attn_res", f"{p}.norm2", "input", i),
            (f"{p}.norm2", "norm2", f"{p}.norm2", "output", i),
        ]
        if hasattr(blk.mlp, "act"):
            out.append((f"{p}.mlp_hidden", "mlp_hidden", f"{p}.mlp.act", "output", i))
        out += [
            (f"{p}.mlp", "mlp", mlp_branch, "output", i),
            (f"{p}.block", "block", p, "output", i),
        ]
    if not _is_identity(getattr(model, "norm", None)):
        out.append(("norm", "norm", "norm", "output", None))
    return out


# ---------------------------------------------------------------- timm ResNet (post-activation)
def _is_resnet(model: nn.Module) -> bool:
    return _has(model, "conv1", "bn1", "layer1", "layer4")


def _resnet_taps(model: nn.Module) -> list[tuple[str, str, str, str, int | None]]:
    # stem: conv1 (a Sequential ending in a conv for deep stems) → bn1 → act1 → maxpool
    out: list[tuple[str, str, str, str, int | None]] = [
        ("stem_conv", "stem_conv", "conv1", "output", None),
        ("stem", "stem", "maxpool", "output", None),
    ]
    k = 0
    for s in range(1, 5):
        for b, blk in enumerate(getattr(model, f"layer{s}")):
            p = f"layer{s}.{b}"
            if hasattr(blk, "conv3"):  # Bottleneck
                branch = f"{p}.se" if not _is_identity(getattr(blk, "se", None)) else f"{p}.bn3"
                out += [
                    (f"{p}.conv1", "conv1", f"{p}.act1", "output", k),
                    (f"{p}.conv2", "conv2", f"{p}.act2", "output", k),
                    (f"{p}.branch", "branch", branch, "output", k),
                ]
                last_act = f"{p}.act3"
            else:  # BasicBlock
                branch = f"{p}.se" if not _is_identity(getattr(blk, "se", None)) else f"{p}.bn2"
                out += [
                    (f"{p}.conv1", "conv1", f"{p}.act1", "output", k),
                    (f"{p}.branch", "branch", branch, "output", k),
                ]
                last_act = f"{p}.act2"
            if not _is_identity(getattr(blk, "downsample", None)):
                out.append((f"{p}.shortcut", "shortcut", f"{p}.downsample", "output", k))
            out += [
                (f"{p}.sum", "sum", last_act, "input", k),
                (f"{p}.out", "out", p, "output", k),
            ]
            k += 1
    return out


# ---------------------------------------------------------------- timm ResNetV2 (pre-activation, BiT)
def _is_resnetv2(model: nn.Module) -> bool:
    stages = getattr(model, "stages", None)
    return (
        _has(model, "stem", "stages")
        and isinstance(stages, nn.Sequential)
        and all(hasattr(s, "blocks") for s in stages)
        and all(hasattr(b, "conv3") for s in stages for b in s.blocks)
    )


def _resnetv2_taps(model: nn.Module) -> list[tuple[str, str, str, str, int | None]]:
    # stem: conv (or conv1..conv3 with norms for deep stems), [norm for non-pre-activation nets], pad, pool
    stem_convs = [n for n in ("conv", "conv3") if hasattr(model.stem, n)]
    out: list[tuple[str, str, str, str, int | None]] = [
        ("stem_conv", "stem_conv", f"stem.{c}", "output", None) for c in stem_convs[:1]
    ]
    out.append(("stem", "stem", "stem", "output", None))
    k = 0
    for s, stage in enumerate(model.stages):
        for b, blk in enumerate(stage.blocks):
            p = f"stages.{s}.blocks.{b}"
            preact = type(blk).__name__.startswith("PreAct")
            if preact:  # norm → conv order: norm1 is the pre-activation shared with the shortcut
                seq = [("preact", "norm1"), ("conv1", "conv1"), ("norm2", "norm2")]
                seq += [("conv2", "conv2"), ("norm3", "norm3"), ("branch", "conv3")]
            else:  # conv → norm order, sum activated by act3
                seq = [("conv1", "norm1"), ("conv2", "norm2"), ("branch", "norm3")]
            if not _is_identity(getattr(blk, "downsample", None)):
                # the shortcut projection runs before the residual branch in both block types
                seq.insert(1 if preact else 0, ("shortcut", "downsample"))
            out += [(f"{p}.{kind}", kind, f"{p}.{mod}", "output", k) for kind, mod in seq]
            if not preact and hasattr(blk, "act3"):
                out.append((f"{p}.sum", "sum", f"{p}.act3", "input", k))
            out.append((f"{p}.out", "out", p, "output", k))
            k += 1
    if not _is_identity(getattr(model, "norm", None)):
        out.append(("norm", "norm", "norm", "output", None))
    return out


# ---------------------------------------------------------------- timm EfficientNet (MBConv blocks)
def _effnet_block_layout(blk: nn.Module) -> tuple[list[str], str] | None:
    """(inner norm modules in forward order, the projection's norm module) of one timm EfficientNet block, or
    None for a block type this family does not know. Norms are BatchNormAct2d: their output is after the act."""
    # InvertedResidual (MBConv; CondConvResidual too): 1×1 expansion, depthwise, 1×1 projection
    if _has(blk, "conv_pw", "conv_dw", "conv_pwl", "bn1", "bn2", "bn3"):
        return ["bn1", "bn2"], "bn3"
    # EdgeResidual (fused MBConv, EfficientNetV2): full expansion conv, 1×1 projection
    if _has(blk, "conv_exp", "conv_pwl", "bn1", "bn2"):
        return ["bn1"], "bn2"
    # DepthwiseSeparableConv (the first block): depthwise, 1×1 projection
    if _has(blk, "conv_dw", "conv_pw", "bn1", "bn2"):
        return ["bn1"], "bn2"
    # ConvBnAct (EfficientNetV2, MobileNetV3): one conv; anti-aliasing (aa) runs after bn1, before the add
    if type(blk).__name__ == "ConvBnAct" and _has(blk, "conv", "bn1"):
        return [], "aa" if not _is_identity(getattr(blk, "aa", None)) else "bn1"
    return None


def _is_efficientnet(model: nn.Module) -> bool:
    stages = getattr(model, "blocks", None)
    return (
        _has(model, "conv_stem", "bn1")
        and isinstance(stages, nn.Sequential)
        and len(stages) > 0
        and all(isinstance(s, nn.Sequential) for s in stages)
        and all(_effnet_block_layout(b) is not None for s in stages for b in s)
    )


def _efficientnet_taps(model: nn.Module) -> list[tuple[str, str, str, str, int | None]]:
    """timm EfficientNet / -Lite / -V2, MobileNetV2, MnasNet, MixNet (and MobileNetV3's blocks).

    `stem_conv` (the stem convolution's raw output), `stem` (stem conv + norm + act); per block `conv1`, `conv2` (the inner convolutions after their norm and act:
    MBConv expansion 1×1 then depthwise; depthwise-separable and fused blocks have one), `branch` (projection norm
    output, before the add) and `out` (block output: the residual sum where the block has a skip). A block without
    a skip (stride 2 or a channel change) has no `branch`: its projection IS its output, and a duplicate tap would
    only add a CKA-1 row. There is no `sum` tap: no activation follows the add, so the sum is `out` itself. No
    `shortcut`: EfficientNet skips are identities (the unit input). Then `head` (1×1 head conv + norm + act).
    Squeeze-excitation gates are not tapped (the next conv consumes them inside the branch).
    """
    out: list[tuple[str, str, str, str, int | None]] = [
        ("stem_conv", "stem_conv", "conv_stem", "output", None),
        ("stem", "stem", "bn1", "output", None),
    ]
    k = 0
    for s, stage in enumerate(model.blocks):
        for b, blk in enumerate(stage):
            p = f"blocks.{s}.{b}"
            inner, proj = _effnet_block_layout(blk)  # type: ignore[misc]  # checked by _is_efficientnet
            out += [
                (f"{p}.conv{i + 1}", f"conv{i + 1}", f"{p}.{m}", "output", k)
                for i, m in enumerate(inner)
            ]
            if getattr(blk, "has_skip", False):
                out.append((f"{p}.branch", "branch", f"{p}.{proj}", "output", k))
            out.append((f"{p}.out", "out", p, "output", k))
            k += 1
    # EfficientNet's head conv runs on the final map (MobileNetV3's runs after pooling, with no `bn2`)
    head, norm = getattr(model, "conv_head", None), getattr(model, "bn2", None)
    if not _is_identity(head) and not _is_identity(norm):
        out.append(("head", "head", "bn2", "output", None))
    return out


# ---------------------------------------------------------------- generic fallback
_SKIP_LEAVES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


def _generic_taps(model: nn.Module) -> list[tuple[str, str, str, str, int | None]]:
    """Named leaf modules that fire exactly once, in firing order (found with one dummy forward)."""
    head = _classifier_path(model)
    leaves = {
        n: m
        for n, m in model.named_modules()
        if n and not list(m.children()) and not isinstance(m, _SKIP_LEAVES) and n != head
    }
    counts: dict[str, int] = {n: 0 for n in leaves}
    order: list[str] = []
    handles = []
    for n, m in leaves.items():

        def hook(_m, _i, _o, n=n):
            if counts[n] == 0:
                order.append(n)
            counts[n] += 1

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(1, *input_size(model)))
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    reused = [n for n in order if counts[n] != 1]
    if reused:
        warnings.warn(
            f"generic taps: skipping modules that fire more than once: {reused}", stacklevel=2
        )
    return [
        (n, type(leaves[n]).__name__.lower(), n, "output", None) for n in order if counts[n] == 1
    ]


def _classifier_path(model: nn.Module) -> str | None:
    get = getattr(model, "default_cfg", None) or {}
    return get.get("classifier") if isinstance(get, dict) else None


def input_size(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))  # type: ignore[return-value]


register_family("vit", _is_vit, _vit_taps)
register_family("resnet", _is_resnet, _resnet_taps)
register_family("resnetv2", _is_resnetv2, _resnetv2_taps)
register_family("efficientnet", _is_efficientnet, _efficientnet_taps)


def tap_family(model: nn.Module) -> str:
    for name, detect, _ in _FAMILIES:
        if detect(model):
            return name
    return "generic"


def discover_taps(model: nn.Module) -> list[Tap]:
    """The model's taps in forward order (see module docstring for the families)."""
    family = tap_family(model)
    discover = next((d for n, _, d in _FAMILIES if n == family), _generic_taps)
    raw = discover(model)
    modules = dict(model.named_modules())
    missing = [path for _, _, path, _, _ in raw if path not in modules]
    if missing:
        raise RuntimeError(
            f"tap discovery for family '{family}' names absent modules: {missing[:5]}"
        )
    return [Tap(n, k, p, w, b, i) for i, (n, k, p, w, b) in enumerate(raw)]


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


@contextlib.contextmanager
def record_taps(
    model: nn.Module,
    taps: list[Tap],
    callback: Callable[[Tap, torch.Tensor], None],
    check_once: bool = True,
) -> Iterator[dict[str, int]]:
    """Hook every tap; `callback(tap, activation)` runs inside the hook, so in-place ops that follow
    (timm ResNet's `x += shortcut`, inplace ReLU) cannot corrupt what it sees. Yields per-tap fire counts
    for the current forward; with `check_once`, a tap firing more than once raises `TapFiringError`.
    """
    modules = dict(model.named_modules())
    counts = {t.name: 0 for t in taps}
    handles = []

    def fire(tap: Tap, tensor: torch.Tensor) -> None:
        counts[tap.name] += 1
        if check_once and counts[tap.name] > 1:
            raise TapFiringError(
                f"tap '{tap.name}' ({tap.module_path}) fired twice in one forward: the module is reused; "
                "reset counts between forwards with `counts.clear()`-free usage, or register a family discoverer"
            )
        callback(tap, tensor)

    for tap in taps:
        mod = modules[tap.module_path]
        if tap.where == "output":
            handles.append(
                mod.register_forward_hook(
                    lambda _m, _i, o, tap=tap: fire(tap, o[0] if isinstance(o, tuple) else o)
                )
            )
        elif tap.where == "input":
            handles.append(mod.register_forward_pre_hook(lambda _m, i, tap=tap: fire(tap, i[0])))
        else:
            raise ValueError(
                f"tap '{tap.name}': where must be 'output' or 'input', got {tap.where!r}"
            )

    # Counts reset before each forward so `check_once` is per pass.
    def reset(_m, _i):
        for k in counts:
            counts[k] = 0

    handles.append(model.register_forward_pre_hook(reset))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()
