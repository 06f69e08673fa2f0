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

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seelike.models.kinds import BLOCK_OUTPUT_KINDS

# torch (and timm) are imported where a model is built or inspected: a dry run whose decisions are all on disk
# (`_disk_cached`) imports neither
if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FAMILIES",
    "Family",
    "analysis_support",
    "family_of",
    "model_class",
    "model_family",
    "model_refusal",
    "model_structure",
    "model_tap_names",
    "residual_sums_refusal",
    "timm_knows",
]

RawTap = tuple  # (name, kind, module path, "output" | "input", block index | None[, occurrence])
Discoverer = Callable[["nn.Module"], list[RawTap]]


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
    # Fig 5's head subsets, where attention distances apply but a head's output is not that head's (CaiT)
    head_subsets_reason: str | None = None
    # token taps lie row-major on a grid (False: Hiera's unrolled mask units; no spatial analysis reads them)
    tokens_on_grid: bool = True
    is_vit: bool = False  # a vision transformer with global attention (claims: the ViT side)


def _has(m: nn.Module, *names: str) -> bool:
    return all(hasattr(m, n) for n in names)


def _is_identity(m: nn.Module | None) -> bool:
    from torch import nn

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
        isinstance(blocks, _containers())
        and len(blocks) > 0
        and all(_has(b, "attn", "norm1", "norm2", "mlp") for b in blocks)
        # windowed blocks (SAM-ViT) partition the attention branch: no module gives it whole
        and not any(getattr(b, "window_size", 0) for b in blocks)
    )


def _vit_like_taps(model: nn.Module, branches: Callable) -> list[RawTap]:
    """`embed` (input of block 0); per block `norm1`, each residual branch but the MLP with the sum it makes
    (the input of the norm that follows it), `norm2`, `mlp_hidden`, `mlp`, `block`; then `norm`.
    `branches(blk, p)` → [(kind, path, occurrence, sum kind, next norm), ..., (MLP path, occurrence)]."""
    out: list[RawTap] = [("embed", "embed", "blocks.0", "input", None)]
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        *residual, (mlp, mlp_occ) = branches(blk, p)
        out.append((f"{p}.norm1", "norm1", f"{p}.norm1", "output", i))
        for kind, path, occ, sum_kind, norm in residual:
            out += [
                (f"{p}.{kind}", kind, path, "output", i, occ),
                (f"{p}.{sum_kind}", sum_kind, f"{p}.{norm}", "input", i),
            ]
        out.append((f"{p}.norm2", "norm2", f"{p}.norm2", "output", i))
        if hasattr(blk.mlp, "act"):
            out.append((f"{p}.mlp_hidden", "mlp_hidden", f"{p}.mlp.act", "output", i))
        out += [
            (f"{p}.mlp", "mlp", mlp, "output", i, mlp_occ),
            (f"{p}.block", "block", p, "output", i),
        ]
    if not _is_identity(getattr(model, "norm", None)):
        out.append(("norm", "norm", "norm", "output", None))
    return out


def _vit_branches(blk: nn.Module, p: str) -> list[tuple]:
    # The branch as it is added to the residual stream: the LayerScale module's output, the drop_path firing
    # for gamma-parameter LayerScale (BEiT, CaiT), else the attention / MLP output.
    if _gamma_scaled(blk):
        (attn, attn_occ), mlp = _branch_paths(blk, p, 2)
    else:
        attn = f"{p}.ls1" if not _is_identity(getattr(blk, "ls1", None)) else f"{p}.attn"
        mlp = (f"{p}.ls2" if not _is_identity(getattr(blk, "ls2", None)) else f"{p}.mlp", 0)
        attn_occ = 0
    return [("attn", attn, attn_occ, "attn_res", "norm2"), mlp]


def _vit_taps(model: nn.Module) -> list[RawTap]:
    return _vit_like_taps(model, _vit_branches)


# ---------------------------------------------------------------- XCiT (attention, local patch interaction, MLP)
def _is_xcit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return (
        isinstance(blocks, _containers())
        and len(blocks) > 0
        and all(_has(b, "attn", "norm1", "norm3", "local_mp", "norm2", "mlp") for b in blocks)
    )


def _xcit_branches(blk: nn.Module, p: str) -> list[tuple]:
    # drop_path1 (attention), drop_path3 (lpi), drop_path2 (MLP); or one shared drop_path fired in that order
    if hasattr(blk, "drop_path1"):
        (attn, a_occ), mlp, (lpi, l_occ) = _branch_paths(blk, p, 3)
    else:
        (attn, a_occ), (lpi, l_occ), mlp = _branch_paths(blk, p, 3)
    return [
        ("attn", attn, a_occ, "attn_res", "norm3"),
        ("lpi", lpi, l_occ, "lpi_res", "norm2"),
        mlp,
    ]


def _xcit_taps(model: nn.Module) -> list[RawTap]:
    """XCiT blocks add three branches: cross-covariance attention, the local patch interaction (`lpi`, a
    depthwise convolution over the patch grid) and the MLP, each gamma-scaled and added at its drop_path."""
    return _vit_like_taps(model, _xcit_branches)


# ---------------------------------------------------------------- timm ResNet (post-activation)
def _is_resnet(model: nn.Module) -> bool:
    # timm naming (not torchvision), and every block has the modules `_resnet_taps` names (Res2Net's
    # Bottle2neck, with one `relu`, does not: it is left to the generic stage rules)
    return _has(model, "conv1", "bn1", "act1", "layer1", "layer4") and all(
        _has(b, "act1", "act2", "act3", "bn3")
        if hasattr(b, "conv3")
        else _has(b, "act1", "act2", "bn2")
        for s in range(1, 5)
        for b in getattr(model, f"layer{s}", ())
    )


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
    from torch import nn

    stages = getattr(model, "stages", None)
    return (
        _has(model, "stem", "stages")
        and isinstance(stages, nn.Sequential)
        and all(hasattr(s, "blocks") for s in stages)
        # the modules `_resnetv2_taps` names (CSPNet's bottlenecks have conv1..3 without norm1..3)
        and all(
            _has(b, "conv1", "norm1", "conv2", "norm2", "conv3", "norm3")
            for s in stages
            for b in s.blocks
        )
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
    from torch import nn

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
def _containers() -> tuple[type, ...]:
    from torch import nn

    return (nn.Sequential, nn.ModuleList)


def _blocks_of(path: str, m: nn.Module) -> list[str]:
    """The blocks inside one stage module: its `blocks`, its items (a Sequential / ModuleList), children of one
    block class (RegNet's b1 … bN), else the stage itself as one block."""
    from torch import nn

    inner = getattr(m, "blocks", None)
    if isinstance(inner, _containers()) and len(inner):
        return [f"{path}.blocks.{n}" for n, _ in inner.named_children()]
    if isinstance(m, _containers()) and len(m):
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
    # feature_info names only the stage ends of one container of like blocks (Hiera 'blocks.1', 'blocks.4', ...;
    # GhostNet): every item of that container is a block
    for parent in {p.rsplit(".", 1)[0] for p in paths if "." in p}:
        items = [c for _, c in mods[parent].named_children()] if parent in mods else []
        if isinstance(mods.get(parent), _containers()) and len({type(c) for c in items}) == 1:
            group = [p for p in paths if p.rsplit(".", 1)[0] == parent]
            at = paths.index(group[0])
            paths = [p for p in paths if p not in group]
            paths[at:at] = [f"{parent}.{k}" for k, _ in mods[parent].named_children()]
    for n, c in model.named_children():
        covered = any(p == n or p.startswith(n + ".") for p in paths)
        if not covered and "block" in n and isinstance(c, _containers()) and len(c):
            paths.append(n)
    if not paths:
        for n, c in model.named_children():
            if not (isinstance(c, _containers()) and len(c)):
                continue
            if n.rstrip("0123456789") in ("layer", "stage"):
                paths.append(n)
            # one container of stages (MViTv2, whose feature_info names absent `block.i` modules)
            elif n in ("layers", "stages"):
                paths += [f"{n}.{k}" for k, _ in c.named_children()]
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


def _firings(
    model: nn.Module, paths: list[str], order: list[str] | None = None
) -> dict[str, list[tuple[int, ...] | None]]:
    """The output shape of each firing of each module in one forward of two blank images (on the model's
    device, meta included); None for a firing that gives no tensor. `order`, when given, gets the path of each
    firing as it ends, in firing order."""
    import torch

    from seelike.models.taps import blank_forward, hooks

    mods = dict(model.named_modules())
    shapes: dict[str, list[tuple[int, ...] | None]] = {p: [] for p in paths}

    def record(p: str):
        def fn(o) -> None:
            shapes[p].append(tuple(o.shape) if isinstance(o, torch.Tensor) else None)
            if order is not None:
                order.append(p)

        return fn

    with hooks((mods[p], "output", record(p)) for p in paths):
        blank_forward(model)
    return shapes


def _activations() -> tuple[type, ...]:
    from torch import nn

    return (
        nn.ReLU,
        nn.ReLU6,
        nn.GELU,
        nn.SiLU,
        nn.Hardswish,
        nn.LeakyReLU,
        nn.ELU,
        nn.Mish,
        nn.PReLU,
    )


def _residual_unit(mods: dict[str, nn.Module], b: str) -> str:
    """The module that holds block `b`'s residual: `b` itself, or, for a block with no drop_path of its own that
    wraps one module (RegNet's one-block stages: `s1` is `s1.b1`), the first one inside that has drop_paths."""
    path = b
    while not any(n.startswith("drop_path") for n, _ in mods[path].named_children()):
        kids = list(mods[path].named_children())
        if len(kids) != 1:
            return b
        path = f"{path}.{kids[0][0]}"
    return path


def _branch_reads(
    mods: dict[str, nn.Module], unit: str, order: list[str], drops: list[str], shortcut: str | None
) -> tuple[list[tuple[str, int]], tuple[str, int] | None] | None:
    """Where block `unit`'s residual branches are read as they are added, from its children's firing order:
    each drop_path firing, or the LayerScale module applied right after it (MetaFormer's `layer_scale1`:
    `x + layer_scale1(drop_path1(...))`), as (path, occurrence) in firing order; and the activation applied to
    the residual sum (RegNet's act3, ByobNet's act: the one module to fire after the branches and the shortcut),
    None when the block ends with the add. None for a block whose adds are not z + Σ branches as far as its
    structure tells: a scaled identity path (MetaFormer's `res_scale`), or something other than one activation
    running after the last add."""
    if any(
        n.startswith("res_scale") and not _is_identity(m) for n, m in mods[unit].named_children()
    ):
        return None
    kids = [p for p in order if p.rsplit(".", 1)[0] == unit]
    occ, count = [], {}
    for p in kids:
        occ.append(count.get(p, 0))
        count[p] = count.get(p, 0) + 1
    reads, last = [], -1
    for j, p in enumerate(kids):
        if p not in drops:
            continue
        nxt = kids[j + 1] if j + 1 < len(kids) else ""
        if nxt.rsplit(".", 1)[-1].startswith(("layer_scale", "ls")) and not _is_identity(mods[nxt]):
            j += 1
        reads.append((kids[j], occ[j]))
        last = max(last, j)
    if shortcut is not None:
        last = max([last] + [j for j, p in enumerate(kids) if p == shortcut])
    after = [
        (kids[j], occ[j]) for j in range(last + 1, len(kids)) if not _is_identity(mods[kids[j]])
    ]
    if not after:
        return reads, None
    path = after[0][0]
    if len(after) == 1 and (
        isinstance(mods[path], _activations()) or path.rsplit(".", 1)[1].startswith("act")
    ):
        return reads, after[0]
    return None


def _timm_stage_taps(model: nn.Module) -> list[RawTap]:
    """`stem` (the first block's input), per block its `shortcut` (a `shortcut` / `downsample` child), its
    residual branches `branch` (each firing of its drop_path modules, or the LayerScale module right after one,
    in firing order: `_branch_reads`), its residual `sum` where an activation follows the add (the activation's
    input: RegNet's act3) and its output `block`; then the final `norm`. Blocks without drop_path modules, or
    whose adds are not identity + branches (`_branch_reads`), have no branch taps (no readable residual). A block
    with no drop_path of its own that wraps one module is read through it (RegNet's one-block stages)."""
    from torch import nn

    blocks = _stage_blocks(model)
    mods = dict(model.named_modules())
    info = [d for d in getattr(model, "feature_info", None) or [] if isinstance(d, dict)]
    # feature_info's first entry is the stem itself where it is one module at stride ≤ 2 (RegNet, MaxViT,
    # DenseNet, VGG): its output is the stem, the blocks start after it
    stem: RawTap = ("stem", "stem", blocks[0], "input", None)
    first_is_stem = info and info[0].get("module") == blocks[0] and info[0].get("reduction", 4) <= 2
    if len(blocks) > 1 and first_is_stem:
        stem = ("stem", "stem", blocks.pop(0), "output", None)
    units = {b: _residual_unit(mods, b) for b in blocks}
    # children under their own path only: a module shared with another parent (CoaT's `cpe`) is named there
    drop = {
        b: [
            p
            for n, _ in mods[u].named_children()
            if n.startswith("drop_path") and (p := f"{u}.{n}") in mods
        ]
        for b, u in units.items()
    }
    kids = [
        p
        for u in dict.fromkeys(units.values())
        for n, _ in mods[u].named_children()
        if (p := f"{u}.{n}") in mods
    ]
    order: list[str] = []
    fired = _firings(model, list(dict.fromkeys(kids + blocks)), order)
    out: list[RawTap] = [stem]
    for i, b in enumerate(blocks):
        unit = units[b]
        blk = mods[unit]
        shortcut = None
        for sc in ("shortcut", "downsample"):
            if isinstance(getattr(blk, sc, None), nn.Module):
                shortcut = f"{unit}.{sc}"
                out.append((f"{b}.shortcut", "shortcut", shortcut, "output", i))
                break
        # a block's branches are readable when every drop_path firing is a whole per-image tensor of the
        # block's size (SAM's windowed attention branch is not: that block gets no branch taps)
        (size,) = fired[b][:1] or [None]
        firings = [(p, occ, sh) for p in drop[b] for occ, sh in enumerate(fired[p])]
        whole = size is not None and all(
            sh is not None and sh[0] == size[0] and math.prod(sh) == math.prod(size)
            for _, _, sh in firings
        )
        read = _branch_reads(mods, unit, order, drop[b], shortcut) if whole and firings else None
        reads, act = read or ([], None)
        for k, (p, occ) in enumerate(reads, start=1):
            out.append((f"{b}.branch{k}", "branch", p, "output", i, occ))
        if act is not None:
            out.append((f"{b}.sum", "sum", act[0], "input", i, act[1]))
        out.append((f"{b}.block", "block", b, "output", i))
    if not _is_identity(getattr(model, "norm", None)) and "norm" not in blocks:
        out.append(("norm", "norm", "norm", "output", None))
    return out


# ---------------------------------------------------------------- generic fallback (and module-name patterns)
def _skip_leaves() -> tuple[type, ...]:
    from torch import nn

    return (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)


def _classifier_path(model: nn.Module) -> str | None:
    get = getattr(model, "default_cfg", None) or {}
    return get.get("classifier") if isinstance(get, dict) else None


def _generic_taps(model: nn.Module) -> list[RawTap]:
    """Named leaf modules (or, for a model with `seelike_tap_patterns`, the modules whose names match a
    pattern), in module order; the probe pass orders them by firing and leaves out what fires other than once
    or is not batch-first."""
    patterns = getattr(model, "seelike_tap_patterns", None)
    if patterns:
        from seelike.models.load import match_tap_patterns

        modules = [n for n, _ in model.named_modules() if n]
        matched = {n for names in match_tap_patterns(modules, patterns).values() for n in names}
        names = [n for n in modules if n in matched]  # module order, each once
        # the user's chosen representations are the model's blocks (block outputs: per-block CKA, probes)
        return [(n, "block", n, "output", i) for i, n in enumerate(names)]
    head, skip = _classifier_path(model), _skip_leaves()
    return [
        (n, type(m).__name__.lower(), n, "output", None)
        for n, m in model.named_modules()
        if n and not list(m.children()) and not isinstance(m, skip) and n != head
    ]


# ---------------------------------------------------------------- timm stage models with attention
def _is_swin(model: nn.Module) -> bool:
    """timm Swin / SwinV2 / SwinV2-CR: stage blocks with a window and a cyclic shift around an `attn` module."""
    return _is_timm_stages(model) and any(
        _has(m, "window_size", "shift_size", "attn") and hasattr(m.attn, "num_heads")
        for m in model.modules()
    )


def _is_stage_attention(model: nn.Module) -> bool:
    """A timm stage model with attention modules (`num_heads`) that are neither global nor Swin windows: PiT,
    PVT-v2, Twins, LeViT, CoaT, EfficientFormer, MaxViT, MobileViT, ..."""
    return _is_timm_stages(model) and any(hasattr(m, "num_heads") for m in model.modules())


_STAGE_ATTENTION = (
    "its attention has no per-head distribution over the image positions of a fixed grid to measure distances "
    "on: keys pooled, reduced or partitioned (PiT, PVT-v2, Twins, LeViT, CoaT, EfficientFormer, MaxViT) or "
    "tokens that are not image positions (MobileViT's unfolded patches)"
)


def _is_hiera(model: nn.Module) -> bool:
    """timm Hiera: tokens unrolled into mask units (`unroll` / `reroll`), not row-major."""
    return _has(model, "unroll", "reroll") and _is_timm_stages(model)


def _is_cait(model: nn.Module) -> bool:
    """A ViT whose attention is talking-heads (CaiT: `proj_l` before, `proj_w` after the softmax)."""
    return _is_vit(model) and any(hasattr(b.attn, "proj_w") for b in model.blocks)


# ---------------------------------------------------------------- the records
_VIT_PAIRS = (("attn", "attn_res"), ("mlp", "block"))
_POOLED = "attention over pooled or reduced keys (key positions are not the query grid)"
FAMILIES: list[Family] = [
    Family(
        "xcit", _is_xcit, _xcit_taps, residual="sublayers",
        residual_pairs=(("attn", "attn_res"), ("lpi", "lpi_res"), ("mlp", "block")),
        attention_reason="its cross-covariance attention mixes channels, not image positions (XCiT)",
    ),
    Family(
        "hiera", _is_hiera, _timm_stage_taps, residual="branches", exact=False, tokens_on_grid=False,
        attention_reason="its mask-unit attention runs over unrolled tokens, not a row-major image grid (Hiera)",
    ),
    Family(
        "cait", _is_cait, _vit_taps, residual="sublayers", residual_pairs=_VIT_PAIRS, attention="global",
        is_vit=True,
        head_subsets_reason=(
            "its talking-heads attention mixes the heads after the softmax (proj_w): a head's output is not "
            "the output of the head whose distance is measured (CaiT)"
        ),
    ),
    Family(
        "vit", _is_vit, _vit_taps, residual="sublayers", residual_pairs=_VIT_PAIRS, attention="global",
        is_vit=True,
    ),
    Family("resnet", _is_resnet, _resnet_taps, is_cnn=True, residual="unit"),
    Family("resnetv2", _is_resnetv2, _resnetv2_taps, is_cnn=True, residual="unit"),
    Family("efficientnet", _is_efficientnet, _efficientnet_taps, is_cnn=True, residual="unit"),
    Family(
        "swin", _is_swin, _timm_stage_taps, residual="branches", attention="window", exact=False,
        attention_reason="its windowed attention is read per window (Swin)",
    ),
    Family(
        "stage_attention", _is_stage_attention, _timm_stage_taps, residual="branches", exact=False,
        attention_reason=_STAGE_ATTENTION,
    ),
    Family("timm_stages", _is_timm_stages, _timm_stage_taps, residual="branches", exact=False),
    Family(
        "generic", lambda _m: True, _generic_taps, exact=False,
        residual_reason="its family rule (generic: leaf modules) does not know its residual branches",
    ),
]  # fmt: skip


def family_of(model: nn.Module) -> Family:
    """The first record of FAMILIES whose test accepts `model` (`generic` accepts every model). A model with
    module-name tap patterns (`source: python` with `taps:`) is always `generic`."""
    if getattr(model, "seelike_tap_patterns", None):
        return FAMILIES[-1]
    return next(f for f in FAMILIES if f.detect(model))


def model_class(family: str, taps) -> str:
    """How the claims read a model: "vit" (a global-attention vision transformer), "cnn" (a CNN family, or a
    timm stage model without attention whose block outputs are all channels-first maps: ConvNeXt, RegNet, VGG,
    DenseNet, ...), else "other" (Swin, PVT, MLP-Mixer, ...: neither side of the paper's ViT-vs-CNN findings)."""
    f = family_record(family)
    if f.is_vit:
        return "vit"
    if f.is_cnn:
        return "cnn"
    blocks = [t for t in taps if t.kind in ("stem", "block", "out")]
    if f.name in ("timm_stages", "generic") and blocks and all(t.layout == "nchw" for t in blocks):
        return "cnn"
    return "other"


def family_record(name: str) -> Family:
    return next((f for f in FAMILIES if f.name == name), FAMILIES[-1])


# ---------------------------------------------------------------- decisions from a weightless build
def _build_skeleton(spec: dict[str, Any]) -> nn.Module:
    from seelike.models.load import build_skeleton

    return build_skeleton(spec)


def _sized(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """The skeleton with the configured input size as the size it sees (`seelike.models.taps.input_size`), as
    `load.load_model` sets it on the real model: every probe pass then runs at that size (a model built for
    64 px whose attention biases are fixed to its grid fails at timm's default 224)."""
    size = (spec.get("data_config") or {}).get("input_size")
    if size:
        model.seelike_input_size = tuple(int(v) for v in size)
    return model


@dataclass(frozen=True)
class Structure:
    family: str
    taps: tuple  # seelike.models.taps.Tap, forward order; empty when the probe cannot run without weights


# ---------------------------------------------------------------- decisions cached on disk
# A dry run builds every configured model without weights to decide its family, taps and analyses; the answers
# depend only on the model definition (`_definition`), the code that decides (`_code_version`) and the timm /
# torch versions, so they are kept on disk (SEELIKE_CACHE_DIR, default $XDG_CACHE_HOME/seelike or
# ~/.cache/seelike; "off" disables) and a dry run rebuilds nothing it has decided before: with every decision
# on disk (structure, refusals, residual sums, the architecture names timm knows) it imports neither torch nor
# timm. `source: python` models are never cached: their code is the user's.
def _cache_dir() -> Path | None:
    root = os.environ.get("SEELIKE_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "seelike")
    return None if root.strip().lower() in ("", "0", "off") else Path(root) / "structure"


def _installed(package: str) -> str:
    """The installed version of `package`, read from its metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


# the code every decision comes from: model building, families, taps and layouts, the analyses' own choosers
# (erf_support, localisation_support, probes_support) and the residual-sum check (seelike.analyses.skip)
_DECIDING_CODE = ("models/*.py", "analyses/*.py", "device.py")


@cache
def _code_version() -> str:
    """The timm and torch versions and a hash of the deciding code's source (`_DECIDING_CODE`): another
    version of any of them reads none of the decisions on disk."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"timm {_installed('timm')} torch {_installed('torch')}".encode())
    for path in sorted({f for pattern in _DECIDING_CODE for f in root.glob(pattern)}):
        h.update(f"{path.relative_to(root).as_posix()}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _python_model(key: dict[str, Any]) -> bool:
    """A decision key of a `source: python` model (the definition itself, or one under `model`)."""
    return key.get("source") == "python" or (key.get("model") or {}).get("source") == "python"


def _disk_cached(kind: str, keep: Callable[[Any], bool] = lambda _value: True):
    """Cache a function of a JSON key (a model definition, or a dict holding one under `model`) on disk as JSON
    (`encode` / `decode` map its value), beside the in-process cache. A value `keep` refuses is not written
    (decided again next time)."""

    def wrap(fn, encode=lambda v: v, decode=lambda v: v):
        @cache
        def cached(spec_json: str):
            folder = _cache_dir()
            if folder is None or _python_model(json.loads(spec_json)):
                return fn(spec_json)
            key = hashlib.sha256(f"{kind} {_code_version()} {spec_json}".encode()).hexdigest()[:24]
            path = folder / f"{kind}-{key}.json"
            try:
                return decode(json.loads(path.read_text())["value"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            value = fn(spec_json)
            if not keep(value):
                return value
            try:  # atomic: a concurrent dry run reads a whole file or none
                folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"spec": spec_json, "value": encode(value)}))
                tmp.replace(path)
            except OSError:  # a read-only home: decide again next time
                pass
            return value

        cached.uncached = fn
        return cached

    return wrap


def _encode_structure(s: Structure) -> dict[str, Any]:
    from dataclasses import asdict

    return {"family": s.family, "taps": [asdict(t) for t in s.taps]}


def _decode_structure(v: dict[str, Any]) -> Structure:
    from seelike.models.taps import Tap

    def tap(d: dict[str, Any]) -> Tap:
        for k in ("grid_hw", "shape", "probe_hw"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return Tap(**d)

    return Structure(v["family"], tuple(tap(d) for d in v["taps"]))


def _structure_uncached(spec_json: str) -> Structure:
    import torch

    from seelike.models.taps import discover_taps

    spec = json.loads(spec_json)
    model = _sized(_build_skeleton(spec), spec)
    family = family_of(model).name
    try:
        taps = tuple(discover_taps(model))
    # meta tensors cannot run this forward (data-dependent shapes): once more on a real CPU build
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        if next(model.parameters(), torch.empty(0)).device.type != "meta":
            raise
        with torch.device("cpu"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _sized(_build_skeleton({**spec, "_device": "cpu"}), spec)
        taps = tuple(discover_taps(model))
    return Structure(family, taps)


_structure = _disk_cached("structure")(_structure_uncached, _encode_structure, _decode_structure)
_STRUCTURE_KEYS = ("source", "arch", "factory", "kwargs", "taps", "data_config")


def _definition(spec: dict[str, Any]) -> str:
    """The part of a model spec its structure depends on, as the JSON key of the cached decisions: weights and
    the pretrained tag do not change it (every non-python source builds the timm architecture). A definition
    is a spec itself, whose definition it is."""
    key = {k: spec.get(k) for k in _STRUCTURE_KEYS if spec.get(k) is not None}
    key["arch"] = str(key.get("arch", "")).split(".")[0]
    if key.get("source") != "python":
        key["source"] = "timm"
        key.pop("taps", None)
    return json.dumps(key, sort_keys=True, default=str)


def model_structure(spec: dict[str, Any]) -> Structure:
    """Family and taps (with layouts) of a configured model from one weightless build, cached per model
    definition. Raises what the build raises for an unknown architecture or kwargs it does not accept."""
    return _structure(_definition(spec))


def model_family(spec: dict[str, Any]) -> str:
    """The family name (`FAMILIES`) of a model spec."""
    return model_structure(spec).family


def model_tap_names(spec: dict[str, Any]) -> tuple[str, ...]:
    """The tap names of a model spec, from the same weightless build as `model_family`."""
    return tuple(t.name for t in model_structure(spec).taps)


def _timm_knows_uncached(key_json: str) -> bool:
    import timm

    return bool(timm.is_model(json.loads(key_json)["arch"]))


# a yes only: an unknown name is asked again (it fails the dry run, which then imports timm for close names)
_timm_knows = _disk_cached("arch", keep=bool)(_timm_knows_uncached)


def timm_knows(arch: str) -> bool:
    """Whether `arch` (its pretrained tag left out) is a timm architecture (`timm.is_model`), cached on disk
    per name and timm version like the decisions."""
    return _timm_knows(json.dumps({"arch": arch.split(".")[0]}))


def _residual_sums_uncached(spec_json: str) -> str | None:
    import torch

    from seelike.analyses.skip import ResidualSumError, skip_statistics

    spec = json.loads(spec_json)
    with torch.device("cpu"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = _sized(_build_skeleton({**spec, "_device": "cpu"}), spec)
        # LayerScale starts at 1e-5 or 1e-6: a wrongly read branch would hide inside the tolerance
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim <= 1:
                    p.uniform_(0.5, 1.5)
    from seelike.models.taps import input_size

    x = torch.randn(2, *input_size(model), generator=torch.Generator().manual_seed(0))
    try:
        skip_statistics(model, [x], device="cpu")
    except (ResidualSumError, ValueError) as e:
        return f"its drop_path branches do not add up to the block outputs ({str(e).splitlines()[0][:200]})"
    return None


_residual_sums = _disk_cached("residual_sums")(_residual_sums_uncached)

# The settings of an analysis's config section its support decision reads (`analysis_support`): a cached
# refusal is keyed on these and decided from these alone, so a setting missing here is one the decision ignores.
_SUPPORT_SETTINGS = {"erf": ("residual",), "probes": ("tap_kinds",)}


def _refusal_uncached(key_json: str) -> str | None:
    key = json.loads(key_json)
    spec, analysis = key["model"], key["analysis"]  # a definition is a spec
    s = model_structure(spec)
    why = analysis_support(s.family, s.taps, analysis, key["tap_names"], key["settings"])
    if why is None and analysis == "skip":
        why = residual_sums_refusal(spec)
    return why


_refusal = _disk_cached("refusal")(_refusal_uncached)


def model_refusal(
    spec: dict[str, Any],
    analysis: str,
    tap_names: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> str | None:
    """Why `analysis` cannot run on the configured model `spec`, or None: what the dry run decides, from its
    family record and its taps' layouts (`analysis_support`) and, for skip statistics, its residual sums
    (`residual_sums_refusal`); cached on disk per model definition, analysis, tap names and the settings the
    decision reads (`_SUPPORT_SETTINGS`)."""
    settings = settings or {}
    key = {
        "model": json.loads(_definition(spec)),
        "analysis": analysis,
        "tap_names": list(tap_names) if tap_names is not None else None,
        "settings": {k: settings[k] for k in _SUPPORT_SETTINGS.get(analysis, ()) if k in settings},
    }
    return _refusal(json.dumps(key, sort_keys=True, default=str))


def residual_sums_refusal(spec: dict[str, Any]) -> str | None:
    """Why skip statistics cannot read a `branches` model (timm_stages and its kin: residual branches found by
    timm's drop_path convention), from the values: one forward of two random images through the model at random
    init checks z + Σ f(z) = the block's sum at every block (a structural identity, whatever the weights), as the
    rule would at run time. None where the sums hold, or for families whose rules are exact."""
    if family_record(model_structure(spec).family).residual != "branches":
        return None
    return _residual_sums(_definition(spec))


# ---------------------------------------------------------------- which analyses apply
def analysis_support(
    family: str, taps, analysis: str, tap_names=None, settings: dict[str, Any] | None = None
) -> str | None:
    """None when `analysis` (attention, head_subsets, skip, erf, localisation, probes, cka) applies to a
    model of `family` with `taps`, else the reason it does not (one sentence, for the dry-run error).
    `tap_names`: the taps the analysis would read (the configured ones), when it reads chosen taps;
    `settings`: the analysis's config section where it decides (erf.residual, probes.tap_kinds: every key read
    here is listed in `_SUPPORT_SETTINGS`, which keys the cached refusals)."""
    settings = settings or {}
    f = family_record(family)
    if analysis in ("attention", "head_subsets"):
        return _attention_support(f, family, taps, analysis)
    if analysis == "skip":
        return _skip_support(f, family, taps)
    if analysis in ("erf", "localisation", "probes"):
        return _map_support(family, taps, analysis, tap_names, settings)
    return None


def _attention_support(f: Family, family: str, taps, analysis: str) -> str | None:
    """analysis_support for attention and head_subsets."""
    if not f.attention:
        return f"{f.attention_reason} (family {family!r})"
    if analysis == "head_subsets" and f.head_subsets_reason:
        return f"{f.head_subsets_reason} (family {family!r})"
    if analysis == "head_subsets" and f.attention != "global":
        return (
            "Fig 5's head subsets are read from global token attention only: a windowed block's head "
            f"outputs are per-window tensors (family {family!r})"
        )
    if f.attention == "global":
        # one global attention over a fixed patch grid: every block's output has the same token grid
        grids = {(t.layout, t.grid_hw) for t in taps if t.kind == "block"}
        if len(grids) > 1 or any(lay != "tokens" or g is None for lay, g in grids):
            return (
                "its blocks do not all attend over one token grid (pooled or unrolled tokens, e.g. Hiera): "
                f"block outputs have {sorted(grids, key=str)} (family {family!r})"
            )
    return None


def _skip_support(f: Family, family: str, taps) -> str | None:
    """analysis_support for skip statistics."""
    if not f.residual:
        return f"{f.residual_reason} (family {family!r})"
    kinds = {t.kind for t in taps}
    if f.residual == "sublayers":
        missing = [k for pair in f.residual_pairs for k in pair if k not in kinds]
        if missing:
            return f"its blocks have no {missing} taps to read residual sublayers from (family {family!r})"
    elif f.residual == "branches" and "branch" not in kinds:
        return (
            "none of its blocks adds a whole per-image residual branch through a drop_path module "
            f"(family {family!r})"
        )
    elif "branch" not in kinds:
        return f"none of its units has a residual branch (a skip connection) (family {family!r})"
    return None


def _map_support(
    family: str, taps, analysis: str, tap_names, settings: dict[str, Any]
) -> str | None:
    """analysis_support for erf, localisation and probes: the analyses' own choosers answer, so the dry run
    refuses exactly what the rule would refuse."""
    if analysis == "erf":
        from seelike.analyses.receptive_field import erf_support

        why = erf_support(taps, family, tap_names, settings.get("residual", ("post", "pre")))
    elif analysis == "localisation":
        from seelike.analyses.localisation import localisation_support

        if tap_names and len(tap_names) > 1:
            return f"localisation maps one tap, the config names {list(tap_names)}"
        why = localisation_support(taps, tap_names[0] if tap_names else None)
    else:
        from seelike.analyses.probes import probes_support

        kinds = settings.get("tap_kinds", BLOCK_OUTPUT_KINDS)
        why = probes_support(taps, tap_names, kinds)
    return None if why is None else f"{why} (family {family!r})"
