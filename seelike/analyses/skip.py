"""Skip-connection statistics (Raghu et al. 2021, Fig 7 and App. E.2).

For every residual sublayer, z is the identity path, f(z) the branch added to it and s = z + f(z) the sum. What is
read where comes from the model's family record (`seelike.models.families.Family.residual`), never from its name:

- "sublayers" (ViT, DeiT, BEiT, CaiT: attention then MLP; XCiT: attention, local patch interaction, MLP): per
  block, for each (branch kind, sum kind) of the record's `residual_pairs` in order, z = the previous sum (first:
  the block input), f = the branch tap (the LayerScale output, or the drop_path firing of gamma-scaled blocks), s =
  the sum tap (e.g. the post-attention residual, input of `norm2`; last: the block output).
- "unit" (ResNet, ResNetV2, EfficientNet): z = shortcut (block input, or the downsample projection), f = residual
  branch before the add (timm ResNet applies ReLU after the add; EfficientNet blocks without a skip have no
  `branch` tap and are left out).
- "branches" (timm_stages: ConvNeXt, Swin, SwinV2, MLP-Mixer, ResMLP, RegNet, ...): per block, z0 = its `shortcut`
  tap (the shortcut / downsample output) if it has one, else the block input; f_i = its `branch` taps (drop_path
  firings) in order; s_i = s_{i-1} + f_i (z of sublayer i is s_{i-1}, reshaped to f_i's shape: Swin flattens its
  (B, H, W, C) map to (B, HW, C) between its two branches). The last sum is the block's `sum` tap (the input of an
  activation after the add, RegNet's act3) or else its output.

Every sum is checked: a sublayer whose z + f(z) differs from the model's own sum (relative error over an image
above `SUM_RTOL`) raises `ResidualSumError` naming the block, since its statistics would be wrong numbers.

Per position and image: ratio = ‖z‖ / ‖f(z)‖ (L2 over channels), and the cosine between the sum (the sublayer's
output) and f. Positions come from the tap's layout (`seelike.models.layout`): token sequences are kept per token
(CLS and registers as their own token types, from the tap's prefix tokens), maps (channels-first or channels-last)
are pooled over positions (the spatial size changes between stages); a block whose branches are all token
sequences is kept per token, any other is pooled. Everything is reduced inside the forward hooks in float64, over
slices of the batch; no activation is copied or outlives its block (the "branches" chain computes its running sum
s_i once, in the activations' dtype).

A zero branch (‖f‖ = 0) gives ratio = inf, counted in `n_inf`; 0/0 is undefined, counted in `n_undefined` and
left out of the mean; a zero vector has no cosine (counted in `cosine_n_undefined`). `ratio_mean` is inf when
any ratio is inf, NaN only when no ratio at all was defined. `ratio_se` is its standard error over images (the
images are the independent units: a pooled map's positions are summed per image, `_Acc.ratio_se`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from seelike.analyses.stream import Progress, stream
from seelike.device import exact_fp32, place_model

__all__ = ["ResidualSumError", "SkipStats", "ratio_and_cosine", "skip_statistics"]


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

# The largest relative difference (per image, ‖z + f - s‖ / ‖s‖) between a sublayer's z + f(z) and the model's own
# sum that is taken as the same sum (float32 adds in another order); above it the read is wrong.
SUM_RTOL = 1e-4


class ResidualSumError(RuntimeError):
    """z + f(z) is not the model's sum at a block: the taps read a wrong branch or identity path there."""


def _rows(tap, t: torch.Tensor) -> torch.Tensor:
    """(b, P, C) rows of a tap's activation chunk: token sequences as they are (prefix tokens included), maps
    (nchw / nhwc) as their positions, row-major (`seelike.models.layout.positions`)."""
    from seelike.models.layout import positions

    if tap.layout == "tokens" and t.ndim == 3:
        return t
    if tap.layout in ("nchw", "nhwc"):
        return positions(tap, t)
    raise ValueError(
        f"tap {tap.name!r} has layout {tap.layout!r} {tuple(t.shape[1:])}: skip statistics need token sequences "
        "or feature maps"
    )


def _unit_statistics(
    z: torch.Tensor,
    f: torch.Tensor,
    s: torch.Tensor | None,
    pooled: bool,
    tap=None,
):
    """(ratio, cosine, ‖z‖, ‖f‖), each (B, P) float64, of one residual sublayer, computed over slices of images,
    and the largest per-image relative error ‖z + f - s‖ / ‖s‖ (0 when `s` is None: s = z + f).

    `tap` (the branch's tap) gives the layout: rows are its tokens or map positions (`_rows`); without a tap, maps
    are (B, C, H, W). Per token (P = N) unless `pooled`: positions as rows, (B·P, 1). Each image's numbers are
    those of one unsliced call (reductions run per position).
    """
    per_image = max(1, z[:1].numel())
    step = max(1, CHUNK_VALUES // per_image)
    parts, err = [], 0.0
    for i in range(0, z.shape[0], step):
        zc, fc = z[i : i + step], f[i : i + step]
        sc = zc + fc if s is None else s[i : i + step]
        if tap is not None:
            zc, fc, sc = (_rows(tap, t) for t in (zc, fc, sc))
        elif pooled:  # (b, C, H, W) → positions
            zc, fc, sc = (
                t.movedim(1, -1).reshape(t.shape[0], -1, t.shape[1]) for t in (zc, fc, sc)
            )
        if s is not None:
            d = (zc.double() + fc.double() - sc.double()).flatten(1).norm(dim=1)
            ref = sc.double().flatten(1).norm(dim=1).clamp_min(1e-30)
            err = max(err, float((d / ref).max()))
            del d, ref
        if pooled:  # positions as rows, pooled into one column
            zc, fc, sc = (t.reshape(-1, 1, t.shape[-1]) for t in (zc, fc, sc))
        parts.append(_ratio_cosine_norms(zc, fc, sc))
        del zc, fc, sc
    return (*(torch.cat(p) for p in zip(*parts, strict=True)), err)


@dataclass
class _Acc:
    """Sums over images of per-position statistics (arrays over positions; length 1 when pooled).

    For the standard error of `ratio_mean` over images, per image i: S_i = the sum of its finite ratios at the
    position (pooled: over all its map positions), N_i = their count; `img_ss`, `img_sn`, `img_nn` are Σ S_i²,
    Σ S_i N_i, Σ N_i² and `n_img` the number of images (`ratio_se`)."""

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
    img_ss: np.ndarray
    img_sn: np.ndarray
    img_nn: np.ndarray
    n_img: np.ndarray

    @classmethod
    def zeros(cls, p: int) -> _Acc:
        return cls(*(np.zeros(p) for _ in range(14)))

    def add(
        self,
        ratio: torch.Tensor,
        cos: torch.Tensor,
        nz: torch.Tensor,
        nf: torch.Tensor,
        images: int | None = None,
    ) -> None:
        """ratio, cos, nz, nf: (B, P) float64 (P = positions kept apart; pooled inputs come as (B·HW, 1), image
        by image: `images` = B then, default the number of rows)."""
        r, c = ratio.cpu().numpy(), cos.cpu().numpy()
        fin = np.isfinite(r)
        fr = np.where(fin, r, 0.0)
        self.ratio_sum += fr.sum(0)
        self.ratio_n += fin.sum(0)
        # per-image sums and counts (B, P): pooled rows are regrouped by image
        b = r.shape[0] if images is None else int(images)
        s_i = fr.reshape(b, -1, r.shape[1]).sum(1)
        n_i = fin.reshape(b, -1, r.shape[1]).sum(1).astype(np.float64)
        self.img_ss += (s_i * s_i).sum(0)
        self.img_sn += (s_i * n_i).sum(0)
        self.img_nn += (n_i * n_i).sum(0)
        self.n_img += b
        self.n_inf += np.isinf(r).sum(0)
        self.n_undefined += np.isnan(r).sum(0)
        cf = np.isfinite(c)
        self.cos_sum += np.where(cf, c, 0.0).sum(0)
        self.cos_n += cf.sum(0)
        self.cos_undefined += (~cf).sum(0)
        self.nz_sum += nz.cpu().numpy().sum(0)
        self.nf_sum += nf.cpu().numpy().sum(0)
        self.n += r.shape[0]

    def ratio_se(self) -> np.ndarray:
        """Standard error over images of the finite-ratio mean R = Σ S_i / Σ N_i, per position: the
        ratio-estimator (linearisation) variance n/(n−1) · Σ (S_i − R N_i)² / (Σ N_i)², images independent. It
        is SD / √n of the per-image ratios when every image has one finite ratio (per token), and weighs an
        image's positions together when pooled (they are not independent). NaN with fewer than two images
        or no finite ratio."""
        m, tot = self.n_img, self.ratio_n
        with np.errstate(divide="ignore", invalid="ignore"):
            r = self.ratio_sum / tot
            ss = self.img_ss - 2 * r * self.img_sn + r * r * self.img_nn
            se = np.sqrt(np.maximum(ss, 0.0) * m / (m - 1)) / tot
        return np.where((m > 1) & (tot > 0), se, np.nan)


@dataclass
class SkipStats:
    family: str
    accs: dict[tuple[int, str, str], _Acc] = field(
        default_factory=dict
    )  # (block, unit, branch) → sums, in forward order
    # per (block, unit, branch): the token type of each position kept apart, None when pooled over positions
    types: dict[tuple[int, str, str], list[str] | None] = field(default_factory=dict)
    token_types: list[str] = field(
        default_factory=list
    )  # the first per-token sublayer's (ViT: every block's)
    n_images: int = 0

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per sublayer × token (per-token sublayers) or per sublayer (pooled: token = -1,
        type 'spatial'). `sublayer` counts residual sublayers in forward order. `ratio_se`: the standard error
        over images of `ratio_mean` (`_Acc.ratio_se`; NaN where the mean is inf)."""
        rows = []
        for sub, ((block, unit, branch), a) in enumerate(self.accs.items()):
            types = self.types.get((block, unit, branch))
            ses = a.ratio_se()
            for p in range(len(a.n)):
                with np.errstate(divide="ignore", invalid="ignore"):
                    mean = a.ratio_sum[p] / a.ratio_n[p] if a.ratio_n[p] else np.nan
                se = ses[p]
                if a.n_inf[p]:
                    mean, se = np.inf, np.nan
                rows.append(
                    {
                        "family": self.family,
                        "block": block,
                        "unit": unit,
                        "branch": branch,
                        "sublayer": sub,
                        "token": p if types else -1,
                        "token_type": types[p] if types else "spatial",
                        "ratio_mean": float(mean),
                        "ratio_se": float(se),
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


def _token_types(model: nn.Module, n_tokens: int, n_prefix: int | None = None) -> list[str]:
    """cls / register / patch per token; `n_prefix` (the tap's prefix tokens; default the model's): a count other
    than the model's own (CaiT and XCiT blocks run before the CLS token is added: none) is labelled as it is."""
    declared = int(getattr(model, "num_prefix_tokens", 0) or 0)
    prefix = declared if n_prefix is None else int(n_prefix)
    has_cls = getattr(model, "cls_token", None) is not None
    types = []
    for i in range(prefix):
        if prefix == declared:
            types.append("cls" if (has_cls and i == 0) else "register")
        else:
            types.append("prefix")
    return types + ["patch"] * (n_tokens - prefix)


def _unit_of(tap) -> str:
    return tap.name.rsplit(".", 1)[0]


@dataclass
class _Unit:
    """One residual block: where its input is read and what its sublayers are."""

    name: str  # tap-name prefix and module path of the block
    block: int
    taps: dict[
        str, object
    ]  # role → tap: sublayers: branch kinds and sum kinds; branches: shortcut, branch1.., end
    branch_names: list[
        str
    ]  # sublayer names in order (ViT: attn, mlp; branches: branch1, branch2, ...)
    per_token: bool = True


def _plan(fam, all_taps) -> list[_Unit]:
    """The residual blocks of a model from its family record and its taps."""
    by_block: dict[str, list] = {}
    for t in all_taps:
        if t.block is not None:
            by_block.setdefault(_unit_of(t), []).append(t)
    units = []
    for name, taps in by_block.items():
        kinds: dict[str, list] = {}
        for t in taps:
            kinds.setdefault(t.kind, []).append(t)
        block = int(taps[0].block)
        if fam.residual == "sublayers":
            pairs = fam.residual_pairs
            if not all(b in kinds and s in kinds for b, s in pairs):
                continue
            roles = {k: kinds[k][0] for pair in pairs for k in pair}
            per_token = all(roles[b].layout == "tokens" for b, _ in pairs)
            units.append(_Unit(name, block, roles, [b for b, _ in pairs], per_token))
        elif fam.residual == "unit":
            if "branch" not in kinds:  # EfficientNet: not every block has a skip
                continue
            roles = {"branch": kinds["branch"][0]}
            if "shortcut" in kinds:
                roles["shortcut"] = kinds["shortcut"][0]
            units.append(_Unit(name, block, roles, ["residual"], False))
        elif fam.residual == "branches":
            branches = kinds.get("branch", [])
            end = (kinds.get("sum") or kinds.get("block") or [None])[0]
            if not branches or end is None:
                continue
            roles = {f"f{i}": t for i, t in enumerate(branches)}
            roles["end"] = end
            if "shortcut" in kinds:
                roles["shortcut"] = kinds["shortcut"][0]
            per_token = all(t.layout == "tokens" for t in [*branches, end])
            units.append(
                _Unit(name, block, roles, [t.name.rsplit(".", 1)[1] for t in branches], per_token)
            )
    return units


def _hold(t: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """A reference to an activation and its version: statistics are computed as soon as a unit's z and f(z)
    have both fired, before the in-place add that follows in timm ResNets, so nothing is copied. Inference
    tensors have no version counter: those are copied."""
    try:
        return t, t._version
    except RuntimeError:
        return t.clone(), None


class _SkipReader:
    """The hooks of `skip_statistics`: per residual unit, what has fired of its z and f(z) in the current
    forward (`held`, by role) and which sublayer comes next (`step`); each sublayer's statistics are taken as
    soon as both are known and added to `stats`. One handler per residual structure of the family record:
    `sublayers`, `unit`, `branches`."""

    def __init__(self, model: nn.Module, fam, units: list[_Unit]):
        self.model, self.fam = model, fam
        self.units = {u.name: u for u in units}
        self.role_of = {t.name: (u.name, role) for u in units for role, t in u.taps.items()}
        self.taps = [t for u in units for t in u.taps.values()]
        self.stats = SkipStats(fam.name)
        self.held: dict[str, dict[str, tuple[torch.Tensor, int | None]]] = {
            u: {} for u in self.units
        }
        self.step: dict[str, int] = dict.fromkeys(self.units, 0)
        self.handler = {"sublayers": self.sublayers, "unit": self.unit, "branches": self.branches}[
            fam.residual
        ]

    def observers(self, mods: dict[str, nn.Module]):
        """Hooks on every unit's input (`seelike.models.taps.hooks`): a new forward of the unit starts."""
        return [(mods[u], "input", lambda a, u=u: self.unit_input(u, a[0])) for u in self.units]

    def unit_input(self, unit: str, x: torch.Tensor) -> None:
        self.held[unit] = {"input": _hold(x)}
        self.step[unit] = 0

    def on_tap(self, tap, t: torch.Tensor) -> None:
        name, role = self.role_of[tap.name]
        self.handler(self.units[name], role, t)

    def get(self, unit: str, kind: str) -> torch.Tensor:
        t, version = self.held[unit][kind]
        if version is not None and t._version != version:
            raise RuntimeError(
                f"{unit}: the {kind} activation was modified in place before its skip statistics were "
                "computed; this model family needs its own tap order"
            )
        return t

    def per_image(self, a: torch.Tensor, like: torch.Tensor, what: str, u: _Unit) -> torch.Tensor:
        """`a` in the shape of `like` (the same values per image: Swin's (B, H, W, C) ↔ (B, HW, C))."""
        if a.shape == like.shape:
            return a
        if a.shape[0] != like.shape[0] or a[:1].numel() != like[:1].numel():
            raise ResidualSumError(
                f"{u.name}: {what} {tuple(a.shape)} cannot be added to {tuple(like.shape)} "
                f"(family {self.fam.name!r})"
            )
        return a.reshape(like.shape)

    def acc(self, u: _Unit, branch: str, z, f, s, per_token: bool, tap) -> None:
        ratio, cos, nz, nf, err = _unit_statistics(z, f, s, not per_token, tap)
        if err > SUM_RTOL:
            raise ResidualSumError(
                f"{u.name}: z + f(z) of its {branch!r} sublayer differs from the model's sum by {err:.2e} "
                f"(relative, > {SUM_RTOL:g}) in family {self.fam.name!r}: the taps do not read this block's "
                "identity path and branch, so its skip statistics would be wrong numbers"
            )
        stats = self.stats
        key = (u.block, u.name, branch)
        if key not in stats.accs:
            stats.accs[key] = _Acc.zeros(ratio.shape[1])
            types = None
            if per_token:
                types = _token_types(self.model, ratio.shape[1], tap.num_prefix_tokens)
                if not stats.token_types:
                    stats.token_types = types
            stats.types[key] = types
        stats.accs[key].add(ratio, cos, nz, nf, images=z.shape[0])

    def sublayers(self, u: _Unit, role: str, t: torch.Tensor) -> None:
        """ViT-style: the branch tap of pair i holds f; its sum tap closes the sublayer (z = previous sum)."""
        pairs = self.fam.residual_pairs
        i = self.step[u.name]
        if i >= len(pairs):
            return
        branch, sum_kind = pairs[i]
        if role == branch:
            self.held[u.name]["f"] = _hold(t)
        elif role == sum_kind:
            if "f" not in self.held[u.name]:
                raise ResidualSumError(
                    f"{u.name}: its {sum_kind!r} sum fired before its {branch!r} branch "
                    f"(family {self.fam.name!r})"
                )
            z, f = self.get(u.name, "input"), self.get(u.name, "f")
            z, s = self.per_image(z, f, "z", u), self.per_image(t, f, "the sum", u)
            self.acc(u, branch, z, f, s, u.per_token, u.taps[branch])
            self.held[u.name] = {"input": _hold(t)}  # the next sublayer's z
            self.step[u.name] = i + 1

    def unit(self, u: _Unit, role: str, t: torch.Tensor) -> None:
        """CNN unit: z (the shortcut projection, or the unit input) and f (the branch) fire before the add."""
        self.held[u.name][role] = _hold(t)
        z_kind = "shortcut" if "shortcut" in u.taps else "input"
        if {"branch", z_kind} <= self.held[u.name].keys():
            z, f = self.get(u.name, z_kind), self.get(u.name, "branch")
            if z.shape != f.shape:
                raise RuntimeError(
                    f"{u.name}: shortcut {tuple(z.shape)} and branch {tuple(f.shape)} differ"
                )
            self.acc(u, "residual", z, f, None, False, u.taps["branch"])
            self.held[u.name] = {}

    def branches(self, u: _Unit, role: str, t: torch.Tensor) -> None:
        """z0 + f1 + f2 + ...: each sublayer as soon as its z and f are known; the last sum against the end."""
        if role != "end":
            self.held[u.name][role] = _hold(t)
        while self._next_branch(u):
            pass
        if role == "end":
            self._close_branches(u, t)

    def _next_branch(self, u: _Unit) -> bool:
        """The statistics of sublayer `step` once its z and f have fired (then True), its sum s = z + f kept as
        the next sublayer's z."""
        h, i = self.held[u.name], self.step[u.name]
        if i >= len(u.branch_names):
            return False
        z_role = "s" if i else ("shortcut" if "shortcut" in u.taps else "input")
        if z_role not in h or f"f{i}" not in h:
            return False
        f = self.get(u.name, f"f{i}")
        z = self.per_image(self.get(u.name, z_role), f, "z", u)
        self.acc(u, u.branch_names[i], z, f, None, u.per_token, u.taps[f"f{i}"])
        s = (
            z + f
        )  # the model's own add (same operands, same dtype), checked against the block's sum
        for k in (z_role, f"f{i}"):
            h.pop(k, None)
        h["s"] = (s, None)
        self.step[u.name] = i + 1
        return True

    def _close_branches(self, u: _Unit, t: torch.Tensor) -> None:
        """The block's sum (or output) `t` has fired: every sublayer must be done and their sum equal `t`."""
        n = len(u.branch_names)
        if self.step[u.name] < n:
            missing = [u.branch_names[i] for i in range(self.step[u.name], n)]
            raise ResidualSumError(
                f"{u.name}: its output fired before its identity path or its branches {missing} "
                f"(family {self.fam.name!r})"
            )
        s = self.per_image(self.held[u.name]["s"][0], t, "the sum of its branches", u)
        err = _relative_error(s, t)
        if err > SUM_RTOL:
            raise ResidualSumError(
                f"{u.name}: its identity path plus its branches {u.branch_names} differs from the block's "
                f"{'sum' if u.taps['end'].kind == 'sum' else 'output'} by {err:.2e} (relative, > {SUM_RTOL:g}) "
                f"in family {self.fam.name!r}: something other than the residual adds runs in this block, so "
                "its skip statistics would be wrong numbers"
            )
        self.held[u.name] = {}


def _skip_units(model: nn.Module, fam, all_taps) -> list[_Unit]:
    """The residual units whose statistics are read, or a ValueError naming why the model has none."""
    from seelike.models.families import analysis_support

    reason = analysis_support(fam.name, all_taps, "skip")
    units = _plan(fam, all_taps) if reason is None else []
    if reason is None and not units:
        reason = f"none of its blocks has the taps of a residual sublayer (family {fam.name!r})"
    if reason is not None:
        raise ValueError(
            f"skip-connection statistics cannot be read from {type(model).__name__}: {reason}; "
            "drop it from `skip.models`"
        )
    return units


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
    """Stream images through `model` and accumulate skip-connection statistics for every residual sublayer
    (`seelike.analyses.stream`: at most `n_images` images, `progress` after each batch; `device`:
    `seelike.device.analysis_device`, default where the model is).

    Reads the residual structure of the model's family record (`Family.residual`: sublayers, unit or branches);
    a model whose family has none, or no readable branch, raises ValueError with the reason
    (`seelike.models.families.analysis_support`). A block whose z + f(z) is not the model's own sum raises
    `ResidualSumError`.
    """
    from seelike.models.families import family_of
    from seelike.models.taps import discover_taps, hooks, record_taps

    fam = family_of(model)
    device = place_model(model, device)
    reader = _SkipReader(model, fam, _skip_units(model, fam, discover_taps(model)))
    stats = reader.stats
    # the unit-input hooks first: a unit's input resets its state before any of its taps fires
    with (
        hooks(reader.observers(dict(model.named_modules()))),
        record_taps(model, reader.taps, reader.on_tap),
    ):
        for batch in stream(batches, device, n_images=n_images, progress=progress):
            model(batch.x)
            stats.n_images += len(batch.x)
    if stats.n_images == 0:
        raise ValueError("no images were given: the batch iterable was empty")
    return stats


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over images of ‖a - b‖ / ‖b‖, in float64 over slices of images."""
    step = max(1, CHUNK_VALUES // max(1, b[:1].numel()))
    err = 0.0
    for i in range(0, b.shape[0], step):
        ac, bc = a[i : i + step].double().flatten(1), b[i : i + step].double().flatten(1)
        err = max(err, float(((ac - bc).norm(dim=1) / bc.norm(dim=1).clamp_min(1e-30)).max()))
    return err
