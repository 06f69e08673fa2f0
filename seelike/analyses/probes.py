"""Linear probes per tap (Figs 11, 13): the probe feature store (one streaming pass per model) and the probe table
(closed-form ridge probes of `seelike.analyses.ridge` fitted per tap, aggregation and shot count).

Aggregations of one tap activation (`aggregate`), read through the tap's layout (`seelike.models.layout`):
token sequences → `cls` (the first prefix token, when the tap has prefix tokens), `mean_spatial` (mean over the
grid positions, prefix tokens left out; only with a token grid), `mean_all` (mean of all tokens); maps of either
layout (NCHW, NHWC) → `pool_final` (adaptive average pool to the final grid, flattened channel-major; skipped when
that is 1×1) and `mean_spatial` (mean over positions); anything else (pooled vectors) → `flat`. Per-token probes
(`token`) use every grid position of chosen taps (`seelike.models.layout.positions`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from seelike.analyses.ridge import (
    DEFAULT_LAMBDAS,
    ProbeDataError,
    ProbeFit,
    fit_probe,
    kshot_indices,
)
from seelike.analyses.stream import Progress, stream, with_extra_meta
from seelike.device import exact_fp32, place_model
from seelike.io import atomic_write, write_json
from seelike.models.kinds import BLOCK_OUTPUT_KINDS
from seelike.models.layout import positions, prefix, tap_grid
from seelike.tables import PROBE_CORRECT, accuracy_contrast, pack_correct

log = logging.getLogger(__name__)


FEATURES_FORMAT = 1


# ------------------------------------------------------------------------------------------------ features
MAP_LAYOUTS = ("nchw", "nhwc")


def final_grid(
    taps: Sequence[Any], grids: dict[str, tuple[int, int] | None]
) -> tuple[int, int] | None:
    """The grid (rows, cols) of the last tap in forward order that has one (`grids`: tap name → its grid at the
    probed input size): the final stage's grid that `pool_final` pools maps to."""
    last = None
    for t in sorted(taps, key=lambda t: t.index):
        if grids.get(t.name) is not None:
            last = tuple(int(v) for v in grids[t.name])  # type: ignore[union-attr]
    return last  # type: ignore[return-value]


def aggregation_names(tap: Any, pool_hw: tuple[int, int] | None) -> list[str]:
    """The aggregations `aggregate` gives for an activation of `tap` (by its layout)."""
    if tap.layout == "tokens":
        return (
            (["cls"] if tap.num_prefix_tokens else [])
            + (["mean_spatial"] if tap.grid_hw is not None else [])
            + ["mean_all"]
        )
    if tap.layout in MAP_LAYOUTS:
        pool = pool_hw is not None and tuple(pool_hw) != (1, 1)
        return (["pool_final"] if pool else []) + ["mean_spatial"]
    if tap.layout in ("vector", "other"):
        return ["flat"]
    raise ValueError(
        f"tap {tap.name!r} has no known layout ({tap.layout!r}): take taps from seelike.models.taps.discover_taps"
    )


def aggregate(
    tap: Any, x: torch.Tensor, pool_hw: tuple[int, int] | None = None
) -> dict[str, torch.Tensor]:
    """Per-image feature vectors (B, d) of one activation `x` of `tap`, one per aggregation (module docstring)."""
    names = aggregation_names(tap, pool_hw)
    out: dict[str, torch.Tensor] = {}
    if "cls" in names:
        out["cls"] = prefix(tap, x)[:, 0]  # type: ignore[index]
    if "pool_final" in names:
        nchw = x if tap.layout == "nchw" else x.permute(0, 3, 1, 2)
        out["pool_final"] = F.adaptive_avg_pool2d(nchw, tuple(pool_hw)).flatten(1)  # type: ignore[arg-type]
    if "mean_spatial" in names:
        out["mean_spatial"] = positions(tap, x).mean(1)
    if "mean_all" in names:
        out["mean_all"] = x.mean(1)
    if "flat" in names:
        out["flat"] = x.reshape(len(x), -1)
    return out


def token_positions(tap: Any, x: torch.Tensor) -> torch.Tensor:
    """(B, G, C): the grid positions of an activation of `tap` (map positions or tokens after the prefix)."""
    if not tap.spatial:
        raise ValueError(
            f"per-token probes need a tap with a spatial map or token grid; {tap.name!r} has layout {tap.layout!r}"
        )
    return positions(tap, x)


def default_probe_taps(taps: Sequence[Any], kinds: Sequence[str] | None) -> list[Any]:
    """Taps whose kind is listed (None: every tap), in forward order."""
    return [t for t in taps if kinds is None or t.kind in kinds]


def normalised_depth(indices: Sequence[int]) -> dict[int, float]:
    """Layer index / number of layers over the probed taps: the first probed tap 0, the last 1."""
    order = sorted({int(i) for i in indices})
    n = len(order)
    return {i: (r / (n - 1) if n > 1 else 1.0) for r, i in enumerate(order)}


class _TapGeometry(NamedTuple):
    taps: list[Any]  # the probed taps, as discovered at the images' size where discovery names them
    shapes: dict[str, list[int]]  # tap name → per-image activation shape
    grids: dict[str, tuple[int, int] | None]  # tap name → its grid (None: not spatial)
    pool_hw: tuple[int, int] | None  # the final grid `pool_final` pools maps to


def _tap_geometry(model: nn.Module, x: torch.Tensor, taps: Sequence[Any]) -> _TapGeometry:
    """Shapes and grids of every tap from one image of `x`: the final grid must be known before pooling
    earlier taps."""
    from seelike.models.taps import discover_taps, record_taps

    all_taps = discover_taps(model, x.shape[-2:])  # layouts and grids at the size of the images
    found = {t.name: t for t in all_taps}
    taps = [found.get(t.name, t) for t in taps]
    shapes: dict[str, list[int]] = {}
    grids: dict[str, tuple[int, int] | None] = {}

    def on_shape(t, a: torch.Tensor) -> None:
        shapes.setdefault(t.name, list(a.shape[1:]))
        grids.setdefault(t.name, tap_grid(t, a) if t.spatial else None)

    with record_taps(model, all_taps, on_shape), torch.inference_mode():
        model(x[:1])
    pool_hw = final_grid(all_taps, grids)
    if any(t.name not in grids for t in taps):  # taps given that discover_taps does not name
        with record_taps(model, taps, on_shape), torch.inference_mode():
            model(x[:1])
    return _TapGeometry(taps, shapes, grids, pool_hw)


def _check_token_taps(taps: Sequence[Any], token_taps: Sequence[str]) -> None:
    names = {t.name for t in taps}
    missing = [n for n in token_taps if n not in names]
    if missing:
        raise ValueError(
            f"per-token taps {missing} are not among the probed taps {sorted(names)[:8]}..."
        )


def _spatial_token_taps(taps: Sequence[Any], token_taps: Sequence[str]) -> list[str]:
    """`token_taps` less those without a token grid or map (a warning names them)."""
    by_name = {t.name: t for t in taps}
    flat = [n for n in token_taps if not by_name[n].spatial]
    if flat:
        log.warning("no per-token probes for %s: their activations have no token grid or map", flat)
    return [n for n in token_taps if n not in flat]


def _features_meta(
    geo: _TapGeometry, plan: dict[str, list[str]], token_taps: Sequence[str], n_images: int
) -> dict[str, Any]:
    """The feature store's own metadata: per tap its record, aggregations, per-token flag and grid."""
    from seelike.models.taps import tap_record

    def grid(t) -> list[int] | None:
        return list(geo.grids[t.name]) if geo.grids.get(t.name) is not None else None

    return {
        "format": FEATURES_FORMAT,
        "n_images": n_images,
        "pool_hw": list(geo.pool_hw) if geo.pool_hw else None,
        "taps": [
            {
                **tap_record(t, geo.shapes[t.name]),
                "aggregations": plan[t.name],
                "token": t.name in token_taps,
                "grid_hw": grid(t),
            }
            for t in geo.taps
        ],
    }


class _FeatureWriter:
    """The feature store being written: per (tap, aggregation) a memory-mapped float32 (n_images, d) file,
    made at the first batch that holds it, and the labels; batches are appended in order."""

    def __init__(self, out: Path, taps: Sequence[Any], n_images: int):
        self.out, self.n_images = out, n_images
        self.index = {t.name: t.index for t in taps}
        self.files: dict[tuple[str, str], np.memmap] = {}
        self.labels = np.empty(n_images, dtype=np.int64)
        self.offset = 0

    def add(self, features: dict[tuple[str, str], torch.Tensor], y) -> None:
        """One batch's features ((tap, aggregation) → (b, ...) cpu tensors) and its labels `y`."""
        n = len(y)
        self.check_room(n)
        for (tap_name, agg), v in features.items():
            key = (tap_name, agg)
            if key not in self.files:
                self.files[key] = np.lib.format.open_memmap(
                    self.out / f"{self.index[tap_name]:03d}_{agg}.npy", mode="w+",
                    dtype=np.float32, shape=(self.n_images, *v.shape[1:]),
                )  # fmt: skip
            self.files[key][self.offset : self.offset + n] = v.numpy()
        self.labels[self.offset : self.offset + n] = np.asarray(y)
        self.offset += n

    def check_room(self, n: int) -> None:
        """Refuse a batch of `n` images past the `n_images` announced (before its forward pass)."""
        if self.offset + n > self.n_images:
            raise ProbeDataError(f"the loader gave more than the {self.n_images} images announced")

    def close(self) -> None:
        if self.offset != self.n_images:
            raise ProbeDataError(f"expected {self.n_images} images, the loader gave {self.offset}")
        for mm in self.files.values():
            mm.flush()
        self.files.clear()
        np.save(self.out / "labels.npy", self.labels)


def _feature_hook(plan: dict[str, list[str]], token_taps, pool_hw, buf: dict):
    """The tap callback that puts one batch's features of every tap into `buf`: its aggregations in `plan`
    and, for `token_taps`, its grid positions."""

    def on_tap(tap, act: torch.Tensor) -> None:
        # Copies, never views: a view (the CLS token, a flattened or per-token activation) would keep the
        # whole activation alive until the batch is written, and in-place ops that follow (timm ResNet's
        # `x += shortcut`) would change it.
        a = act.detach().float()
        for name, v in aggregate(tap, a, pool_hw).items():
            if name in plan[tap.name]:
                buf[(tap.name, name)] = v.to("cpu", copy=True)
        if tap.name in token_taps:
            buf[(tap.name, "token")] = token_positions(tap, a).to("cpu", copy=True)

    return on_tap


@exact_fp32()
def extract_probe_features(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n_images: int,
    out_dir: str | Path,
    taps: Sequence[Any],
    token_taps: Sequence[str] = (),
    aggregations: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    extra_meta: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """ONE streaming forward pass writing only the aggregated features of each tap (`seelike.analyses.stream`:
    `progress(0, batch, n_batches)` once each batch is written; `device`: `seelike.device.analysis_device`,
    default where the model is).

    Layout of `out_dir`: `meta.json` (taps, aggregations, dims, labels order; with `extra_meta`, whose keys the
    store's own override: `with_extra_meta`), `labels.npy`, and per tap and aggregation
    `{tap_index:03d}_{aggregation}.npy` float32 (n_images, d); per-token taps also `{tap_index:03d}_token.npy`
    float32 (n_images, G, C). Features go straight into memory-mapped files, so nothing beyond one batch's
    activations is held in memory.
    """
    from seelike.models.taps import record_taps

    device = place_model(model, device)
    _check_token_taps(taps, token_taps)
    it = stream(batches, device, progress=progress)
    first = next(it, None)
    if first is None:
        raise ProbeDataError("no images to extract probe features from")
    geo = _tap_geometry(model, first.x, taps)
    token_taps = _spatial_token_taps(geo.taps, token_taps)
    plan = {
        t.name: [
            a
            for a in aggregation_names(t, geo.pool_hw)
            if aggregations is None or a in aggregations
        ]
        for t in geo.taps
    }
    buf: dict[tuple[str, str], torch.Tensor] = {}
    on_tap = _feature_hook(plan, token_taps, geo.pool_hw, buf)
    with atomic_write(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        writer = _FeatureWriter(tmp, geo.taps, n_images)
        t0 = time.time()
        with record_taps(model, geo.taps, on_tap), torch.inference_mode():
            for _, x, y in chain([first], it):
                writer.check_room(len(x))
                buf.clear()
                model(x)
                writer.add(buf, y)
        writer.close()
        own = _features_meta(geo, plan, token_taps, n_images)
        own.update(seconds=round(time.time() - t0, 2), device=str(device))
        meta = with_extra_meta(extra_meta, own)
        write_json(tmp / "meta.json", meta)
    return meta


def read_features_meta(features_dir: str | Path) -> dict[str, Any]:
    path = Path(features_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{features_dir} holds no probe features (no meta.json); rerun probe_features"
        )
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ plan
def probe_sample_plan(
    samples: pd.DataFrame, shots: Sequence[int | str], n_test: int | None, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Rows to extract features for, and the probe-training sets as positions into those rows.

    Rows = the union of the k-shot sets (or the whole train split for `all`) in sample-list order, then the
    first `n_test` test images (None: all). k-shot sets are drawn from the whole train split
    (`kshot_indices`), so they do not depend on which other shot counts are configured.
    """
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    test = samples[samples["split"] == "test"].reset_index(drop=True)
    if len(train) == 0:
        raise ProbeDataError(
            "the sample list has no train split: linear probes are fitted on train images"
        )
    if n_test is not None:
        if n_test > len(test):
            raise ProbeDataError(
                f"probes.n_test = {n_test} but the sample list has {len(test)} test images; lower it or raise "
                "the dataset's max_test"
            )
        test = test.iloc[:n_test]
    if len(test) == 0:
        raise ProbeDataError(
            "no test images to score the probes on; raise probes.n_test or the dataset's max_test"
        )
    labels = train["label"].to_numpy()
    chosen: dict[str, np.ndarray] = {}
    for k in shots:
        chosen[str(k)] = (
            np.arange(len(train)) if k == "all" else kshot_indices(labels, int(k), seed)
        )
    pool = np.unique(np.concatenate(list(chosen.values())))
    where = {int(i): p for p, i in enumerate(pool)}
    sets = {k: [where[int(i)] for i in idx] for k, idx in chosen.items()}
    rows = pd.concat([train.iloc[pool], test], ignore_index=True)
    return rows, sets


# ------------------------------------------------------------------------------------------------ table
@exact_fp32()
def probe_table(
    features_dir: str | Path,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    holdout: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    model_name: str | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Tidy accuracy table (model, tap, depth, aggregation, token, shots, accuracy, accuracy_se, lam, ...) for
    every probed tap, aggregation and shot count, from a features directory written by `extract_probe_features`
    whose meta holds `splits` (train / test per row) and `train_sets` (shot count → row positions). Every fit is
    scored on the same test images in the same order; non-token rows keep which of them it got right
    (`PROBE_CORRECT`, see `_fit_cols`).
    `progress(0, i, n)` after each of the n (shot count, tap) fits (`seelike.analyses.stream`'s protocol).
    """
    features_dir = Path(features_dir)
    meta = read_features_meta(features_dir)
    labels = np.load(features_dir / "labels.npy")
    split = np.asarray(meta["splits"])
    test_rows = np.flatnonzero(split == "test")
    if len(test_rows) == 0:
        raise ProbeDataError("the probe features hold no test images; set probes.n_test > 0")
    depth = normalised_depth([t["index"] for t in meta["taps"]])
    model_name = model_name or meta.get("model", "model")
    y_te = labels[test_rows]
    rows = []
    n_fits, done = len(meta["train_sets"]) * len(meta["taps"]), 0
    for k, sel in meta["train_sets"].items():
        sel = np.asarray(sel)
        y_tr = labels[sel]
        for tap in meta["taps"]:
            base = {
                "model": model_name, "tap": tap["name"], "kind": tap["kind"], "tap_index": tap["index"],
                "block": tap["block"], "depth": depth[tap["index"]], "shots": str(k),
            }  # fmt: skip
            aggs = list(tap["aggregations"]) + (["token"] if tap["token"] else [])
            for agg in aggs:
                arr = np.load(features_dir / f"{tap['index']:03d}_{agg}.npy", mmap_mode="r")
                x_tr, x_te = np.asarray(arr[sel]), np.asarray(arr[test_rows])
                if agg != "token":
                    fit = fit_probe(x_tr, y_tr, x_te, y_te, lambdas, holdout, seed, device)
                    rows.append({**base, "aggregation": agg, "token": -1, "token_row": -1, "token_col": -1,
                                 **_fit_cols(fit, y_te, keep_correct=True)})  # fmt: skip
                    continue
                gw = tap["grid_hw"][1]
                for g in range(x_tr.shape[1]):
                    fit = fit_probe(
                        x_tr[:, g], y_tr, x_te[:, g], y_te, lambdas, holdout, seed, device
                    )
                    rows.append({**base, "aggregation": "token", "token": g, "token_row": g // gw,
                                 "token_col": g % gw, **_fit_cols(fit, y_te)})  # fmt: skip
            if progress is not None:
                progress(0, done, n_fits)
            done += 1
    df = pd.DataFrame(rows)
    df["chance"] = 1.0 / len(np.unique(labels[split == "train"]))
    return df


def _fit_cols(fit: ProbeFit, y_test: np.ndarray, keep_correct: bool = False) -> dict[str, Any]:
    """A fit's columns: `accuracy_se` is its binomial SE over the test images (`accuracy_contrast`);
    `keep_correct` keeps the per-image correctness (`PROBE_CORRECT`, n_test bits) for paired SEs of differences
    between taps and aggregations (per-token rows go without: many, and no claim compares them)."""
    correct = np.asarray(fit.predictions) == np.asarray(y_test)
    return {
        "accuracy": fit.accuracy, "accuracy_se": accuracy_contrast(correct[None], [1.0])[1], "lam": fit.lam,
        "val_accuracy": float(np.nanmax(fit.val_accuracies)), "n_train": fit.n_train, "n_test": fit.n_test,
        "dim": fit.dim, "solver": fit.form, PROBE_CORRECT: pack_correct(correct) if keep_correct else None,
    }  # fmt: skip


def select_probe_taps(taps: Sequence[Any], cfg: dict[str, Any], model_key: str) -> list[Any]:
    """Taps to probe: `probes.taps.<model>` names when given, else every tap of a kind in `probes.tap_kinds`."""
    explicit = (cfg.get("taps") or {}).get(model_key)
    if explicit:
        from seelike.models.taps import taps_named

        named = taps_named(taps, explicit, f"probes.taps.{model_key}")
        return sorted(named, key=lambda t: t.index)
    chosen = default_probe_taps(taps, cfg.get("tap_kinds"))
    if not chosen:
        kinds = sorted({t.kind for t in taps})
        raise ValueError(
            f"model {model_key!r} has no taps of kinds {cfg.get('tap_kinds')}; its kinds are {kinds}. Set "
            f"probes.tap_kinds or probes.taps.{model_key}"
        )
    return chosen


def probes_support(
    taps: Sequence[Any],
    tap_names: Sequence[str] | None = None,
    tap_kinds: Sequence[str] | None = BLOCK_OUTPUT_KINDS,
) -> str | None:
    """None when `select_probe_taps` finds taps to probe (the taps named in the config, else those of a kind in
    `tap_kinds`: default the block outputs, `probes.tap_kinds`'s default; None = every tap), else the reason (the
    dry run's refusal)."""
    if tap_names:
        names = {t.name for t in taps}
        unknown = [n for n in tap_names if n not in names]
        if unknown:
            return f"probes.taps names {unknown}: not taps of this model (taps.csv lists them)"
        return None
    if not default_probe_taps(taps, tap_kinds):
        kinds = sorted({t.kind for t in taps})
        return (
            f"none of its taps is of a probed kind {list(tap_kinds or [])} (its kinds: {kinds[:8]}); list tap "
            "names in probes.taps.<model>"
        )
    return None


def select_token_taps(
    probed: Sequence[Any], spec: str | dict[str, Any], model_key: str
) -> list[str]:
    """Taps with per-token probes: `last` (the last probed tap), `all`, `none`, or {model: [names]}."""
    if isinstance(spec, dict):
        spec = spec.get(model_key, "last")
    if spec == "none":
        return []
    if spec == "last":
        return [probed[-1].name]
    if spec == "all":
        return [t.name for t in probed]
    names = {t.name for t in probed}
    missing = [n for n in spec if n not in names]
    if missing:
        raise ValueError(
            f"probes.token_taps.{model_key} names {missing}, which are not probed taps; probed: {sorted(names)}"
        )
    return list(spec)


class ProbePlan(NamedTuple):
    rows: pd.DataFrame  # images to extract, in order (k-shot train union, then test)
    train_sets: dict[str, list[int]]  # shot count → positions into rows
    taps: list[Any]  # probed taps
    token_taps: list[str]  # taps with per-token probes


def plan_probe_features(
    model: nn.Module, samples: pd.DataFrame, cfg: dict[str, Any], model_key: str, seed: int = 0
) -> ProbePlan:
    """What the probe_features rule extracts: the images (`probe_sample_plan`) and taps (`select_probe_taps`,
    `select_token_taps`) of one model under the `probes` settings."""
    from seelike.models.taps import discover_taps

    rows, sets = probe_sample_plan(samples, cfg["shots"], cfg.get("n_test"), seed)
    taps = select_probe_taps(discover_taps(model), cfg, model_key)
    token_taps = select_token_taps(taps, cfg.get("token_taps", "last"), model_key)
    return ProbePlan(rows, sets, taps, token_taps)
