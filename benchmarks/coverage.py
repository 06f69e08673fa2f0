"""Measured support matrix: which analysis works, is refused at dry run, crashes or gives a wrong number, per timm
architecture (issue #19: "analyses that apply or refuse at dry run, never a wrong number").

Every architecture is built at random init (timm's, seeded; parameters that timm initialises to exactly zero —
zero-init residual norms, skip-init gains, zero-init projections — are redrawn, so every branch is live and a
finite skip ratio is the right answer), small (depth / width kwargs) and at low resolution where it accepts one,
and run on a few real images (the ImageNet sample in ../shared/data, `SEELIKE_IMAGENET_SAMPLE` to point
elsewhere; random images when it is absent or with `--random-images`), resized to the model's input size and
normalised with its own mean / std.

Per architecture and analysis, the dry-run decision is asked first, exactly as the workflow asks it:

    structure = model_structure(spec)            # weightless build, taps with layouts
    analysis_support(structure.family, structure.taps, analysis)

A reason → `refused (reason)`. Otherwise the analysis's package function runs as its rule calls it
(seelike/rules/model_passes.py) and its output is checked against invariants that hold whatever the weights:

- block outputs: taps of a kind in `BLOCK_OUTPUT_KINDS`, at least 2;
- cka (`seelike.api.compare`, the in-memory path of the cache + cka rules): the self-CKA matrix is finite,
  symmetric, has a unit diagonal (0 for the constant taps it lists) and values in [-0.01, 1.01];
- attention (`attention_distances`): every attention row the module exposes (`attn_drop`'s input) sums to 1,
  and every mean distance is finite, ≥ 0 and ≤ the image diagonal;
- erf (`choose_erf_taps` + `effective_receptive_fields` + `erf_table`): each map is (H, W), finite, ≥ 0,
  has mass, its mass centroid lies within one tap stride of the centre position's pixel centre, and it equals
  (max error 1e-3 of its peak) an independent reference that reads the centre through the tap's layout
  (`seelike.models.layout.positions`);
- localisation (`localisation_maps`): its grid equals the tap's own map / token grid, CKA finite in
  [-0.01, 1.01];
- probes (`plan_probe_features` + `extract_probe_features`): `mean_spatial` features have the tap's channel
  count (C of its layout), per-token features (n, G, C) with G the tap's grid, all finite;
- skip (`skip_statistics`, which itself raises unless z + f(z) is the tapped sum): every ratio finite, every
  cosine in [-1, 1].

Outcome per cell: works / refused (reason) / crash (exception type: message head) / wrong (the failed check).

    python benchmarks/coverage.py                       # full sweep (≈ 60 architectures), docs/coverage.md
    python benchmarks/coverage.py --subset ci --out /tmp/ci.md   # ≈ 10, every layout and family record
    python benchmarks/coverage.py --only swin convnext  # architectures whose label or arch contains a word

Exit status 1 when any cell crashes or is wrong, or an architecture lacks block outputs or self-CKA.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

ANALYSES = ("block_outputs", "cka", "attention", "erf", "localisation", "probes", "skip")
# the `analysis` argument of analysis_support for each column (block outputs are not an analysis)
SUPPORT_NAME = {
    "cka": "cka",
    "attention": "attention",
    "erf": "erf",
    "localisation": "localisation",
    "probes": "probes",
    "skip": "skip",
}
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
TOL = 1e-3  # fp32 CKA / softmax sums


@dataclass(frozen=True)
class Arch:
    label: str  # the architecture family a user knows it by
    arch: str  # timm name
    kwargs: dict = field(default_factory=dict)
    size: int = 64  # input side (the model is built for it where it takes img_size)
    ci: bool = False  # in the CI subset

    def spec(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "source": "timm",
            "kwargs": dict(self.kwargs),
            "data_config": {"input_size": [3, self.size, self.size]},
        }


def _a(label, arch, size=64, ci=False, **kwargs) -> Arch:
    return Arch(label, arch, kwargs, size, ci)


D4 = (1, 1, 2, 1)  # stage depths of the shrunk hierarchical models
# fmt: off
ARCHS: list[Arch] = [
    # ---- plain ViT-like (tokens, prefix tokens)
    _a("ViT", "vit_tiny_patch16_224", ci=True, img_size=64, depth=4),
    _a("DeiT (distilled)", "deit_tiny_distilled_patch16_224", img_size=64, depth=4),
    _a("DeiT-III", "deit3_small_patch16_224", img_size=64, depth=4),
    _a("EVA-02", "eva02_tiny_patch14_224", 56, img_size=56, depth=4),
    _a("FlexiViT", "flexivit_small", img_size=64, depth=4),
    _a("relpos ViT", "vit_relpos_small_patch16_224", img_size=64, depth=4),
    _a("DINOv2 (reg4)", "vit_small_patch14_reg4_dinov2", 56, ci=True, img_size=56, depth=4),
    _a("BEiT", "beit_base_patch16_224", img_size=64, depth=4, embed_dim=192, num_heads=3),
    _a("CaiT", "cait_xxs24_224", ci=True, img_size=64, depth=4),
    _a("XCiT", "xcit_nano_12_p16_224", ci=True, img_size=64, depth=4),
    _a("ConViT", "convit_tiny", img_size=64, depth=4),
    _a("TNT", "tnt_s_patch16_224", img_size=64, depth=4),
    _a("SAM-ViT", "samvit_base_patch16", img_size=64, depth=4, embed_dim=192, num_heads=3,
       global_attn_indexes=(1, 3), window_size=2),
    # ---- CNNs with their own family records
    _a("ResNet", "resnet18", ci=True),
    _a("ResNetV2", "resnetv2_50", ci=True, layers=(1, 1, 1, 1)),
    _a("BiT (ResNetV2)", "resnetv2_50x1_bit"),
    _a("EfficientNet", "efficientnet_b0"),
    _a("EfficientNet-Lite", "tf_efficientnet_lite0"),
    _a("MobileNetV2", "mobilenetv2_050", ci=True),
    _a("MobileNetV3", "mobilenetv3_small_050"),
    # ---- hierarchical / other families (timm_stages)
    _a("ConvNeXt", "convnext_atto", ci=True, depths=D4),
    _a("ConvNeXt-V2", "convnextv2_atto", depths=D4),
    _a("Swin", "swin_tiny_patch4_window7_224", ci=True, img_size=64, window_size=4, depths=D4,
       embed_dim=48, num_heads=(2, 2, 4, 8)),
    _a("SwinV2", "swinv2_tiny_window8_256", img_size=64, window_size=4, depths=D4, embed_dim=48,
       num_heads=(2, 2, 4, 8)),
    _a("MaxViT", "maxvit_rmlp_pico_rw_256", img_size=64),
    _a("CoAtNet", "coatnet_nano_rw_224", img_size=64),
    _a("PVT-v2", "pvt_v2_b0", ci=True),
    _a("CoaT", "coat_lite_tiny", img_size=64),
    _a("Twins-SVT", "twins_svt_small", depths=D4),
    _a("Twins-PCPVT", "twins_pcpvt_small", depths=D4),
    _a("PiT", "pit_ti_224", img_size=64),
    _a("LeViT", "levit_128s", img_size=64),
    _a("MobileViT", "mobilevit_xxs"),
    _a("EfficientFormer", "efficientformer_l1", 224),  # img_size=64 fails in timm's own forward
    _a("EfficientFormerV2", "efficientformerv2_s0", img_size=64),
    _a("CrossViT", "crossvit_tiny_240", 240),
    _a("PoolFormer", "poolformer_s12"),
    _a("FastViT", "fastvit_t8"),
    _a("RepViT", "repvit_m0_9"),
    _a("HGNetV2", "hgnetv2_b0"),
    _a("RegNetX", "regnetx_002"),
    _a("RegNetY", "regnety_002"),
    _a("DenseNet", "densenet121"),
    _a("VGG", "vgg11"),
    _a("Inception-v3", "inception_v3", 96),
    _a("Xception", "xception41"),
    _a("HRNet", "hrnet_w18_small"),
    _a("GhostNet", "ghostnet_100"),
    _a("MLP-Mixer", "mixer_s16_224", img_size=64),
    _a("ResMLP", "resmlp_12_224", img_size=64),
    _a("gMLP", "gmlp_ti16_224", img_size=64),
    _a("DLA", "dla46_c"),
    _a("CSPNet (CSPResNet)", "cspresnet50"),
    _a("CSPNet (CS3Darknet)", "cs3darknet_focus_s"),
    _a("NFNet (NF-RegNet)", "nf_regnet_b0"),
    _a("NFNet (NF-ResNet)", "nf_resnet26"),
    _a("Res2Net", "res2net50_14w_8s"),
    _a("ReXNet", "rexnet_100"),
    _a("DPN", "dpn48b"),
    _a("EdgeNeXt", "edgenext_xx_small"),
    _a("TinyViT", "tiny_vit_5m_224", 224),
    _a("DaViT", "davit_tiny", depths=D4),
    _a("FocalNet", "focalnet_tiny_srf"),
    _a("Hiera", "hiera_tiny_224", ci=True, img_size=(64, 64)),
    _a("MViTv2", "mvitv2_tiny", img_size=64),
    _a("VOLO", "volo_d1_224", img_size=64),
    _a("EfficientViT (MIT)", "efficientvit_b0"),
    _a("EfficientViT (MSRA)", "efficientvit_m0", img_size=64),
    _a("GCViT", "gcvit_xxtiny", img_size=64),
    _a("NesT", "nest_tiny", img_size=64),
    _a("Visformer", "visformer_tiny", img_size=64),
    _a("MambaOut", "mambaout_femto"),
    _a("StarNet", "starnet_s1"),
    _a("InceptionNeXt", "inception_next_atto"),
]
# fmt: on


def select(subset: str, only: list[str] | None = None) -> list[Arch]:
    archs = [a for a in ARCHS if a.ci] if subset == "ci" else list(ARCHS)
    if only:
        words = [w.lower() for w in only]
        archs = [a for a in archs if any(w in a.label.lower() or w in a.arch for w in words)]
    return archs


# ------------------------------------------------------------------------------------------------ images
def load_images(
    n: int, random_images: bool = False, side: int = 256
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(n, 3, side, side) float images in [0, 1] (centre-cropped squares), labels, and where they came from:
    n classes spread over the ImageNet sample, else seeded uniform noise."""
    root = Path(os.environ.get("SEELIKE_IMAGENET_SAMPLE", DEFAULT_SAMPLE))
    if not random_images and root.is_dir():
        from PIL import Image

        classes = sorted(p for p in root.iterdir() if p.is_dir())
        if len(classes) >= n:
            picks = [classes[round(i * len(classes) / n)] for i in range(n)]
            ims, labels = [], []
            for d in picks:
                f = min(d.iterdir())
                im = Image.open(f).convert("RGB")
                s = min(im.size)
                left, top = (im.size[0] - s) // 2, (im.size[1] - s) // 2
                im = im.crop((left, top, left + s, top + s)).resize((side, side), Image.BILINEAR)
                ims.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
                labels.append(classes.index(d))
            x = torch.stack(ims).float() / 255.0
            return x, torch.tensor(labels), f"ImageNet sample ({root}), {n} classes"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, side, side, generator=g), torch.arange(n) % 2, "random uniform images"


def model_input(raw: torch.Tensor, model, size: int) -> torch.Tensor:
    """The images resized to the model's input and normalised with its mean / std."""
    import torch.nn.functional as F

    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
    x = F.interpolate(raw, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ((x - mean) / std).contiguous()


# ------------------------------------------------------------------------------------------------ models
def build(a: Arch):
    """The model as the rules build it (`seelike.models.load.create_model`, random init), with timm's
    exact-zero initialisations redrawn (module docstring)."""
    from seelike.models.load import create_model

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model({**a.spec(), "source": "train"})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() and not p.any():
                if p.ndim <= 1:  # a norm's weight or a gain: 1 ± noise
                    p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
                else:  # a weight matrix / kernel
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model.eval()


# ------------------------------------------------------------------------------------------------ cells
class Wrong(Exception):
    """A check on an analysis's output failed."""


@dataclass
class Cell:
    status: str  # works, refused, crash, wrong
    detail: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.status} ({self.detail})" if self.detail else self.status


@dataclass
class ArchResult:
    arch: Arch
    family: str = "?"
    layouts: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)
    seconds: float = 0.0


def _head(e: BaseException, n: int = 160) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:n]}{'…' if len(msg) > n else ''}"


def _grid_at(tap, hw: tuple[int, int]) -> tuple[int, int] | None:
    """The tap's positions grid at input size `hw` (the probe ran at `tap.probe_hw`)."""
    if not tap.spatial or tap.grid_hw is None:
        return None
    gh, gw = tap.grid_hw
    ph, pw = tap.probe_hw or hw
    if (ph, pw) == tuple(hw):
        return int(gh), int(gw)
    return max(1, round(gh * hw[0] / ph)), max(1, round(gw * hw[1] / pw))


def _channels(tap) -> int | None:
    """C of a tap's per-image activation, from its layout."""
    shape = tap.shape or ()
    if tap.layout == "nchw":
        return int(shape[0])
    if tap.layout in ("nhwc", "tokens"):
        return int(shape[-1])
    if tap.layout == "vector":
        return int(shape[0])
    return None


def check_block_outputs(taps) -> str:
    from seelike.models.kinds import BLOCK_OUTPUT_KINDS

    n = sum(t.kind in BLOCK_OUTPUT_KINDS for t in taps)
    if n < 2:
        raise Wrong(f"{n} block-output taps (kinds {sorted({t.kind for t in taps})[:6]})")
    return f"{n}"


def cka_problem(df) -> str | None:
    """What is wrong with a self-CKA frame (taps × taps, `seelike.cka.cka_from_grams`'s), or None."""
    m = df.to_numpy(dtype=np.float64)
    if m.shape[0] != m.shape[1] or list(df.index) != list(df.columns):
        return f"self matrix is {m.shape}, rows ≠ columns"
    if not np.isfinite(m).all():
        return f"{int((~np.isfinite(m)).sum())} non-finite CKA values"
    asym = float(np.abs(m - m.T).max())
    if asym > TOL:
        return f"not symmetric (max |M - Mᵀ| = {asym:.2g})"
    constant = set(df.attrs.get("constant_rows", []))
    bad = [
        (n, d)
        for n, d in zip(df.index, np.diag(m), strict=True)
        if (abs(d) > TOL if n in constant else abs(d - 1) > TOL)
    ]
    if bad:
        return f"diagonal ≠ 1 at {bad[0][0]} ({bad[0][1]:.4g}) and {len(bad) - 1} more"
    # |CKA| ≤ 1 (Cauchy-Schwarz on U-centred Grams); the unbiased estimator is negative for unrelated taps at
    # a few images (≈ ±1/n), so [-0.01, 1.01] would flag correct numbers
    if m.min() < -1 - TOL or m.max() > 1 + TOL:
        return f"values outside [-1, 1]: [{m.min():.3g}, {m.max():.3g}]"
    return None


def check_cka(model, x) -> str:
    from seelike.api import compare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = compare(model, None, x, batch_size=len(x), device="cpu")
    why = cka_problem(df)
    if why:
        raise Wrong(why)
    n_const = len(df.attrs.get("constant_rows", []))
    m = df.to_numpy(dtype=np.float64)
    return f"{len(m)} taps, min {m.min():.2f}" + (f", {n_const} constant" if n_const else "")


def erf_problem(tap, erf: np.ndarray, hw: tuple[int, int]) -> str | None:
    """What is wrong with a tap's ERF map over an input of `hw`, or None: the map is (H, W), finite, ≥ 0, has
    mass, and its mass centroid (pixel centres at i + 0.5) lies within one tap stride of the pixel centre of
    the tap's centre position (gh // 2, gw // 2)."""
    erf = np.asarray(erf, dtype=np.float64)
    if erf.shape != tuple(hw):
        return f"{tap.name}: map {erf.shape} ≠ image {tuple(hw)}"
    if not np.isfinite(erf).all() or (erf < 0).any() or erf.sum() <= 0:
        return f"{tap.name}: map not finite, negative or without mass"
    grid = _grid_at(tap, hw)
    if grid is None:
        return f"{tap.name}: chosen tap has no grid (layout {tap.layout})"
    p = erf / erf.sum()
    cr = float((p.sum(1) * (np.arange(hw[0]) + 0.5)).sum())
    cc = float((p.sum(0) * (np.arange(hw[1]) + 0.5)).sum())
    sh, sw = hw[0] / grid[0], hw[1] / grid[1]
    er, ec = (grid[0] // 2 + 0.5) * sh, (grid[1] // 2 + 0.5) * sw
    if abs(cr - er) > sh or abs(cc - ec) > sw:
        return (
            f"{tap.name} ({tap.layout} {grid[0]}x{grid[1]}): centroid ({cr:.1f}, {cc:.1f}) px, "
            f"centre position at ({er:.1f}, {ec:.1f}) ± ({sh:.0f}, {sw:.0f})"
        )
    return None


def check_attention(model, x, y) -> str:
    from seelike.analyses.attention import attention_distances, attention_sites, read_attention

    worst = [0.0, 0]  # max |row sum - 1|, maps seen
    try:
        sites = attention_sites(model)
    except Exception:  # noqa: BLE001  (the analysis says why below)
        sites = []

    def rows(a: torch.Tensor) -> None:
        # the probabilities exactly where the analysis reads them (CaiT: before the talking-heads mix)
        if a.ndim >= 3 and a.shape[-1] == a.shape[-2]:
            worst[0] = max(worst[0], float((a.double().sum(-1) - 1).abs().max()))
            worst[1] += 1

    handles = [h for site in sites for h in read_attention(site, rows)]
    try:
        res = attention_distances(model, [(x, y)], cls="drop_renorm", n_images=len(x), device="cpu")
    finally:
        for h in handles:
            h.remove()
    df = res.to_frame()
    if df.empty:
        raise Wrong("no block × head rows")
    d = df["mean_distance_px"].to_numpy(dtype=np.float64)
    diag = math.hypot(*x.shape[-2:])
    if not np.isfinite(d).all():
        raise Wrong(f"{int((~np.isfinite(d)).sum())} non-finite mean distances")
    if d.min() < 0 or d.max() > diag + 1e-6:
        raise Wrong(f"distances [{d.min():.3g}, {d.max():.3g}] px outside [0, diagonal {diag:.1f}]")
    if worst[0] > TOL:
        raise Wrong(f"attention rows do not sum to 1 (max |Σ - 1| = {worst[0]:.3g})")
    rows = f", rows sum to 1 in {worst[1]} maps" if worst[1] else ", rows not exposed"
    return f"{df['block'].nunique()} blocks, ≤ {d.max():.1f} px{rows}"


def check_erf(model, x, y, label: str) -> str:
    from seelike.analyses.receptive_field import (
        choose_erf_taps,
        distinct_taps,
        effective_receptive_fields,
        erf_table,
    )
    from seelike.models.taps import discover_taps, tap_family

    family = tap_family(model)
    chosen = choose_erf_taps(discover_taps(model), family, None, ["post", "pre"], label)
    taps = distinct_taps(chosen)
    res = effective_receptive_fields(
        model, [(x, y)], taps, n_images=len(x), channel_reduce="grad_of_mean", device="cpu"
    )
    # as the rule writes it (erf_size rejects non-finite or negative maps)
    erf_table(res, chosen, [0.5, 0.9])
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    for tap in taps:
        why = erf_problem(tap, res.maps[tap.name], hw)
        if why:
            raise Wrong(why)
    # the centroid cannot see a map read on swapped axes (a column of an NHWC map read as NCHW is centred too):
    # every map must equal an independent reference that reads the centre through the tap's layout
    ref = reference_erfs(model, x, taps)
    for tap in taps:
        got, want = np.asarray(res.maps[tap.name], dtype=np.float64), ref[tap.name]
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        if not err <= 1e-3:
            raise Wrong(
                f"{tap.name} ({tap.layout}): map differs from the layout reference by {err:.2g}"
            )
    return f"{len(taps)} taps = layout reference"


def reference_erfs(model, x: torch.Tensor, taps) -> dict[str, np.ndarray]:
    """|∂ mean_c y_c(centre) / ∂ x| summed over colour channels, mean over images, per tap: the centre is
    position (gh // 2, gw // 2) of `seelike.models.layout.positions` (prefix tokens left out), one forward and
    backward per tap (grad_of_mean, the rule's default)."""
    from seelike.models.layout import positions, tap_grid
    from seelike.models.taps import record_taps

    out = {}
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        for tap in taps:
            xi = x.detach().clone().requires_grad_(True)
            got = {}

            def cb(t, a, got=got):
                gh, gw = tap_grid(t, a)
                got["c"] = positions(t, a)[:, (gh // 2) * gw + gw // 2, :].clone()

            with torch.enable_grad(), record_taps(model, [tap], cb):
                model(xi)
                (g,) = torch.autograd.grad(got["c"].mean(1).sum(), xi)
            out[tap.name] = g.detach().abs().sum(1).double().mean(0).numpy()
    finally:
        for p in params:
            p.requires_grad_(True)
    return out


def check_localisation(model, x, y) -> str:
    from seelike.analyses.localisation import localisation_maps
    from seelike.models.taps import discover_taps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = localisation_maps(
            model, [(x, y)], tap=None, tokens=None, device="cpu", n_images=len(x)
        )
    taps = {t.name: t for t in discover_taps(model)}
    tap = taps[res.tap]
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    want = _grid_at(tap, hw)
    got = tuple(int(v) for v in res.grid.grid_hw)
    if want is None or got != want:
        raise Wrong(f"grid {got} ≠ tap {res.tap}'s {tap.layout} grid {want}")
    c = np.asarray(res.cka, dtype=np.float64)
    if c.shape[-1] != want[0] * want[1]:
        raise Wrong(f"map has {c.shape[-1]} positions, grid {want} has {want[0] * want[1]}")
    if not np.isfinite(c).all() or c.min() < -1 - TOL or c.max() > 1 + TOL:
        raise Wrong(f"CKA not finite in [-1, 1]: [{np.nanmin(c):.3g}, {np.nanmax(c):.3g}]")
    return f"{res.tap} {got[0]}x{got[1]} ({tap.layout})"


def check_probes(model, x, y, label: str) -> str:
    import pandas as pd

    from seelike.analyses.probes import extract_probe_features, plan_probe_features
    from seelike.models.taps import discover_taps

    n = len(x)
    n_train = n // 2
    # two classes, n_train // 2 train images each; the rest is the test split
    samples = pd.DataFrame(
        {
            "id": [str(i) for i in range(n)],
            "split": ["train"] * n_train + ["test"] * (n - n_train),
            "label": [i % 2 for i in range(n)],
        }
    )
    cfg = {
        "shots": [n_train // 2],
        "n_test": None,
        "tap_kinds": ["embed", "stem", "block", "out"],
        "taps": {},
        "token_taps": "last",
        "aggregations": None,
        "batch_size": n,
    }
    plan = plan_probe_features(model, samples, cfg, label, 0)
    idx = torch.tensor(plan.rows["id"].astype(int).to_numpy())
    labels = torch.tensor(plan.rows["label"].to_numpy())
    taps = {t.name: t for t in discover_taps(model)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features"
        meta = extract_probe_features(
            model, [(x[idx], labels)], len(idx), out, plan.taps, plan.token_taps,
            cfg["aggregations"], "cpu",
        )  # fmt: skip
        for rec in meta["taps"]:
            tap = taps[rec["name"]]
            c = _channels(tap)
            aggs = rec.get("aggregations") or []
            if tap.spatial and "mean_spatial" not in aggs:
                raise Wrong(f"{tap.name} ({tap.layout}): no mean_spatial feature ({aggs})")
            for agg in aggs:
                f = np.load(out / f"{int(rec['index']):03d}_{agg}.npy")
                if not np.isfinite(f).all():
                    raise Wrong(f"{tap.name} {agg}: non-finite features")
                if agg in ("mean_spatial", "cls", "mean_all") and f.shape[1:] != (c,):
                    raise Wrong(
                        f"{tap.name} ({tap.layout} {tap.shape}) {agg}: dim {f.shape[1:]} ≠ C = {c}"
                    )
            if rec.get("token"):
                f = np.load(out / f"{int(rec['index']):03d}_token.npy")
                g = _grid_at(tap, (int(x.shape[-2]), int(x.shape[-1])))
                want = (len(idx), g[0] * g[1], c) if g else None
                if want is None or f.shape != want:
                    raise Wrong(f"{tap.name} ({tap.layout}) token features {f.shape} ≠ {want}")
    return f"{len(meta['taps'])} taps, {len(plan.token_taps)} per-token"


def check_skip(model, x, y) -> str:
    from seelike.analyses.skip import skip_statistics

    stats = skip_statistics(model, [(x, y)], n_images=len(x), device="cpu")
    df = stats.to_frame()
    if df.empty:
        raise Wrong("no residual units")
    r = df["ratio_mean"].to_numpy(dtype=np.float64)
    if not np.isfinite(r).all():
        bad = df[~np.isfinite(r)].iloc[0]
        raise Wrong(
            f"{int((~np.isfinite(r)).sum())} non-finite ratios, e.g. {bad['unit']} {bad['branch']}"
        )
    cos = df["cosine_mean"].to_numpy(dtype=np.float64)
    cos = cos[np.isfinite(cos)]
    if len(cos) and (cos.min() < -1 - 1e-6 or cos.max() > 1 + 1e-6):
        raise Wrong(f"cosines outside [-1, 1]: [{cos.min():.3g}, {cos.max():.3g}]")
    units = df[["block", "unit", "branch"]].drop_duplicates()
    return f"{len(units)} branches, ratio {np.median(r):.2g} (median)"


# ------------------------------------------------------------------------------------------------ sweep
def run_arch(a: Arch, raw: torch.Tensor, labels: torch.Tensor, log=print) -> ArchResult:
    from seelike.models.families import model_refusal, model_structure

    t0 = time.time()
    out = ArchResult(a)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = model_structure(a.spec())
        model = build(a)
    except Exception as e:  # noqa: BLE001  (nothing can run: every cell says why)
        cell = Cell("crash", f"build: {_head(e)}")
        out.cells = {k: cell for k in ANALYSES}
        out.seconds = time.time() - t0
        return out
    out.family = structure.family
    from seelike.models.kinds import BLOCK_OUTPUT_KINDS

    out.layouts = ", ".join(
        sorted(
            {
                f"{t.layout}+{t.num_prefix_tokens}" if t.num_prefix_tokens else t.layout
                for t in structure.taps
                if t.kind in BLOCK_OUTPUT_KINDS
            }
        )
    )
    x = model_input(raw, model, a.size)
    checks = {
        "cka": lambda: check_cka(model, x),
        "attention": lambda: check_attention(model, x, labels),
        "erf": lambda: check_erf(model, x, labels, a.arch),
        "localisation": lambda: check_localisation(model, x, labels),
        "probes": lambda: check_probes(model, x, labels, a.arch),
        "skip": lambda: check_skip(model, x, labels),
    }
    try:
        out.cells["block_outputs"] = Cell("works", check_block_outputs(structure.taps))
    except Wrong as e:
        out.cells["block_outputs"] = Cell("wrong", str(e))
    for name, check in checks.items():
        try:
            reason = model_refusal(a.spec(), SUPPORT_NAME[name])
        except Exception as e:  # noqa: BLE001  (a cell of the matrix)
            out.cells[name] = Cell("crash", f"dry run: {_head(e)}")
            continue
        if reason:
            out.cells[name] = Cell("refused", reason)
            continue
        t = time.time()
        try:
            out.cells[name] = Cell("works", check())
        except Wrong as e:
            out.cells[name] = Cell("wrong", str(e))
        except Exception as e:  # noqa: BLE001  (a cell of the matrix)
            where = traceback.extract_tb(e.__traceback__)[-1]
            at = f" [{Path(where.filename).name}:{where.lineno}]"
            out.cells[name] = Cell("crash", _head(e) + at)
        out.cells[name].seconds = time.time() - t
    out.seconds = time.time() - t0
    return out


def sweep(archs: list[Arch], n_images: int = 8, random_images: bool = False, log=print):
    """Every architecture × analysis (module docstring); returns the results and where the images came from."""
    if n_images < 8:
        raise ValueError("at least 8 images: 4 train + 4 test probe images, 4 per CKA minibatch")
    raw, labels, source = load_images(n_images, random_images)
    results = []
    for a in archs:
        r = run_arch(a, raw, labels, log)
        results.append(r)
        bad = [f"{k}={c.status}" for k, c in r.cells.items() if c.status in ("crash", "wrong")]
        slow = max(r.cells, key=lambda k: r.cells[k].seconds)
        log(
            f"{a.label:24s} {a.arch:34s} {r.family:15s} {r.seconds:6.1f}s "
            f"(slowest {slow} {r.cells[slow].seconds:.1f}s)  " + (" ".join(bad) if bad else "ok"),
            flush=True,
        )
    return results, source


def failures(results: list[ArchResult]) -> list[str]:
    """One line per failing cell: crash / wrong anywhere, or no block outputs / self-CKA."""
    out = []
    for r in results:
        for k, c in r.cells.items():
            must = k in ("block_outputs", "cka")
            if c.status in ("crash", "wrong") or (must and c.status != "works"):
                out.append(f"{r.arch.arch} [{k}] {c}")
    return out


# ------------------------------------------------------------------------------------------------ report
def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _short(c: Cell, width: int = 90) -> str:
    s = str(c)
    return s if len(s) <= width else s[: width - 1] + "…"


def to_markdown(results: list[ArchResult], source: str, n_images: int, subset: str) -> str:
    import timm

    total = sum(r.seconds for r in results)
    lines = [
        "# Support matrix: analyses × timm architectures",
        "",
        (
            f"Measured by `benchmarks/coverage.py --subset {subset} --images {n_images}` "
            f"({time.strftime('%Y-%m-%d')}, timm {timm.__version__}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads): {len(results)} architectures at random init on {source}, "
            f"{total:.0f} s in all. Each cell: `works (what was checked)`, `refused (the dry run's reason)`, "
            "`crash (exception: message head [file:line])` or `wrong (the failed check)`; the checks are in the "
            "script's docstring."
        ),
        "",
        "## Per architecture",
        "",
        "| architecture | timm | family | block-output layouts | px | "
        + " | ".join(ANALYSES)
        + " | s |",
        "|" + "---|" * (len(ANALYSES) + 6),
    ]
    for r in results:
        a = r.arch
        cells = [_md(_short(r.cells.get(k, Cell("?")))) for k in ANALYSES]
        lines.append(
            f"| {a.label} | `{a.arch}` | {r.family} | {r.layouts} | {a.size} | "
            + " | ".join(cells)
            + f" | {r.seconds:.1f} |"
        )
    lines += [
        "",
        "## Family record × analysis",
        "",
        "Counts of architectures per outcome: works / refused / crash / wrong.",
        "",
        "| family | archs | " + " | ".join(ANALYSES) + " |",
        "|" + "---|" * (len(ANALYSES) + 2),
    ]
    fams: dict[str, list[ArchResult]] = {}
    for r in results:
        fams.setdefault(r.family, []).append(r)
    for fam, rs in fams.items():
        row = []
        for k in ANALYSES:
            c = Counter(r.cells[k].status for r in rs if k in r.cells)
            row.append(f"{c['works']} / {c['refused']} / {c['crash']} / {c['wrong']}")
        lines.append(f"| {fam} | {len(rs)} | " + " | ".join(row) + " |")
    lines += ["", "## Failures by analysis", ""]
    any_fail = False
    for k in ANALYSES:
        bad = [
            (r, r.cells[k])
            for r in results
            if k in r.cells and r.cells[k].status in ("crash", "wrong")
        ]
        if not bad:
            continue
        any_fail = True
        lines += [f"### {k} ({len(bad)})", ""]
        for r, c in bad:
            lines.append(
                f"- `{r.arch.arch}` ({r.arch.label}, {r.family}): {c.status}: {_md(c.detail)}"
            )
        lines.append("")
    if not any_fail:
        lines.append("None.")
    lines += ["", "## Refusals", ""]
    reasons: dict[tuple[str, str], list[str]] = {}
    for r in results:
        for k, c in r.cells.items():
            if c.status == "refused":
                reasons.setdefault((k, c.detail), []).append(r.arch.label)
    for (k, why), labels in sorted(reasons.items()):
        lines.append(f"- {k}: {_md(why)}: {', '.join(labels)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", choices=("ci", "full"), default="full")
    p.add_argument("--images", type=int, default=8)
    p.add_argument(
        "--out", type=Path, default=None, help="markdown file (default: docs/coverage.md)"
    )
    p.add_argument(
        "--only", nargs="*", default=None, help="architectures whose label / arch contain a word"
    )
    p.add_argument("--random-images", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    archs = select(args.subset, args.only)
    results, source = sweep(archs, args.images, args.random_images)
    md = to_markdown(results, source, args.images, args.subset)
    print(md)
    out = args.out or REPO / "docs" / "coverage.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    bad = failures(results)
    print(f"{len(bad)} failing cells; table written to {out}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
