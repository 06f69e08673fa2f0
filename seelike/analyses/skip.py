"""Skip-connection statistics (Raghu et al. 2021, Fig 7 and App. E.2).

For every residual unit, z is the identity path and f(z) the branch added to it:

- ViT block i, attention sublayer: z = block input, f = attention branch (`ls1` output); the sum is the
  post-attention residual (input of `norm2`).
- ViT block i, MLP sublayer: z = post-attention residual, f = MLP branch (`ls2` output); the sum is the block output.
- ResNet unit: z = shortcut (block input, or the downsample projection), f = residual branch before the add;
  the sum is taken before the unit's final activation (timm ResNet applies ReLU after the add).
- EfficientNet block with a skip: z = block input, f = projection norm output; the sum is the block output. Blocks
  without a skip (stride 2 or a channel change: no `branch` tap) have no residual and are left out.

Per token (ViT) or spatial position (CNN) and image: ratio = ‖z‖ / ‖f(z)‖ (L2 over channels), and the cosine between
the sum (the sublayer's output) and f. ViT statistics are kept per token position, CLS and registers separately
from patches; CNN statistics are pooled over positions (the spatial size changes between stages). Everything is
reduced inside the forward hooks in float64, over slices of the batch; no activation is copied or outlives its
block.

A zero branch (‖f‖ = 0) gives ratio = inf, counted in `n_inf`; 0/0 is undefined, counted in `n_undefined` and
left out of the mean; a zero vector has no cosine (counted in `cosine_n_undefined`). `ratio_mean` is inf when
any ratio is inf, NaN only when no ratio at all was defined.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.device import exact_fp32

__all__ = ["SkipStats", "ratio_and_cosine", "skip_statistics"]


def ratio_and_cosine(z: torch.Tensor, f: torch.Tensor, s: torch.Tensor, dim: int = -1):
    """Per-position ratio ‖z‖/‖f‖ and cosine(s, f) along `dim`, in float64.

    Returns (ratio, cosine); ratio is +inf where f = 0 < ‖z‖ and NaN where both are 0; cosine is NaN where s or f
    is the zero vector.
    """
    ratio, cos, _, _ = _ratio_cosine_norms(z, f, s, dim)
    return ratio, cos


def _ratio_cosine_norms(z: torch.Tensor, f: torch.Tensor, s: torch.Tensor, dim: int = -1):
    """`ratio_and_cosine` and the norms ‖z‖, ‖f‖ it computes on the way (all float64)."""
    z, f, s = z.double(), f.double(), s.double()
    nz, nf, ns = z.norm(dim=dim), f.norm(dim=dim), s.norm(dim=dim)
    ratio = nz / nf  # IEEE: x/0 = inf, 0/0 = nan
    denom = ns * nf
    cos = torch.where(
        denom > 0, (s * f).sum(dim) / denom.clamp_min(1e-300), torch.full_like(denom, float("nan"))
    )
    return ratio, cos, nz, nf


# Float64 working copies are made for at most this many activation values at a time (≈ 16 MB each): the
# statistics of a unit are computed over slices of its images, so their memory does not grow with the batch.
CHUNK_VALUES = 1 << 21


def _unit_statistics(z: torch.Tensor, f: torch.Tensor, s: torch.Tensor | None, pooled: bool):
    """(ratio, cosine, ‖z‖, ‖f‖), each (B, P) float64, of one residual unit, computed over slices of images.

    Tokens (B, N, C) keep positions apart (P = N); maps (B, C, H, W) give positions as rows, (B·H·W, 1).
    `s` None means s = z + f. Each image's numbers are those of one unsliced call (reductions run per position).
    """
    per_image = max(1, z[:1].numel())
    step = max(1, CHUNK_VALUES // per_image)
    parts = []
    for i in range(0, z.shape[0], step):
        zc, fc = z[i : i + step], f[i : i + step]
        sc = zc + fc if s is None else s[i : i + step]
        if pooled:  # (b, C, H, W) → positions as rows, pooled into one column
            zc, fc, sc = (t.movedim(1, -1).reshape(-1, 1, t.shape[1]) for t in (zc, fc, sc))
        parts.append(_ratio_cosine_norms(zc, fc, sc))
        del zc, fc, sc
    return tuple(torch.cat(p) for p in zip(*parts))


@dataclass
class _Acc:
    """Sums over images of per-position statistics (arrays over positions; length 1 when pooled)."""

    ratio_sum: np.ndarray
    ratio_n: np.ndarray
    n_inf: np.ndarray
    n_undefined: np.ndarray
    cos_sum: np.ndarray
    cos_n: np.ndarray
    cos_undefined: np.ndarray
    nz_sum: np.ndarray
    nf_sum: np.ndarray
    n: np.ndarray

    @classmethod
    def zeros(cls, p: int) -> _Acc:
        return cls(*(np.zeros(p) for _ in range(10)))

    def add(
        self, ratio: torch.Tensor, cos: torch.Tensor, nz: torch.Tensor, nf: torch.Tensor
    ) -> None:
        """ratio, cos, nz, nf: (B, P) float64 (P = positions kept apart; pooled inputs come as (B·HW, 1))."""
        r, c = ratio.cpu().numpy(), cos.cpu().numpy()
        fin = np.isfinite(r)
        self.ratio_sum += np.where(fin, r, 0.0).sum(0)
        self.ratio_n += fin.sum(0)
        self.n_inf += np.isinf(r).sum(0)
        self.n_undefined += np.isnan(r).sum(0)
        cf = np.isfinite(c)
        self.cos_sum += np.where(cf, c, 0.0).sum(0)
        self.cos_n += cf.sum(0)
        self.cos_undefined += (~cf).sum(0)
        self.nz_sum += nz.cpu().numpy().sum(0)
        self.nf_sum += nf.cpu().numpy().sum(0)
        self.n += r.shape[0]


@dataclass
class SkipStats:
    family: str
    accs: dict[tuple[int, str, str], _Acc] = field(
        default_factory=dict
    )  # (block, unit, branch) → sums
    token_types: list[str] = field(default_factory=list)
    n_images: int = 0

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per block × branch × token (ViT) or block (CNN, token = -1, type 'spatial')."""
        rows = []
        for (block, unit, branch), a in self.accs.items():
            for p in range(len(a.n)):
                with np.errstate(divide="ignore", invalid="ignore"):
                    mean = a.ratio_sum[p] / a.ratio_n[p] if a.ratio_n[p] else np.nan
                if a.n_inf[p]:
                    mean = np.inf
                rows.append(
                    {
                        "family": self.family,
                        "block": block,
                        "unit": unit,
                        "branch": branch,
                        "token": p if self.token_types else -1,
                        "token_type": self.token_types[p] if self.token_types else "spatial",
                        "ratio_mean": float(mean),
                        "ratio_n": int(a.ratio_n[p]),
                        "n_inf": int(a.n_inf[p]),
                        "n_undefined": int(a.n_undefined[p]),
                        "cosine_mean": float(a.cos_sum[p] / a.cos_n[p]) if a.cos_n[p] else np.nan,
                        "cosine_n": int(a.cos_n[p]),
                        "cosine_n_undefined": int(a.cos_undefined[p]),
                        "norm_z_mean": float(a.nz_sum[p] / a.n[p]),
                        "norm_f_mean": float(a.nf_sum[p] / a.n[p]),
                        "n_images": self.n_images,
                    }
                )
        return pd.DataFrame(rows)


def _token_types(model: nn.Module, n_tokens: int) -> list[str]:
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    has_cls = getattr(model, "cls_token", None) is not None
    types = []
    for i in range(prefix):
        types.append("cls" if (has_cls and i == 0) else "register")
    return types + ["patch"] * (n_tokens - prefix)


def _unit_of(tap) -> str:
    return tap.name.rsplit(".", 1)[0]


@exact_fp32()
@torch.no_grad()
def skip_statistics(
    model: nn.Module,
    batches: Iterable,
    *,
    n_images: int | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> SkipStats:
    """Stream images through `model` and accumulate skip-connection statistics for every residual unit
    (`seelike.analyses.stream`: at most `n_images` images, `progress` after each batch).

    Supports the tap families of `seelike.models.taps` with residual structure: vit, resnet, resnetv2,
    efficientnet.
    """
    from seelike.models.taps import discover_taps, record_taps, tap_family

    family = tap_family(model)
    if family not in ("vit", "resnet", "resnetv2", "efficientnet"):
        raise ValueError(
            f"skip-connection statistics need a model with known residual units (ViT blocks or ResNet units); "
            f"{type(model).__name__} is of tap family {family!r}; drop it from `skip.models`"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    all_taps = discover_taps(model)
    if family == "vit":
        wanted = {"attn", "attn_res", "mlp", "block"}
    else:
        wanted = {"branch", "shortcut"}
    taps = [t for t in all_taps if t.kind in wanted]
    if family != "vit":
        # a CNN unit is residual when it has a branch tap (EfficientNet: not every block has a skip)
        residual = {_unit_of(t) for t in taps if t.kind == "branch"}
        taps = [t for t in taps if _unit_of(t) in residual]
    units = {_unit_of(t): t.block for t in taps}
    with_shortcut = {_unit_of(t) for t in taps if t.kind == "shortcut"}
    mods = dict(model.named_modules())
    stats = SkipStats(family)
    held: dict[str, dict[str, tuple[torch.Tensor, int | None]]] = {u: {} for u in units}

    def acc(block: int, unit: str, branch: str, z, f, s, pooled: bool) -> None:
        ratio, cos, nz, nf = _unit_statistics(z, f, s, pooled)
        key = (block, unit, branch)
        if key not in stats.accs:
            stats.accs[key] = _Acc.zeros(ratio.shape[1])
        stats.accs[key].add(ratio, cos, nz, nf)

    def hold(t: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """A reference to an activation and its version: statistics are computed as soon as a unit's z and
        f(z) have both fired, before the in-place add that follows in timm ResNets, so nothing is copied.
        Inference tensors have no version counter: those are copied."""
        try:
            return t, t._version
        except RuntimeError:
            return t.clone(), None

    def get(unit: str, kind: str) -> torch.Tensor:
        t, version = held[unit][kind]
        if version is not None and t._version != version:
            raise RuntimeError(
                f"{unit}: the {kind} activation was modified in place before its skip statistics were "
                "computed; this model family needs its own tap order"
            )
        return t

    def on_unit_input(unit: str):
        def pre(_m, args):
            held[unit] = {"input": hold(args[0])}

        return pre

    def cb(tap, t: torch.Tensor) -> None:
        unit = _unit_of(tap)
        held[unit][tap.kind] = hold(t)
        b = int(tap.block)
        if family == "vit":
            if not stats.token_types:
                stats.token_types = _token_types(model, t.shape[1])
            if tap.kind == "attn_res":
                z, f, s = (get(unit, k) for k in ("input", "attn", "attn_res"))
                acc(b, unit, "attn", z, f, s, pooled=False)
                del held[unit]["input"], held[unit]["attn"]
            elif tap.kind == "block":
                z, f, s = (get(unit, k) for k in ("attn_res", "mlp", "block"))
                acc(b, unit, "mlp", z, f, s, pooled=False)
                held[unit] = {}
            return
        # CNN: z (the shortcut projection, or the unit input) and f (the branch) fire before the add
        z_kind = "shortcut" if unit in with_shortcut else "input"
        if tap.kind in ("branch", "shortcut") and {"branch", z_kind} <= held[unit].keys():
            z, f = get(unit, z_kind), get(unit, "branch")
            if z.shape != f.shape:
                raise RuntimeError(
                    f"{unit}: shortcut {tuple(z.shape)} and branch {tuple(f.shape)} differ"
                )
            acc(b, unit, "residual", z, f, None, pooled=True)
            held[unit] = {}

    handles = [mods[u].register_forward_pre_hook(on_unit_input(u)) for u in units]
    try:
        with record_taps(model, taps, cb):
            for batch in stream(batches, device, n_images=n_images, progress=progress):
                model(batch.x)
                stats.n_images += len(batch.x)
    finally:
        for h in handles:
            h.remove()
    if stats.n_images == 0:
        raise ValueError("no images were given: the batch iterable was empty")
    return stats
