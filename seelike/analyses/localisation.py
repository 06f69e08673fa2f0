"""Spatial localisation (Figs 9, 10): how much of its own input patch a token's representation still holds.

For a chosen tap (default: the last block output) and every chosen token position t, minibatch CKA across
images between the token's representation [n, D] and the raw input patch at every grid position g
[n, P·P·3], giving one heatmap over the grid per token. "Raw" is the model's preprocessed input (timm's
transform: resize, crop, normalise) cut into the regions the positions see:

- ViT-like models: the patch embedding's kernel and stride (non-overlapping P×P patches for a standard ViT);
  prefix tokens (CLS, registers) have no position and are left out.
- CNNs: the tap's own (h, w) map (the final stage's grid for the default tap) over the input, position (i, j)
  covering rows ⌊iH/h⌋ … ⌈(i+1)H/h⌉ and likewise for columns (adaptive-pooling boundaries; exact tiles when h
  divides H).

The estimator is the unbiased-HSIC minibatch CKA of `seelike.cka` (ratio of means over minibatches). All
tokens × positions share one accumulator: per minibatch the Grams of every token and every patch are
U-centred once and multiplied once, so a full G × G map costs about as much as one row.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.cka import MIN_BATCH, CkaAccumulator, ConstantRepresentationWarning
from seelike.device import exact_fp32
from seelike.models.geometry import PositionGrid, cnn_position_grid, vit_position_grid


def patches(images: torch.Tensor, grid: PositionGrid) -> list[torch.Tensor] | torch.Tensor:
    """The input region of every position, flattened: (G, B, P) for a regular grid, else a list of (B, P_g)."""
    if grid.kernel is not None:
        u = F.unfold(
            images, kernel_size=grid.kernel, stride=grid.stride
        )  # (B, 3·kh·kw, L), row-major L
        if u.shape[-1] != grid.size:
            raise ValueError(
                f"input {tuple(images.shape[-2:])} gives {u.shape[-1]} patches, grid has {grid.size}"
            )
        return u.permute(2, 0, 1)
    return [images[:, :, r0:r1, c0:c1].reshape(len(images), -1) for r0, r1, c0, c1 in grid.regions]


def position_features(act: torch.Tensor, grid: PositionGrid) -> torch.Tensor:
    """(G, B, C): one representation per grid position (ViT patch tokens, or CNN map positions)."""
    if act.dim() == 3:
        tokens = act[:, grid.num_prefix_tokens :]
        if tokens.shape[1] != grid.size:
            raise ValueError(
                f"activation has {act.shape[1]} tokens, expected {grid.num_prefix_tokens} prefix + {grid.size}"
            )
        return tokens.transpose(0, 1)
    if act.dim() == 4:
        if tuple(act.shape[-2:]) != grid.grid_hw:
            raise ValueError(f"map {tuple(act.shape[-2:])} does not match the grid {grid.grid_hw}")
        return act.flatten(2).permute(2, 0, 1)
    raise ValueError(
        f"localisation needs a token (B,N,C) or map (B,C,H,W) activation, got {tuple(act.shape)}; pick such a "
        "tap in localisation.taps"
    )


def position_grams(feats: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """(G, B, B) exact-fp32 Grams of (G, B, P) features (or a list of (B, P_g))."""
    with exact_fp32():
        if isinstance(feats, torch.Tensor):
            f = feats.float()
            return torch.bmm(f, f.transpose(1, 2))
        return torch.stack([f.float() @ f.float().T for f in feats])


def patch_grams(images: torch.Tensor, grid: PositionGrid) -> torch.Tensor:
    return position_grams(patches(images, grid))


class CkaMap(NamedTuple):
    cka: np.ndarray  # (T, G)
    n_images: int
    dropped: list[int]
    token_constant: np.ndarray  # (T,) bool
    patch_constant: np.ndarray  # (G,) bool


def localisation_cka(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    grid: PositionGrid,
    tokens: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> CkaMap:
    """Minibatch CKA (T, G) between chosen positions' representations and every position's input patch.

    `batches` yields (position features (G, B, C), images (B, 3, H, W)) of the same images. Returns the map
    with the number of images used, the dropped batches (fewer than 4 images) and which tokens and patches are
    constant across the images (their CKA is undefined and reported as 0, e.g. blank image borders).
    """
    device = torch.device(device)
    tokens = list(range(grid.size)) if tokens is None else [int(t) for t in tokens]
    bad = [t for t in tokens if not 0 <= t < grid.size]
    if bad:
        raise ValueError(
            f"token positions {bad} are outside the {grid.grid_hw} grid (0 … {grid.size - 1})"
        )
    acc = CkaAccumulator(len(tokens), grid.size, device=device)
    n_used = 0
    for i, (feats, images) in enumerate(batches):
        if len(images) < MIN_BATCH:
            acc.dropped.append(i)
            continue
        gt = position_grams(feats[tokens].to(device))
        gp = patch_grams(images.to(device), grid)
        acc.add(gt, gp, batch_id=i)
        n_used += len(images)
    const_t, const_p = acc.degenerate()
    if const_t.any() or const_p.any():
        warnings.warn(
            f"constant across the images: tokens {[tokens[i] for i in np.flatnonzero(const_t)]}, input patches "
            f"{np.flatnonzero(const_p).tolist()} (e.g. a blank border); their CKA is undefined, reported as 0 "
            "and flagged in the table",
            ConstantRepresentationWarning,
            stacklevel=2,
        )
    return CkaMap(acc.result(), n_used, list(acc.dropped), const_t, const_p)


def default_localisation_tap(taps: Sequence, family: str):
    """The last block output (ViT `block`, ResNet / EfficientNet `out`), else the last tap."""
    kind = {"vit": "block", "resnet": "out", "resnetv2": "out", "efficientnet": "out"}.get(family)
    chosen = [t for t in taps if t.kind == kind] if kind else []
    if not chosen:
        chosen = list(taps)
    return chosen[-1]


def default_plot_tokens(grid_hw: Sequence[int]) -> list[int]:
    """A corner, an edge, two interior positions, the centre and the far corner (deduplicated, in order)."""
    h, w = (int(v) for v in grid_hw)
    rc = [
        (0, 0),
        (0, w // 2),
        (h // 4, w // 4),
        (h // 2, w // 2),
        (3 * h // 4, 3 * w // 4),
        (h - 1, w - 1),
    ]
    out: list[int] = []
    for r, c in rc:
        g = r * w + c
        if g not in out:
            out.append(g)
    return out


@dataclass
class LocalisationResult:
    tap: str
    grid: PositionGrid
    tokens: list[int]
    cka: np.ndarray  # (T, G)
    n_images: int
    dropped: list[int]
    token_constant: np.ndarray  # (T,) bool
    patch_constant: np.ndarray  # (G,) bool

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (token, patch position)."""
        t_idx, g_idx = np.meshgrid(
            np.arange(len(self.tokens)), np.arange(self.grid.size), indexing="ij"
        )
        tok = np.asarray(self.tokens)[t_idx.ravel()]
        pos = g_idx.ravel()
        gw = self.grid.grid_hw[1]
        return pd.DataFrame(
            {
                "tap": self.tap,
                "token": tok,
                "token_row": tok // gw,
                "token_col": tok % gw,
                "patch": pos,
                "patch_row": pos // gw,
                "patch_col": pos % gw,
                "cka": self.cka.ravel(),
                # constant across images: CKA undefined, reported as 0 (seelike.cka's policy)
                "token_constant": np.asarray(self.token_constant)[t_idx.ravel()],
                "patch_constant": np.asarray(self.patch_constant)[pos],
            }
        )

    def fields(self) -> dict:
        """What the table's metadata records of the result: tap, grid geometry, dropped minibatches."""
        g = self.grid
        return {
            "tap": self.tap,
            "grid_hw": list(g.grid_hw),
            "img_hw": list(g.img_hw),
            "patch_px": list(g.kernel) if g.kernel else None,
            "stride_px": list(g.stride) if g.stride else None,
            "num_prefix_tokens": g.num_prefix_tokens,
            "dropped_batches": self.dropped,
            "input": "preprocessed model input (timm transform), cut into each position's region",
        }


@exact_fp32()
def localisation_maps(
    model: nn.Module,
    batches: Iterable,
    tap=None,
    tokens: Sequence[int | Sequence[int]] | None = None,
    device: str | torch.device = "cpu",
    *,
    n_images: int | None = None,
    progress: Progress | None = None,
) -> LocalisationResult:
    """Run the model over `batches` (images, or (images, labels)) and build the localisation map of one tap
    (`tap`: a Tap, a tap name, or None for `default_localisation_tap`); `tokens` as in `token_indices`.
    At most `n_images` images; `progress` as in `seelike.analyses.stream`."""
    from seelike.models.taps import discover_taps, record_taps, tap_family, taps_named

    device = torch.device(device)
    taps = discover_taps(model)
    if tap is None:
        tap = default_localisation_tap(taps, tap_family(model))
    elif isinstance(tap, str):
        (tap,) = taps_named(taps, [tap], "localisation.taps")
    is_vit = hasattr(model, "patch_embed")
    grid: list[PositionGrid] = []
    captured: list[torch.Tensor] = []

    def on_tap(_t, act: torch.Tensor) -> None:
        captured.append(act.detach().clone())

    def features():
        with record_taps(model, [tap], on_tap), torch.inference_mode():
            for batch in stream(batches, device, n_images=n_images, progress=progress):
                x = batch.x
                captured.clear()
                model(x)
                act = captured[0]
                if not grid:
                    img_hw = tuple(x.shape[-2:])
                    if is_vit and act.dim() == 3:
                        grid.append(vit_position_grid(model, img_hw))
                    elif act.dim() == 4:
                        grid.append(cnn_position_grid(act.shape[-2:], img_hw))
                    else:
                        raise ValueError(
                            f"tap {tap.name!r} gives {tuple(act.shape)}: localisation needs a token grid or a "
                            "spatial map; choose another tap in localisation.taps"
                        )
                yield position_features(act, grid[0]), x

    it = features()
    first = next(it, None)
    if first is None:
        raise ValueError("no images to localise over")

    def chained():
        yield first
        yield from it

    toks = token_indices(tokens, grid[0])
    m = localisation_cka(chained(), grid[0], toks, device)
    return LocalisationResult(
        tap.name, grid[0], toks, m.cka, m.n_images, m.dropped, m.token_constant, m.patch_constant
    )


def token_indices(tokens: Sequence[int | Sequence[int]] | None, grid: PositionGrid) -> list[int]:
    """Row-major position indices from indices or (row, col) pairs (negative = from the end); None = all."""
    if tokens is None:
        return list(range(grid.size))
    h, w = grid.grid_hw
    out = []
    for t in tokens:
        if isinstance(t, (int, np.integer)):
            g = int(t)
        else:
            r, c = (int(v) for v in t)
            r, c = r + h if r < 0 else r, c + w if c < 0 else c
            if not (0 <= r < h and 0 <= c < w):
                raise ValueError(
                    f"token {list(t)} lies outside the {h}×{w} grid; fix localisation.tokens"
                )
            g = r * w + c
        if not 0 <= g < grid.size:
            raise ValueError(
                f"token position {g} lies outside the {h}×{w} grid; fix localisation.tokens"
            )
        if g not in out:
            out.append(g)
    return out
