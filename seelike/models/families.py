"""Model families: one record per family holds everything the analyses need to know of it.

A `Family` names the family's taps (its discoverer), which of them are residual sublayers and how their sums are
read (skip statistics), what kind of attention it has (mean attention distance), whether it is a CNN (the claims'
ViT-vs-CNN reading, Fig 5's CNN) and whether its tap names are exact (a family rule that names a wrong module is an
error, not a tap left out). Adding a family is one entry in `FAMILIES`, in this file; families are tried in order,
the generic rules last:

- `timm_stages`: any timm model with `feature_info` (ConvNeXt, Swin, MaxViT, PVT, MLP-Mixer, RegNet, ...): the stem
  (input of the first block), every block of every stage (feature_info's stage modules and the blocks inside
  them), the final norm; the residual branches of a block are the firings of its `drop_path` modules (timm's
  convention: every residual branch passes through one), its shortcut the `shortcut` / `downsample` child;
- `generic`: named leaf modules that fire exactly once (or the module-name patterns of a `source: python` model).

Which analyses apply is decided from the record and the taps' layouts (`analysis_support`): the dry run refuses a
model an analysis cannot run on, with the reason, and the rules ask the same function.

The workflow decides at parse time from a weightless build (`model_structure`: the model on the meta device, no
memory, no weights, no network); the rules decide at run time on the built model. Names play no part, so
MobileViT, LeViT or ConvNeXt are never mistaken for a ViT or a ResNet.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

__all__ = [
    "FAMILIES",
    "Family",
    "analysis_support",
    "family_of",
    "family_traits",
    "model_family",
    "model_structure",
    "model_tap_names",
]

RawTap = tuple  # (name, kind, module path, "output" | "input", block index | None[, occurrence])
Discoverer = Callable[[nn.Module], list[RawTap]]


@dataclass(frozen=True)
class Family:
    name: str
    detect: Callable[[nn.Module], bool]
    discover: Discoverer
    is_cnn: bool = False  # a convolutional network (claims: the CNN side; Fig 5's CNN)
    # Skip statistics (Fig 7): "sublayers" (ViT-style branch / sum tap pairs, `residual_pairs`), "unit" (a CNN
    # unit: branch + shortcut or unit input), "branches" (timm_stages: z0 + Σ drop_path firings), None
    residual: str | None = None
    residual_pairs: tuple[tuple[str, str], ...] = ()
    residual_reason: str = "its blocks have no residual branches the family rule can read"
    # Mean attention distance (Figs 3-5): "global" token attention over a patch grid, "window" (Swin), None
    attention: str | None = None
    attention_reason: str = "it has no self-attention over image positions"
    exact: bool = True  # tap rules name exactly the modules to hook (a wrong one is an error)


def _has(m: nn.Module, *names: str) -> bool:
    return all(hasattr(m, n) for n in names)


def _is_identity(m: nn.Module | None) -> bool:
    return m is None or isinstance(m, nn.Identity)


def _gamma_scaled(blk: nn.Module) -> bool:
    """A block whose branches are scaled by LayerScale parameters (BEiT `gamma_1`, CaiT, XCiT `gamma1`) rather
    than an `ls1` module: its branch is read where it is added, at the drop_path module."""
    return any(getattr(blk, g, None) is not None for g in ("gamma_1", "gamma1"))


def _branch_paths(blk: nn.Module, p: str, n: int) -> list[tuple[str, int]]:
    """(module path, occurrence) of the `n` drop_path firings that carry a block's residual branches in order:
    drop_path1 … drop_pathN, or one shared `drop_path` module fired n times (CaiT, XCiT's older blocks)."""
    numbered = [f"drop_path{i}" for i in range(1, n + 1)]
    if all(hasattr(blk, m) for m in numbered):
        return [(f"{p}.{m}", 0) for m in numbered]
    return [(f"{p}.drop_path", i) for i in range(n)]


# ---------------------------------------------------------------- ViT-like (ViT, DeiT, BEiT-style blocks)
def _is_vit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return (
        isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and len(blocks) > 0
        and all(_has(b, "attn", "norm1", "norm2", "mlp") for b in blocks)
        # windowed blocks (SAM-ViT) partition the attention branch: no module gives it whole
        and not any(getattr(b, "window_size", 0) for b in blocks)
    )


def _vit_taps(model: nn.Module) -> list[RawTap]:
    out: list[RawTap] = [("embed", "embed", "blocks.0", "input", None)]
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        # The branch as it is added to the residual stream: the LayerScale module's output, the drop_path firing
        # for gamma-parameter LayerScale (BEiT, CaiT), else the attention / MLP output.
        if _gamma_scaled(blk):
            (attn_branch, attn_occ), (mlp_branch, mlp_occ) = _branch_paths(blk, p, 2)
        else:
            attn_branch = f"{p}.ls1" if not _is_identity(getattr(blk, "ls1", None)) else f"{p}.attn"
            mlp_branch = f"{p}.ls2" if not _is_identity(getattr(blk, "ls2", None)) else f"{p}.mlp"
            attn_occ = mlp_occ = 0
        out += [
            (f"{p}.norm1", "norm1", f"{p}.norm1", "output", i),
            (f"{p}.attn", "attn", attn_branch, "output", i, attn_occ),
            (f"{p}.attn_res", "attn_res", f"{p}.norm2", "input", i),
            (f"{p}.norm2", "norm2", f"{p}.norm2", "output", i),
        ]
        if hasattr(blk.mlp, "act"):
            out.append((f"{p}.mlp_hidden", "mlp_hidden", f"{p}.mlp.act", "output", i))
        out += [
            (f"{p}.mlp", "mlp", mlp_branch, "output", i, mlp_occ),
            (f"{p}.block", "block", p, "output", i),
        ]
    if not _is_identity(getattr(model, "norm", None)):
        out.append(("norm", "norm", "norm", "output", None))
    return out


# ---------------------------------------------------------------- XCiT (attention, local patch interaction, MLP)
def _is_xcit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return (
        isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and len(blocks) > 0
        and all(_has(b, "attn", "norm1", "norm3", "local_mp", "norm2", "mlp") for b in blocks)
    )


def _xcit_taps(model: nn.Module) -> list[RawTap]:
    """XCiT blocks add three branches: cross-covariance attention, the local patch interaction (`lpi`, a
    depthwise convolution over the patch grid) and the MLP, each gamma-scaled and added at its drop_path."""
    out: list[RawTap] = [("embed", "embed", "blocks.0", "input", None)]
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        (attn, a_occ), (mlp, m_occ), (lpi, l_occ) = _branch_paths(blk, p, 3)
        # one shared drop_path: fired in forward order attn, lpi, mlp
        if not hasattr(blk, "drop_path1"):
            (attn, a_occ), (lpi, l_occ), (mlp, m_occ) = _branch_paths(blk, p, 3)
        out += [
            (f"{p}.norm1", "norm1", f"{p}.norm1", "output", i),
            (f"{p}.attn", "attn", attn, "output", i, a_occ),
            (f"{p}.attn_res", "attn_res", f"{p}.norm3", "input", i),
            (f"{p}.lpi", "lpi", lpi, "output", i, l_occ),
            (f"{p}.lpi_res", "lpi_res", f"{p}.norm2", "input", i),
            (f"{p}.norm2", "norm2", f"{p}.norm2", "output", i),
        ]
        if hasattr(blk.mlp, "act"):
            out.append((f"{p}.mlp_hidden", "mlp_hidden", f"{p}.mlp.act", "output", i))
        out += [
            (f"{p}.mlp", "mlp", mlp, "output", i, m_occ),
            (f"{p}.block", "block", p, "output", i),
        ]
    if not _is_identity(getattr(model, "norm", None)):
        out.append(("norm", "norm", "norm", "output", None))
    return out


# ---------------------------------------------------------------- timm ResNet (post-activation)
def _is_resnet(model: nn.Module) -> bool:
    return _has(model, "conv1", "bn1", "act1", "layer1", "layer4")  # timm naming (not torchvision)


def _resnet_taps(model: nn.Module) -> list[RawTap]:
    # stem: conv1 (a Sequential ending in a conv for deep stems) → bn1 → act1 → maxpool
    out: list[RawTap] = [
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


def _resnetv2_taps(model: nn.Module) -> list[RawTap]:
    # stem: conv (or conv1..conv3 with norms for deep stems), [norm for non-pre-activation nets], pad, pool
    stem_convs = [n for n in ("conv", "conv3") if hasattr(model.stem, n)]
    out: list[RawTap] = [
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


def _efficientnet_taps(model: nn.Module) -> list[RawTap]:
    """timm EfficientNet / -Lite / -V2, MobileNetV2, MnasNet, MixNet (and MobileNetV3's blocks).

    `stem_conv` (the stem convolution's raw output), `stem` (stem conv + norm + act); per block `conv1`, `conv2` (the inner convolutions after their norm and act:
    MBConv expansion 1×1 then depthwise; depthwise-separable and fused blocks have one), `branch` (projection norm
    output, before the add) and `out` (block output: the residual sum where the block has a skip). A block without
    a skip (stride 2 or a channel change) has no `branch`: its projection IS its output, and a duplicate tap would
    only add a CKA-1 row. There is no `sum` tap: no activation follows the add, so the sum is `out` itself. No
    `shortcut`: EfficientNet skips are identities (the unit input). Then `head` (1×1 head conv + norm + act).
    Squeeze-excitation gates are not tapped (the next conv consumes them inside the branch).
    """
    out: list[RawTap] = [
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


# ---------------------------------------------------------------- any timm model: feature_info stages
_CONTAINERS = (nn.Sequential, nn.ModuleList)


def _blocks_of(path: str, m: nn.Module) -> list[str]:
    """The blocks inside one stage module: its `blocks`, its items (a Sequential / ModuleList), children of one
    block class (RegNet's b1 … bN), else the stage itself as one block."""
    inner = getattr(m, "blocks", None)
    if isinstance(inner, _CONTAINERS) and len(inner):
        return [f"{path}.blocks.{n}" for n, _ in inner.named_children()]
    if isinstance(m, _CONTAINERS) and len(m):
        out = []
        # a ModuleList inside is never called: its items are (Twins)
        for n, c in m.named_children():
            out += _blocks_of(f"{path}.{n}", c) if isinstance(c, nn.ModuleList) else [f"{path}.{n}"]
        return out
    kids = list(m.named_children())
    types = {type(c) for _, c in kids}
    if len(kids) >= 2 and len(types) == 1:
        cls = next(iter(types)).__name__
        if "Block" in cls or "Bottleneck" in cls:
            return [f"{path}.{n}" for n, _ in kids]
    return [path]


def _stage_paths(model: nn.Module) -> list[str]:
    """Stage modules in timm's order: feature_info's modules that exist, plus top-level block containers
    feature_info leaves out (CaiT's class-attention blocks); else top-level layer / stage containers (HRNet)."""
    mods = dict(model.named_modules())
    info = getattr(model, "feature_info", None) or []
    paths = [d.get("module") for d in info if isinstance(d, dict)]
    paths = [p for p in dict.fromkeys(paths) if p and p in mods]
    for n, c in model.named_children():
        covered = any(p == n or p.startswith(n + ".") for p in paths)
        if not covered and "block" in n and isinstance(c, _CONTAINERS) and len(c):
            paths.append(n)
    if not paths:
        paths = [
            n
            for n, c in model.named_children()
            if isinstance(c, _CONTAINERS)
            and len(c)
            and n.rstrip("0123456789") in ("layer", "stage")
        ]
    return paths


def _stage_blocks(model: nn.Module) -> list[str]:
    out: list[str] = []
    mods = dict(model.named_modules())
    for p in _stage_paths(model):
        for b in _blocks_of(p, mods[p]):
            if b not in out and not any(b.startswith(o + ".") for o in out):
                out.append(b)
    return out


def _is_timm_stages(model: nn.Module) -> bool:
    return bool(getattr(model, "pretrained_cfg", None)) and bool(_stage_blocks(model))


def _firings(model: nn.Module, paths: list[str]) -> dict[str, list[tuple[int, ...] | None]]:
    """The output shape of each firing of each module in one forward of two blank images (on the model's
    device, meta included); None for a firing that gives no tensor."""
    from seelike.models.taps import input_size

    mods = dict(model.named_modules())
    shapes: dict[str, list[tuple[int, ...] | None]] = {p: [] for p in paths}

    def hook(_m, _i, o, p):
        shapes[p].append(tuple(o.shape) if isinstance(o, torch.Tensor) else None)

    handles = [mods[p].register_forward_hook(lambda m, i, o, p=p: hook(m, i, o, p)) for p in paths]
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_size(model), device=device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return shapes


def _timm_stage_taps(model: nn.Module) -> list[RawTap]:
    """`stem` (the first block's input), per block its `shortcut` (a `shortcut` / `downsample` child), its
    residual branches `branch` (each firing of its drop_path modules, in order) and its output `block`; then the
    final `norm`. Blocks without drop_path modules have no branch taps (no readable residual)."""
    blocks = _stage_blocks(model)
    mods = dict(model.named_modules())
    info = [d for d in getattr(model, "feature_info", None) or [] if isinstance(d, dict)]
    # feature_info's first entry is the stem itself where it is one module at stride ≤ 2 (RegNet, MaxViT,
    # DenseNet, VGG): its output is the stem, the blocks start after it
    stem: RawTap = ("stem", "stem", blocks[0], "input", None)
    first_is_stem = info and info[0].get("module") == blocks[0] and info[0].get("reduction", 4) <= 2
    if len(blocks) > 1 and first_is_stem:
        stem = ("stem", "stem", blocks.pop(0), "output", None)
    drop = {
        b: [f"{b}.{n}" for n, _ in mods[b].named_children() if n.startswith("drop_path")]
        for b in blocks
    }
    fired = _firings(model, [p for ps in drop.values() for p in ps] + blocks)
    out: list[RawTap] = [stem]
    for i, b in enumerate(blocks):
        blk = mods[b]
        for sc in ("shortcut", "downsample"):
            if isinstance(getattr(blk, sc, None), nn.Module):
                out.append((f"{b}.shortcut", "shortcut", f"{b}.{sc}", "output", i))
                break
        # a block's branches are readable when every drop_path firing is a whole per-image tensor of the
        # block's size (SAM's windowed attention branch is not: that block gets no branch taps)
        (size,) = fired[b][:1] or [None]
        firings = [(p, occ, sh) for p in drop[b] for occ, sh in enumerate(fired[p])]
        whole = size is not None and all(
            sh is not None and sh[0] == size[0] and math.prod(sh) == math.prod(size)
            for _, _, sh in firings
        )
        for k, (p, occ, _) in enumerate(firings if whole else [], start=1):
            out.append((f"{b}.branch{k}", "branch", p, "output", i, occ))
        out.append((f"{b}.block", "block", b, "output", i))
    if not _is_identity(getattr(model, "norm", None)) and "norm" not in blocks:
        out.append(("norm", "norm", "norm", "output", None))
    return out


# ---------------------------------------------------------------- generic fallback (and module-name patterns)
_SKIP_LEAVES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


def _classifier_path(model: nn.Module) -> str | None:
    get = getattr(model, "default_cfg", None) or {}
    return get.get("classifier") if isinstance(get, dict) else None


def _generic_taps(model: nn.Module) -> list[RawTap]:
    """Named leaf modules (or, for a model with `seelike_tap_patterns`, the modules whose names match a
    pattern), in module order; the probe pass orders them by firing and leaves out what fires other than once
    or is not batch-first."""
    import fnmatch

    patterns = getattr(model, "seelike_tap_patterns", None)
    if patterns:
        names = [
            n
            for n, _ in model.named_modules()
            if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)
        ]
        # the user's chosen representations are the model's blocks (block outputs: per-block CKA, probes)
        return [(n, "block", n, "output", i) for i, n in enumerate(names)]
    head = _classifier_path(model)
    return [
        (n, type(m).__name__.lower(), n, "output", None)
        for n, m in model.named_modules()
        if n and not list(m.children()) and not isinstance(m, _SKIP_LEAVES) and n != head
    ]


# ---------------------------------------------------------------- the records
_VIT_PAIRS = (("attn", "attn_res"), ("mlp", "block"))
_POOLED = "attention over pooled or reduced keys (key positions are not the query grid)"
FAMILIES: list[Family] = [
    Family(
        "xcit", _is_xcit, _xcit_taps, residual="sublayers",
        residual_pairs=(("attn", "attn_res"), ("lpi", "lpi_res"), ("mlp", "block")),
        attention_reason="its cross-covariance attention mixes channels, not image positions (XCiT)",
    ),
    Family("vit", _is_vit, _vit_taps, residual="sublayers", residual_pairs=_VIT_PAIRS, attention="global"),
    Family("resnet", _is_resnet, _resnet_taps, is_cnn=True, residual="unit"),
    Family("resnetv2", _is_resnetv2, _resnetv2_taps, is_cnn=True, residual="unit"),
    Family("efficientnet", _is_efficientnet, _efficientnet_taps, is_cnn=True, residual="unit"),
    Family("timm_stages", _is_timm_stages, _timm_stage_taps, residual="branches", exact=False),
    Family("generic", lambda _m: True, _generic_taps, exact=False),
]  # fmt: skip


def family_of(model: nn.Module) -> Family:
    """The first record of FAMILIES whose test accepts `model` (`generic` accepts every model). A model with
    module-name tap patterns (`source: python` with `taps:`) is always `generic`."""
    if getattr(model, "seelike_tap_patterns", None):
        return FAMILIES[-1]
    return next(f for f in FAMILIES if f.detect(model))


def family_record(name: str) -> Family:
    return next((f for f in FAMILIES if f.name == name), FAMILIES[-1])


def family_traits(family: str) -> dict[str, Any]:
    """has_attention (attention distances and head subsets apply), has_residual_units (skip statistics),
    is_cnn (a convolutional family)."""
    f = family_record(family)
    return {
        "has_attention": f.attention is not None,
        "has_residual_units": f.residual is not None,
        "is_cnn": f.is_cnn,
    }


# ---------------------------------------------------------------- decisions from a weightless build
def _build_skeleton(spec: dict[str, Any]) -> nn.Module:
    from seelike.models import load

    builder = getattr(load, "build_skeleton", None)
    if builder is not None:
        return builder(spec)
    import timm

    kwargs = dict(spec.get("kwargs") or {})
    arch = spec["arch"].split(".")[0]
    if spec.get("_device") == "cpu":
        return timm.create_model(arch, pretrained=False, **kwargs)
    try:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs)
    # a constructor that computes with tensors (tensor.item() on meta): build it for real
    except (RuntimeError, NotImplementedError):
        return timm.create_model(arch, pretrained=False, **kwargs)


def _data_hw(spec: dict[str, Any]) -> tuple[int, int] | None:
    size = (spec.get("data_config") or {}).get("input_size")
    return (int(size[1]), int(size[2])) if size else None


@dataclass(frozen=True)
class Structure:
    family: str
    taps: tuple  # seelike.models.taps.Tap, forward order; empty when the probe cannot run without weights


@cache
def _structure(spec_json: str) -> Structure:
    from seelike.models.taps import discover_taps

    spec = json.loads(spec_json)
    model = _build_skeleton(spec)
    family = family_of(model).name
    try:
        taps = tuple(discover_taps(model, _data_hw(spec)))
    # meta tensors cannot run this forward (data-dependent shapes): once more on a real CPU build
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        if next(model.parameters(), torch.empty(0)).device.type != "meta":
            raise
        with torch.device("cpu"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _build_skeleton({**spec, "_device": "cpu"})
        taps = tuple(discover_taps(model, _data_hw(spec)))
    return Structure(family, taps)


_STRUCTURE_KEYS = ("source", "arch", "factory", "kwargs", "taps", "data_config")


def model_structure(spec: dict[str, Any]) -> Structure:
    """Family and taps (with layouts) of a configured model from one weightless build, cached per model
    definition. Raises what the build raises for an unknown architecture or kwargs it does not accept."""
    key = {k: spec.get(k) for k in _STRUCTURE_KEYS if spec.get(k) is not None}
    key["arch"] = str(key.get("arch", "")).split(".")[0]
    if key.get("source") != "python":  # weights do not change the structure
        key["source"] = "timm"
        key.pop("taps", None)
    return _structure(json.dumps(key, sort_keys=True, default=str))


def model_family(spec: dict[str, Any]) -> str:
    """The family name (`FAMILIES`) of a model spec."""
    return model_structure(spec).family


def model_tap_names(spec: dict[str, Any]) -> tuple[str, ...]:
    """The tap names of a model spec, from the same weightless build as `model_family`."""
    return tuple(t.name for t in model_structure(spec).taps)


# ---------------------------------------------------------------- which analyses apply
def analysis_support(family: str, taps, analysis: str, tap_names=None) -> str | None:
    """None when `analysis` (attention, head_subsets, skip, erf, localisation, probes, cka) applies to a
    model of `family` with `taps`, else the reason it does not (one sentence, for the dry-run error).
    `tap_names`: the taps the analysis would read (the configured ones), when it reads chosen taps."""
    f = family_record(family)
    if analysis in ("attention", "head_subsets"):
        return None if f.attention else f"{f.attention_reason} (family {family!r})"
    if analysis == "skip":
        if f.residual == "branches" and not any(t.kind == "branch" for t in taps):
            return f"none of its blocks adds a residual branch through a drop_path module (family {family!r})"
        return None if f.residual else f"{f.residual_reason} (family {family!r})"
    if analysis in ("erf", "localisation"):
        by_name = {t.name: t for t in taps}
        chosen = [by_name[n] for n in tap_names or () if n in by_name]
        if tap_names:
            flat = [t.name for t in chosen if not t.spatial]
            if flat:
                return f"taps {flat} have no spatial map or token grid (layouts in taps.csv)"
            return None
        if not any(t.spatial for t in taps):
            return "none of its taps has a spatial map or a token grid"
        return None
    return None
