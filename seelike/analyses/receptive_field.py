"""Effective receptive fields (Raghu et al. 2021, Fig 6 and App. C.4).

The ERF of a tap is |∂ y(centre) / ∂ x|: the gradient of the tap's activation at its centre position with
respect to the input image, absolute value summed over the input's colour channels, averaged over images.
The centre is position (gh//2, gw//2) of the tap's own grid, read through the tap's layout
(`seelike.models.layout`): a channels-first or channels-last map, or a token sequence with the tap's own prefix
tokens left out (CaiT's and XCiT's patch blocks carry none while the model declares one). A tap without a grid
(a pooled vector) has no centre and is refused.

"Averaged over channels" has two readings, both offered (`channel_reduce`):

- ``"grad_of_mean"`` (default): |∂ mean_c y_c(centre) / ∂ x|, one backward pass per tap. This is Luo et al.
  (2016)'s recipe (set the output gradient to 1 at the centre for every channel and back-propagate), which
  the paper cites for ERFs.
- ``"mean_of_abs"``: mean_c |∂ y_c(centre) / ∂ x|, one backward per channel (batched in chunks): no
  cancellation between channels of opposite sign, C times the cost.

Uncertainty over images: image i (in stream order) adds its map to group i mod 20 (`ERF_GROUPS`; fewer groups
when there are fewer images), one summed map per group and tap. The sizes (`erf_size`) are functionals of the
mean map, so each has a delete-one-group jackknife: the size of the mean map without group j, for every j
(`ErfResult.leave_one_out`), gives the replicates, `seelike.jackknife.jackknife_se` the SE. Interleaved groups need
no image count up front, differ in size by at most one image, and are the same partition for every model run on
the same sample list (the claims' joint jackknife of a ViT/CNN ratio relies on that).

Taps are read by `seelike.models.taps.record_taps` (module output or input); only the centre activation is
cut and cloned inside the hook, so in-place operations after it (timm ResNet's `x += shortcut`, in-place ReLU)
cannot change what is differentiated and no tap's whole activation is kept. Parameters are frozen during the
pass (only input gradients are wanted), so autograd keeps no tensor that only weight gradients need.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.device import exact_fp32, place_model
from seelike.jackknife import jackknife_se
from seelike.models.layout import positions, tap_grid

CHANNEL_REDUCE = ("grad_of_mean", "mean_of_abs")
# Image groups of the jackknife of the ERF sizes (module docstring): 20 keeps each replicate's map close to the
# full map's (an SE from 20 replicates has ~19 degrees of freedom) at taps × 20 × H × W float64 of memory.
ERF_GROUPS = 20

__all__ = [
    "CHANNEL_REDUCE",
    "ERF_GROUPS",
    "ErfResult",
    "ErfTapsError",
    "auto_erf_taps",
    "centre_activation",
    "choose_erf_taps",
    "effective_receptive_fields",
    "erf_size",
    "erf_size_uncertainty",
    "erf_sizes_frame",
    "erf_support",
    "erf_table",
]


class ErfTapsError(ValueError):
    """No ERF taps can be chosen for a model (the reason is the message; the dry run shows it)."""


def centre_index(grid_hw: Sequence[int]) -> int:
    """Row-major index of position (gh//2, gw//2) of a (gh, gw) grid (PAPER.md Fig 6: the centre of the grid)."""
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    return (gh // 2) * gw + gw // 2


def centre_activation(tap, y: torch.Tensor) -> torch.Tensor:
    """(B, C) activation of `tap` at the centre position (gh//2, gw//2) of its own grid, read through the tap's
    layout (NCHW, NHWC, or tokens after the tap's prefix tokens)."""
    return positions(tap, y)[:, centre_index(tap_grid(tap, y))]


def _not_spatial(taps: Sequence) -> list[str]:
    return [f"{t.name} ({t.layout})" for t in taps if not getattr(t, "spatial", False)]


@dataclass
class ErfResult:
    """Mean ERF maps (tap name → (H, W) float64 over the input image) and the settings that made them.

    `group_sums`: tap → (G, H, W) float64, the summed maps of each image group (image i in group i mod G, empty
    groups dropped), `group_sizes` (G,) their image counts; empty when the result was made without them (no
    jackknife then)."""

    maps: dict[str, np.ndarray]
    n_images: int
    channel_reduce: str
    img_hw: tuple[int, int]
    group_sums: dict[str, np.ndarray] = field(default_factory=dict)
    group_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def leave_one_out(self, tap: str) -> np.ndarray:
        """(G, H, W) mean ERF map of `tap` without image group j, for each j: the jackknife's replicates."""
        sums = self.group_sums.get(tap)
        if sums is None or len(self.group_sizes) < 2:
            return np.zeros((0, *self.maps[tap].shape))
        rest = (self.n_images - self.group_sizes).astype(np.float64)
        return (sums.sum(0) - sums) / rest[:, None, None]


def _capture(
    model: nn.Module, taps: Sequence, x: torch.Tensor, _grid=None
) -> dict[str, torch.Tensor]:
    """(B, C) centre activation of every tap, in the autograd graph of `x` (each tap's centre from its own layout;
    `_grid` is ignored, kept for callers that still pass a TokenGrid).

    The centre is cut and copied inside the hook: in-place ops that follow (x += shortcut, ReLU(inplace))
    cannot reach the copy, and no tap's whole activation (nor a view, which would keep all of it) outlives the
    hook.
    """
    from seelike.models.taps import record_taps

    got: dict[str, torch.Tensor] = {}

    def cb(tap, t: torch.Tensor) -> None:
        got[tap.name] = centre_activation(tap, t).clone()

    with record_taps(model, list(taps), cb):
        model(x)
    missing = [t.name for t in taps if t.name not in got]
    if missing:
        raise RuntimeError(f"taps did not fire in the forward pass: {missing}")
    return got


def _input_grads(
    centre: torch.Tensor, x: torch.Tensor, channel_reduce: str, chunk: int, retain: bool
) -> torch.Tensor:
    """(B, H, W) per-image ERF contribution of a (B, C) centre activation."""
    if channel_reduce == "grad_of_mean":
        (g,) = torch.autograd.grad(centre.mean(1).sum(), x, retain_graph=retain)
        return g.abs().sum(1)
    c = centre.shape[1]
    acc = torch.zeros(x.shape[0], *x.shape[2:], dtype=x.dtype, device=x.device)
    for start in range(0, c, chunk):
        stop = min(c, start + chunk)
        eye = torch.zeros(stop - start, *centre.shape, dtype=centre.dtype, device=centre.device)
        eye[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        last = stop == c
        try:
            (g,) = torch.autograd.grad(
                centre, x, grad_outputs=eye, retain_graph=retain or not last, is_grads_batched=True
            )
            acc += g.abs().sum(2).sum(0)
        except RuntimeError:  # an op without a batching rule: one channel at a time
            for j in range(stop - start):
                (g,) = torch.autograd.grad(
                    centre,
                    x,
                    grad_outputs=eye[j],
                    retain_graph=retain or not (last and j == stop - start - 1),
                )
                acc += g.abs().sum(1)
    return acc / c


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters do not require gradients inside: only ∂/∂ input is wanted, and autograd then does not save
    the activations that only weight gradients need (e.g. every linear layer's input)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@exact_fp32()
def effective_receptive_fields(
    model: nn.Module,
    batches: Iterable,
    taps: Sequence,
    *,
    n_images: int | None = None,
    channel_reduce: str = "grad_of_mean",
    device: str | torch.device | None = None,
    channel_chunk: int = 64,
    progress: Progress | None = None,
    groups: int = ERF_GROUPS,
) -> ErfResult:
    """Mean ERF map of every tap over the images of `batches` (images or (images, labels) tuples), and the
    summed maps of `groups` interleaved image groups for the jackknife (module docstring).

    `taps` are `seelike.models.taps.Tap` objects (name, module_path, where, layout) with a spatial layout
    (`discover_taps` fills layouts in); a tap without a grid is an error. One forward pass per batch captures
    every tap; each tap then gets its own backward pass (`grad_of_mean`) or C of them (`mean_of_abs`).
    Stops after `n_images` images; `progress` as in `seelike.analyses.stream`; `device`:
    `seelike.device.analysis_device` (default: where the model is).
    """
    if channel_reduce not in CHANNEL_REDUCE:
        raise ValueError(f"channel_reduce must be one of {CHANNEL_REDUCE}, got {channel_reduce!r}")
    if not taps:
        raise ValueError("no taps given for the effective receptive field")
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    flat = _not_spatial(taps)
    if flat:
        raise ErfTapsError(
            f"taps {flat} have no spatial map or token grid, so no centre position: an ERF needs one "
            "(layouts in taps.csv; taps from seelike.models.taps.discover_taps carry theirs)"
        )
    device = place_model(model, device)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    img_hw: tuple[int, int] | None = None
    for batch in stream(batches, device, n_images=n_images, progress=progress):
        x = batch.x.detach().requires_grad_(True)
        if img_hw is None:
            img_hw = (int(x.shape[-2]), int(x.shape[-1]))
        gid = torch.arange(seen, seen + len(x)) % groups
        with torch.enable_grad(), _frozen(model):
            centres = _capture(model, taps, x)
            for k, tap in enumerate(taps):
                g = _input_grads(
                    centres.pop(tap.name),
                    x,
                    channel_reduce,
                    channel_chunk,
                    retain=k < len(taps) - 1,
                )
                if tap.name not in sums:
                    sums[tap.name] = torch.zeros(
                        groups, *g.shape[1:], dtype=torch.float64, device=g.device
                    )
                # per-image maps go straight into their group's running sum: nothing per image is kept
                sums[tap.name].index_add_(0, gid.to(g.device), g.detach().double())
                del g
        del centres
        seen += len(x)
    if img_hw is None:
        raise ValueError("no images were given: the batch iterable was empty")
    sizes = np.bincount(np.arange(seen) % groups, minlength=groups)
    keep = sizes > 0  # fewer images than groups: one group per image
    group_sums = {t.name: sums[t.name].cpu().numpy()[keep] for t in taps}
    maps = {name: s.sum(0) / seen for name, s in group_sums.items()}
    return ErfResult(maps, seen, channel_reduce, img_hw, group_sums, sizes[keep])


def erf_size(erf: np.ndarray, quantiles: Sequence[float] = (0.5, 0.9)) -> dict[str, float]:
    """Centroid of an ERF map and the radii (px, from the centroid) holding each quantile of its mass.

    Pixels sit at their centres (i + 0.5, j + 0.5). r_q is the distance of the nearest pixel at which the
    cumulative mass of the pixels sorted by distance reaches q. A map with no mass (a tap that does not depend on
    the input) gives NaN sizes and total_mass 0, never a silent number.
    """
    m = np.asarray(erf, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"an ERF map is 2-D (H, W), got shape {m.shape}")
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError("an ERF map holds finite non-negative magnitudes")
    total = float(m.sum())
    out: dict[str, float] = {"total_mass": total}
    if total <= 0:
        out.update({"centroid_row": np.nan, "centroid_col": np.nan, "sigma_px": np.nan})
        out.update({f"r{round(q * 100)}_px": np.nan for q in quantiles})
        return out
    p = m / total
    rows, cols = np.meshgrid(
        np.arange(m.shape[0]) + 0.5, np.arange(m.shape[1]) + 0.5, indexing="ij"
    )
    cr, cc = float((p * rows).sum()), float((p * cols).sum())
    d = np.sqrt((rows - cr) ** 2 + (cols - cc) ** 2).ravel()
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(p.ravel()[order])
    out.update(
        {
            "centroid_row": cr,
            "centroid_col": cc,
            "sigma_px": float(np.sqrt((p.ravel() * d**2).sum())),
        }
    )
    for q in quantiles:
        # tolerance: cumulative float sums may fall a hair short of q (e.g. q = 1)
        i = int(np.searchsorted(cum, q - 1e-12, side="left"))
        out[f"r{round(q * 100)}_px"] = float(d[order[min(i, len(d) - 1)]])
    return out


def erf_size_uncertainty(
    result: ErfResult, tap: str, quantiles: Sequence[float] = (0.5, 0.9)
) -> dict[str, object]:
    """Delete-one-group jackknife of the ERF sizes of `tap` (module docstring): `{size}_se` for `sigma_px` and
    every radius `r{q}_px`, and `r{q}_px_jk`, the radius of each leave-one-group-out map (float64 array, one per
    group) so that a ratio of two radii of the same images (last / first tap, one model over another) gets its
    SE from a joint jackknife. NaN SEs and empty replicates with fewer than 2 groups."""
    loo = [erf_size(m, quantiles) for m in result.leave_one_out(tap)]
    out: dict[str, object] = {}
    for size in ["sigma_px", *(f"r{round(q * 100)}_px" for q in quantiles)]:
        reps = np.array([r[size] for r in loo], dtype=np.float64)
        out[f"{size}_se"] = jackknife_se(reps)
        if size != "sigma_px":
            out[f"{size}_jk"] = reps
    return out


def erf_sizes_frame(
    result: ErfResult, taps: Sequence, quantiles: Sequence[float] = (0.5, 0.9)
) -> pd.DataFrame:
    """Tidy table: one row per tap with its kind, block, ERF size, the sizes' jackknife SEs and replicates
    (`erf_size_uncertainty`; `n_groups` image groups) and settings."""
    rows = []
    for order, tap in enumerate(taps):
        row = {
            "tap": tap.name,
            "kind": getattr(tap, "kind", ""),
            "block": getattr(tap, "block", None),
            "order": order,
            "n_images": result.n_images,
            "n_groups": len(result.group_sizes),
            "channel_reduce": result.channel_reduce,
        }
        row.update(erf_size(result.maps[tap.name], quantiles))
        row.update(erf_size_uncertainty(result, tap.name, quantiles))
        rows.append(row)
    df = pd.DataFrame(rows)
    df["block"] = df["block"].astype("Int64")
    return df


def _pick_blocks(n: int, k: int = 4) -> list[int]:
    """Block 0 and the ends of the k quarters: for 12 blocks 0, 2, 5, 8, 11 (the paper's ViT sublayers 1, 3, 6,
    9, 12)."""
    return sorted({0} | {max(0, round(n * j / k) - 1) for j in range(1, k + 1)})


def _stage_of(tap) -> str:
    """The stage a timm_stages block tap belongs to: its block module's parent container."""
    return tap.module_path.rsplit(".", 1)[0]


def _stage_ends(blocks: Sequence) -> list:
    """The last block of each stage, in order; for one stage (an isotropic model: SAM-ViT, Mixer) block 0 and the
    quarter ends, as for a ViT."""
    stages: dict[str, list] = {}
    for t in blocks:
        stages.setdefault(_stage_of(t), []).append(t)
    if len(stages) == 1:
        (only,) = stages.values()
        return [only[i] for i in _pick_blocks(len(only))]
    return [ts[-1] for ts in stages.values()]


def _grid_run_ends(taps: Sequence) -> list:
    """The first spatial tap and the last one of each run of taps on the same grid (before each downsampling)."""
    out = []
    for i, t in enumerate(taps):
        if i == 0 or (i + 1 < len(taps) and taps[i + 1].grid_hw != t.grid_hw) or i + 1 == len(taps):
            out.append(t)
    return out


def auto_erf_taps(all_taps: Sequence, family: str, residual: str = "post") -> list:
    """The paper-like default taps of a model from its discovered taps (`seelike.models.taps.discover_taps`);
    `ErfTapsError` (a ValueError, its message the reason) when the model has none for `residual`.

    The rule is picked by the kinds of the taps, whatever the family's name:

    - ViT-like blocks (`attn_res` taps: vit, cait, xcit): block 0 and the quarter ends (12 blocks: 1, 3, 6, 9, 12
      in the paper's 1-based counting), tap `attn_res` (after the attention sublayer's residual sum) for
      `residual="post"`, `attn` (attention branch only) for `"pre"`.
    - CNN units (`out` taps: resnet, resnetv2, efficientnet): `stem` and the last unit of each stage (R50: 3, 7,
      13, 16), tap `out` for post, `branch` for pre (EfficientNet: the last block with a skip of each stage that
      has one).
    - stage blocks (`block` taps: timm_stages, swin, stage_attention — ConvNeXt, Swin, PVT, MaxViT, SAM-ViT,
      ...): `stem` and the last block output of each stage with a spatial layout (one stage: block 0 and the
      quarter ends) for post; for pre, `stem` and the last residual branch (`branchK`) of those blocks, blocks
      whose branches are not readable left out.
    - anything else (generic: named leaf modules): the first spatial tap and the last of each run of spatial taps
      on one grid larger than 1×1 for post; no pre (no residual branches are known).

    Every tap chosen has a spatial map or token grid (`Tap.spatial`): the ERF is taken at its centre position.
    """
    if residual not in ("post", "pre"):
        raise ValueError(f"residual must be 'post' or 'pre', got {residual!r}")
    by_name = {t.name: t for t in all_taps}
    stem = [by_name["stem"]] if "stem" in by_name and by_name["stem"].spatial else []
    kinds = {t.kind for t in all_taps}
    if "attn_res" in kinds:  # ViT-like blocks (vit, cait, xcit, ...)
        blocks = sorted({t.block for t in all_taps if t.block is not None})
        kind = "attn_res" if residual == "post" else "attn"
        names = [f"blocks.{blocks[i]}.{kind}" for i in _pick_blocks(len(blocks))] if blocks else []
        chosen = [by_name[n] for n in names if n in by_name]
        if not chosen or len(chosen) < len(names):
            raise ErfTapsError(
                f"its blocks have no `{kind}` taps ({residual}-residual ERF; family {family!r}); list tap names in "
                "erf.taps.<model>"
            )
    elif "out" in kinds:  # CNN units (resnet, resnetv2, efficientnet)
        kind = "out" if residual == "post" else "branch"
        units = [t for t in all_taps if t.kind == kind]
        ends = []
        for i, t in enumerate(units):  # a stage ends where the next unit's stage prefix differs
            stage = t.name.rsplit(".", 2)[0]
            nxt = units[i + 1].name.rsplit(".", 2)[0] if i + 1 < len(units) else None
            if stage != nxt:
                ends.append(t)
        chosen = stem + ends
    elif "block" in kinds:  # stage blocks (timm_stages, swin, stage_attention, ...)
        ends = _stage_ends([t for t in all_taps if t.kind == "block" and t.spatial])
        if not ends:
            raise ErfTapsError(
                "none of its block outputs has a spatial map or token grid; list tap names in erf.taps.<model>"
            )
        if residual == "post":
            chosen = stem + ends
        else:
            branches = []
            for b in ends:
                own = [
                    t
                    for t in all_taps
                    if t.kind == "branch"
                    and t.spatial
                    and t.name.startswith(f"{b.module_path}.branch")
                ]
                branches += own[-1:]
            if not branches:
                raise ErfTapsError(
                    f"blocks {[b.module_path for b in ends]} add no residual branch through a drop_path module "
                    "that is a whole per-image map, so there is no pre-residual (branch-only) ERF; set "
                    "erf.residual: [post] or list tap names in erf.taps.<model>"
                )
            chosen = stem + branches
    else:  # generic: named leaf modules
        if residual == "pre":
            raise ErfTapsError(
                f"family {family!r} names no block outputs or residual branches, so there is no pre-residual "
                "(branch-only) ERF; set erf.residual: [post] or list tap names in erf.taps.<model>"
            )
        # pooled 1×1 maps (a global pool before the head) are left out
        chosen = _grid_run_ends(
            [t for t in all_taps if t.spatial and tuple(t.grid_hw or ()) != (1, 1)]
        )
    if not chosen:
        raise ErfTapsError(
            "none of its taps has a spatial map or a token grid; list tap names in erf.taps.<model>"
        )
    flat = _not_spatial(chosen)
    if flat:
        raise ErfTapsError(
            f"its default {residual}-residual ERF taps {flat} have no spatial map or token grid; list tap names "
            "in erf.taps.<model>"
        )
    return chosen


def choose_erf_taps(
    all_taps: Sequence,
    family: str,
    explicit: Sequence[str] | None,
    residual: Sequence[str],
    model: str,
) -> dict[str, list]:
    """The ERF taps of one model, grouped as the table reports them: `{"explicit": taps}` for the names listed
    in the config (`erf.taps.<model>`), else `{residual: auto_erf_taps(...)}` for each of `residual` ("post",
    "pre") the model has taps for; a setting it has none for (no readable residual branch: "pre" on a generic
    model) is left out with a warning that gives the reason. Errors (`ErfTapsError`): an unknown name (pointing to
    the model's taps table), a listed tap without a spatial grid, no setting of `residual` with taps.
    `erf_support` gives the same answer without raising (the dry run)."""
    if explicit:
        from seelike.models.taps import taps_named

        chosen = taps_named(all_taps, explicit, f"erf.taps.{model}")
        flat = _not_spatial(chosen)
        if flat:
            raise ErfTapsError(
                f"erf.taps.{model} names taps {flat} without a spatial map or token grid (no centre position); "
                "layouts in taps.csv"
            )
        return {"explicit": chosen}
    out: dict[str, list] = {}
    refused: dict[str, str] = {}
    for r in residual:
        try:
            out[r] = auto_erf_taps(all_taps, family, r)
        except ErfTapsError as e:
            refused[r] = str(e)
    if not out:
        raise ErfTapsError("; ".join(f"{r}: {why}" for r, why in refused.items()))
    for r, why in refused.items():
        warnings.warn(f"{model}: no {r}-residual ERF ({why})", stacklevel=2)
    return out


def erf_support(all_taps: Sequence, family: str, tap_names: Sequence[str] | None = None,
                residual: Sequence[str] = ("post", "pre")) -> str | None:  # fmt: skip
    """None when `choose_erf_taps` finds taps for a model, else its reason (the dry run's refusal)."""
    names = {t.name for t in all_taps}
    unknown = [n for n in tap_names or () if n not in names]
    if unknown:
        return f"erf.taps names {unknown}: not taps of this model (taps.csv lists them)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            choose_erf_taps(all_taps, family, tap_names, residual, "<model>")
    except ErfTapsError as e:
        return str(e)
    return None


def distinct_taps(chosen: Mapping[str, Sequence]) -> list:
    """Every tap of `choose_erf_taps`'s groups once, in group order: one pass computes them all."""
    return list({t.name: t for ts in chosen.values() for t in ts}.values())


def erf_table(
    result: ErfResult, chosen: Mapping[str, Sequence], quantiles: Sequence[float] = (0.5, 0.9)
) -> pd.DataFrame:
    """The ERF size table of a model: `erf_sizes_frame` per group of `chosen`, with its `residual` column."""
    frames = []
    for residual, taps in chosen.items():
        f = erf_sizes_frame(result, taps, quantiles)
        f.insert(0, "residual", residual)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)
