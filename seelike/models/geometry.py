"""Where a model's representations sit on the input image: the token grid of a ViT-like model (prefix tokens, then
a row-major patch grid), patch centres and distances in pixels, and the input region each position of a ViT token
grid or a CNN feature map sees. Used by attention distances, receptive fields and localisation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn


class NotAnAttentionModelError(ValueError):
    """The model has no self-attention over a patch grid (e.g. a CNN)."""


def _pair(v: float | Sequence[int | float]) -> tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    a, b = v
    return float(a), float(b)


def patch_centres(
    grid_hw: Sequence[int],
    patch_px: float | Sequence[int | float],
    stride_px: float | Sequence[int | float] | None = None,
) -> np.ndarray:
    """(P, 2) pixel coordinates (row, col) of the patch centres, patches in row-major order.

    Patch (r, c) covers rows [r·s_h, r·s_h + p_h) of the input, so its centre is r·s_h + p_h/2 (stride s defaults
    to the patch size, as in a plain ViT patch embedding).
    """
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    ph, pw = _pair(patch_px)
    sh, sw = _pair(stride_px) if stride_px is not None else (ph, pw)
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([rows.ravel() * sh + ph / 2, cols.ravel() * sw + pw / 2], axis=1).astype(
        np.float64
    )


def patch_distance_matrix(
    grid_hw: Sequence[int],
    patch_px: float | Sequence[int | float],
    stride_px: float | Sequence[int | float] | None = None,
) -> np.ndarray:
    """(P, P) Euclidean distances in pixels between patch centres (float64)."""
    c = patch_centres(grid_hw, patch_px, stride_px)
    return np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))


@dataclass(frozen=True)
class TokenGrid:
    """Where a ViT's tokens sit on the input: prefix tokens first, then a row-major patch grid."""

    grid_hw: tuple[int, int]
    patch_px: tuple[int, int]
    stride_px: tuple[int, int]
    num_prefix_tokens: int
    img_hw: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_hw[0] * self.grid_hw[1]

    @property
    def centre_token(self) -> int:
        """Index of the token at grid position (H//2, W//2) (PAPER.md Fig 6: centre of the patch grid)."""
        return (
            self.num_prefix_tokens + (self.grid_hw[0] // 2) * self.grid_hw[1] + self.grid_hw[1] // 2
        )


def token_grid(model: nn.Module, img_hw: Sequence[int]) -> TokenGrid:
    """The token layout of a timm ViT-like model for inputs of size `img_hw`.

    Raises NotAnAttentionModelError for a model without a patch embedding (e.g. a CNN).
    """
    pe = getattr(model, "patch_embed", None)
    if pe is None or not hasattr(pe, "patch_size"):
        raise NotAnAttentionModelError(
            f"{type(model).__name__} has no `patch_embed` with a `patch_size`: it is not a ViT-like model, so "
            "attention distances and token grids do not apply; list only ViT-family models for this analysis"
        )
    patch = tuple(int(v) for v in _pair(pe.patch_size))
    proj = getattr(pe, "proj", None)
    stride = tuple(int(v) for v in proj.stride) if isinstance(proj, nn.Conv2d) else patch
    h, w = int(img_hw[0]), int(img_hw[1])
    if hasattr(pe, "dynamic_feat_size") and (
        getattr(model, "dynamic_img_size", False) or getattr(pe, "img_size", None) is None
    ):
        grid = tuple(int(v) for v in pe.dynamic_feat_size((h, w)))
    elif getattr(pe, "grid_size", None) is not None:
        grid = tuple(int(v) for v in pe.grid_size)
    else:
        grid = ((h - patch[0]) // stride[0] + 1, (w - patch[1]) // stride[1] + 1)
    if isinstance(getattr(pe, "backbone", None), nn.Module):
        # hybrid ViT (timm HybridEmbed): `patch_size` is the projection's patch on the CNN's feature map, not on
        # the image; one token is one cell of the image at the total stride, image size / grid size
        stride = (max(1, round(h / grid[0])), max(1, round(w / grid[1])))
        patch = stride
    if getattr(model, "num_prefix_tokens", None) is not None:
        prefix = int(model.num_prefix_tokens)
    else:
        prefix = int(getattr(model, "cls_token", None) is not None)
    return TokenGrid(grid, patch, stride, prefix, (h, w))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PositionGrid:
    """Grid positions of a representation and the input region (r0, r1, c0, c1) in pixels each one sees."""

    grid_hw: tuple[int, int]
    img_hw: tuple[int, int]
    num_prefix_tokens: int
    regions: tuple[tuple[int, int, int, int], ...]
    kernel: tuple[int, int] | None = None  # regular grid: unfold kernel and stride
    stride: tuple[int, int] | None = None

    @property
    def size(self) -> int:
        return self.grid_hw[0] * self.grid_hw[1]

    def rc(self, g: int) -> tuple[int, int]:
        return divmod(int(g), self.grid_hw[1])


def vit_position_grid(model: nn.Module, img_hw: Sequence[int]) -> PositionGrid:
    """Patch positions of a timm ViT-like model: P×P patches at the patch embedding's stride."""

    tg = token_grid(model, img_hw)
    (gh, gw), (ph, pw), (sh, sw) = tg.grid_hw, tg.patch_px, tg.stride_px
    regions = tuple(
        (i * sh, i * sh + ph, j * sw, j * sw + pw) for i in range(gh) for j in range(gw)
    )
    h, w = tg.img_hw
    if regions[-1][1] > h or regions[-1][3] > w:
        raise ValueError(f"patch grid {tg.grid_hw} × {tg.patch_px} px does not fit a {h}×{w} input")
    return PositionGrid((gh, gw), (h, w), tg.num_prefix_tokens, regions, (ph, pw), (sh, sw))


def cnn_position_grid(map_hw: Sequence[int], img_hw: Sequence[int]) -> PositionGrid:
    """Positions of an (h, w) CNN map over an (H, W) input, with adaptive-pooling boundaries."""
    (h, w), (H, W) = (int(v) for v in map_hw), (int(v) for v in img_hw)
    rows = [(i * H // h, math.ceil((i + 1) * H / h)) for i in range(h)]
    cols = [(j * W // w, math.ceil((j + 1) * W / w)) for j in range(w)]
    regions = tuple((r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols)
    regular = H % h == 0 and W % w == 0
    kernel = (H // h, W // w) if regular else None
    return PositionGrid((h, w), (H, W), 0, regions, kernel, kernel)


@dataclass(frozen=True)
class WindowGeometry:
    """Where the tokens of a windowed (Swin) attention block sit on its stage's grid.

    timm's Swin blocks (V1, V2, V2-CR) roll the (H, W) map by (-s_h, -s_w) (the cyclic shift of shifted-window
    blocks), pad it at the bottom / right to whole windows, and cut it into windows in row-major order, tokens
    row-major inside a window: token t of window w is at (i, j) = (a·w_h + t // w_w, b·w_w + t % w_w) of the rolled,
    padded map, with (a, b) = divmod(w, n_windows_w). Its true position on the un-shifted map is
    ((i + s_h) mod H, (j + s_w) mod W) when i < H and j < W, else it is padding (no position on the image).

    `positions` (nW, N, 2): true (row, col) of every window token, -1 for padding; `valid` (nW, N): not padding;
    `distances` (nW, N, N) float64: Euclidean distance in input pixels between the true positions (cell centres at
    the stage's stride, `stride_px`), 0 where either token is padding. A key that wrapped around the map in a
    shifted window is at its true, far position (its pairs are masked by the block: ~0 probability).
    """

    grid_hw: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]
    stride_px: tuple[float, float]
    positions: np.ndarray
    valid: np.ndarray
    distances: np.ndarray

    @property
    def num_windows(self) -> int:
        return int(self.positions.shape[0])

    @property
    def window_area(self) -> int:
        return int(self.positions.shape[1])


def window_geometry(
    grid_hw: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    stride_px: float | Sequence[int | float],
) -> WindowGeometry:
    """The `WindowGeometry` of a Swin block on an (H, W) map with window (w_h, w_w) and cyclic shift (s_h, s_w)."""
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    wh, ww = int(window[0]), int(window[1])
    sh, sw = int(shift[0]), int(shift[1])
    if min(gh, gw, wh, ww) < 1:
        raise ValueError(f"grid {grid_hw} and window {window} must be positive")
    nh, nw = -(-gh // wh), -(-gw // ww)
    # rolled, padded map coordinates of every (window, token)
    a, b = np.divmod(np.arange(nh * nw), nw)
    u, v = np.divmod(np.arange(wh * ww), ww)
    i = a[:, None] * wh + u[None, :]
    j = b[:, None] * ww + v[None, :]
    valid = (i < gh) & (j < gw)
    pos = np.stack([(i + sh) % gh, (j + sw) % gw], axis=-1)
    pos[~valid] = -1
    ph, pw = _pair(stride_px)
    d = np.sqrt(
        ((pos[:, :, None, 0] - pos[:, None, :, 0]) * ph) ** 2
        + ((pos[:, :, None, 1] - pos[:, None, :, 1]) * pw) ** 2
    )
    d = np.where(valid[:, :, None] & valid[:, None, :], d, 0.0)
    return WindowGeometry((gh, gw), (wh, ww), (sh, sw), (ph, pw), pos, valid, d.astype(np.float64))
