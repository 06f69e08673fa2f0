"""The claims table itself: its columns, what the rules know of each model (`ClaimInputs`), the rows with their
standard errors and the "seen beyond 2 SE" rule, CNN family names, and the markdown rendering."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = [
    "figure", "claim", "model", "metric", "value", "se", "ci_low", "ci_high", "seen", "note", "robust",
    "measures",
]  # fmt: skip


# A comparison is "seen" only when its difference exceeds this many combined standard errors (where known).
SEEN_SE = 2.0


# ---------------------------------------------------------------- the summary
# Tap families (seelike.models.taps.tap_family) that are CNNs, and how the claims name them. `cnn` is the coarse
# label (any model without attention); `generic` (leaf-module taps) is treated as a CNN, as the workflow does.
CNN_FAMILIES: dict[str, str] = {
    "resnet": "ResNet",
    "resnetv2": "ResNetV2/BiT",
    "efficientnet": "EfficientNet",
    "cnn": "CNN",
    "generic": "CNN",
}


# An arch name refines the label where the family is coarse (`cnn`) or covers several networks (`efficientnet`
# also discovers MobileNetV2, MnasNet, MixNet blocks). First match wins.
_ARCH_LABELS: tuple[tuple[str, str], ...] = (
    (r"resnetv2|(^|_)bit", "ResNetV2/BiT"),
    (r"resnet", "ResNet"),
    (r"efficientnet", "EfficientNet"),
    (r"mobilenet", "MobileNet"),
    (r"mnasnet", "MnasNet"),
    (r"mixnet", "MixNet"),
)


def cnn_label(family: str | None, arch: str | None = None) -> str:
    """How the claims name a CNN: `ResNet`, `ResNetV2/BiT`, `EfficientNet` (or MobileNet / MnasNet / MixNet, which
    share EfficientNet's tap family), else `CNN`; from the tap family, refined by the arch name (lower case,
    pretrained tag ignored) when the family is coarse or shared."""
    fam = CNN_FAMILIES.get(family or "", "CNN")
    if family in ("resnet", "resnetv2"):
        return fam
    name = (arch or "").split(".")[0].lower()
    for pat, label in _ARCH_LABELS:
        if re.search(pat, name):
            if family == "efficientnet" and label in ("ResNet", "ResNetV2/BiT"):
                break
            return label
    return fam


@dataclass
class ClaimInputs:
    """The tables of one analysis dataset, keyed by model (or (a, b) pair), plus what is known of each model.

    `families`: model → "vit", "cnn", "other" (neither: Swin, PVT, MLP-Mixer; `seelike.models.families.model_class`),
    or a tap family (vit, resnet, resnetv2, efficientnet, generic: every other family is a CNN); `archs`: model → timm arch (optional: names the CNN
    family in the claim texts where `families` only says "cnn"); `attention`: model → (distance table,
    uniform-attention distance px); `head_subset_cnn`: ViT → the CNN its Fig 5 table compares with (optional:
    else the only CNN, or "CNN"); `no_skip`: model → (removed block, reference model or None) as from
    `no_skip_specs`; `similarity`: (a, a) self and (a, b) cross long tables of several similarity measures
    (`results/similarity/…`: `measure`, tap columns, `value`, `se`, `constant`, …), under which the Fig 1 and
    Fig 2 findings are read again (the `robust` and `measures` columns; linear CKA still decides `seen`).
    """

    families: Mapping[str, str]
    self_cka: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    cross_cka: Mapping[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    attention: Mapping[str, tuple[pd.DataFrame, float]] = field(default_factory=dict)
    head_subsets: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    erf: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    skip: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    localisation: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    probes: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    per_block: Mapping[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    no_skip: Mapping[str, tuple[int, str | None]] = field(default_factory=dict)
    archs: Mapping[str, str] = field(default_factory=dict)
    head_subset_cnn: Mapping[str, str] = field(default_factory=dict)
    similarity: Mapping[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    # (section, key) → the jackknife groups of that CKA-derived table (`seelike.analyses.replicates.CkaGroups`;
    # sections self_cka, cross_cka, per_block, head_subsets, keys as in those mappings): where present, an SE
    # is the jackknife of the metric itself and argmax / rank numbers get a bootstrap interval
    groups: Mapping[tuple[str, Any], Any] = field(default_factory=dict)

    def is_vit(self, model: str) -> bool:
        return self.families.get(model) == "vit"

    def is_cnn(self, model: str) -> bool:
        # "other" (Swin, PVT, MLP-Mixer: seelike.models.families.model_class) is on neither side
        fam = self.families.get(model)
        return fam is not None and fam not in ("vit", "other")

    def cnn_name(self, model: str) -> str:
        """The CNN family's name of `model` for claim texts (`cnn_label`)."""
        return cnn_label(self.families.get(model), self.archs.get(model))


class Rows:
    """Collects summary rows; NaN values give seen = None (nothing to decide on). `se` is the value's standard
    error; `ci_low` / `ci_high` an interval where the value has one (NaN elsewhere; its note says which). `robust` and
    `measures` start empty: `seelike.claims.findings.summarise` fills them once every row is in."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        figure: str,
        claim: str,
        model: str,
        metric: str,
        value: float,
        seen: bool | None = None,
        note: str = "",
        se: float = math.nan,
        ci_low: float = math.nan,
        ci_high: float = math.nan,
    ) -> None:
        value = float(value)
        if seen is not None and not math.isfinite(value):
            seen = None
        self.rows.append(
            {
                "figure": figure,
                "claim": claim,
                "model": model,
                "metric": metric,
                "value": value,
                "se": float(se),
                "ci_low": float(ci_low),
                "ci_high": float(ci_high),
                "seen": None if seen is None else bool(seen),
                "note": note,
                "robust": None,
                "measures": "",
            }
        )


# ---------------------------------------------------------------- the other similarity measures (Figs 1, 2)
REFERENCE_MEASURE = "linear_cka"  # the measure of `self_cka` / `cross_cka`: it decides `seen`


def other_measures(similarity: Mapping[tuple[str, str], pd.DataFrame]) -> list[str]:
    """The measures of the similarity tables other than linear CKA, in the order the tables list them (the
    workflow's configured order; `seelike.similarity.MEASURES` is not imported: it brings torch)."""
    order = dict.fromkeys(m for df in similarity.values() for m in df["measure"].astype(str))
    return [m for m in order if m != REFERENCE_MEASURE]


def measure_inputs(inp: ClaimInputs, measure: str) -> ClaimInputs:
    """`inp` with its self and cross CKA tables replaced by `measure`'s rows of the similarity tables (`value` as
    `cka`, `se` as `cka_se`), so that the Fig 1 and Fig 2 code reads that measure unchanged."""
    frames = {}
    for key, df in inp.similarity.items():
        d = df[df["measure"].astype(str) == measure]
        if len(d):
            frames[key] = d.drop(columns="measure").rename(columns={"value": "cka", "se": "cka_se"})
    return replace(
        inp,
        self_cka={a: d for (a, b), d in frames.items() if a == b},
        cross_cka={(a, b): d for (a, b), d in frames.items() if a != b},
        groups={},  # linear CKA's: the other measures' rows fall back to their cells' SEs
    )


def measure_verdict(
    measure: str, row: dict[str, Any] | None, decides: bool
) -> tuple[str, bool | None]:
    """One measure's part of the `measures` string and its decision (None: it cannot decide this row)."""
    if row is None or not math.isfinite(row["value"]) or (decides and row["seen"] is None):
        return f"{measure} n/a", None
    if not decides:  # a descriptive row: the value alone
        return f"{measure} {row['value']:.3g}", None
    return f"{measure} {'yes' if row['seen'] else 'no'} {row['value']:.3g}", bool(row["seen"])


def combined_se(*ses: float) -> float:
    """SE of a sum or difference of estimates, taken as independent: √Σ SE² (NaN when any is unknown).
    Estimates from the same images are positively correlated, so for a difference this is conservative."""
    return (
        math.sqrt(sum(s * s for s in ses))
        if ses and all(math.isfinite(s) for s in ses)
        else math.nan
    )


def exceeds(diff: float, se: float) -> bool:
    """`diff > 0`, and beyond SEEN_SE standard errors where the SE is known."""
    return diff > (SEEN_SE * se if math.isfinite(se) else 0.0)


def mean_se(metric, df: pd.DataFrame, *keys: str) -> list[float]:
    """Standard errors of mean-type CKA metrics: the same metric computed on the table's `cka_se` (per-block
    tables: `se`) instead of its values, i.e. the mean of the cells' SEs — an upper bound on the SE of a mean of
    correlated cells (Minkowski). NaN for tables without standard errors. Only the fallback of `cka_se` for tables
    without jackknife groups (tables of earlier runs, the other similarity measures)."""
    col = "cka_se" if "cka_se" in df else ("se" if "se" in df else None)
    if col is None or df[col].isna().all():
        return [math.nan] * len(keys)
    r = metric(df.assign(cka=df[col]))
    return [math.nan if r is None else float(r[k]) for k in keys]


def _keyed(metric: Callable[[list[np.ndarray]], Any], keys: Sequence[str]):
    """`metric` reduced to `keys` (NaN where it returns None: nothing to compute on that replicate)."""

    def f(ms: list[np.ndarray]) -> dict[str, float]:
        r = metric(ms)
        return {k: math.nan if r is None else float(r[k]) for k in keys}

    return f


def cka_se(
    metric: Callable[[list[np.ndarray]], Any],
    groups: Sequence[Any],
    keys: Sequence[str],
    bound: Sequence[float],
) -> tuple[list[float], str]:
    """Standard errors of `keys` of a statistic of one or several CKA tables, and how they were computed (for the
    note). `metric` maps the tables' CKA matrices (as `seelike.tables.cka_array` reads them, constant cells NaN)
    to a dict; `groups` are the tables' jackknife groups aligned the same way (None where a table has none).
    With groups for every table: the delete-one-group jackknife of the statistic itself, the tables resampled
    jointly (`seelike.analyses.replicates.jackknife`); else `bound`: the earlier bounds from the cells' SEs."""
    from seelike.analyses.replicates import jackknife

    if groups and all(g is not None for g in groups):
        try:
            r = jackknife(_keyed(metric, keys), groups)
        except ValueError:  # tables of different minibatch plans: no joint resampling
            pass
        else:
            g = groups[0]
            how = f"SE: jackknife of the statistic, {g.n_groups} minibatch groups × {g.repeats} repeats"
            return [r[k] for k in keys], how + (", tables jointly" if len(groups) > 1 else "")
    if not any(math.isfinite(b) for b in bound):
        return list(bound), "no SE (no jackknife groups)"
    return list(bound), "SE: from the cells' SEs (an upper bound; no jackknife groups)"


def cka_interval(
    metric: Callable[[list[np.ndarray]], Any], groups: Sequence[Any], keys: Sequence[str]
) -> tuple[dict[str, Any], str] | None:
    """Bootstrap percentile intervals (`seelike.analyses.replicates.bootstrap`, at `LEVEL`) of `keys` of a
    statistic that is not smooth in the cells (an argmax, a rank correlation), and how they were computed;
    None unless every table has jackknife groups of one plan."""
    from seelike.analyses.replicates import LEVEL, bootstrap

    if not groups or any(g is None for g in groups):
        return None
    try:
        r = bootstrap(_keyed(metric, keys), groups)
    except ValueError:
        return None
    g = groups[0]
    return r, (
        f"{LEVEL:.0%} interval: bootstrap over {g.n_groups} minibatch groups × {g.repeats} repeats"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def to_markdown(df: pd.DataFrame, title: str | None = None) -> str:
    """The claims table as a GitHub markdown table (no tabulate dependency); seen and robust as yes / no / n/a."""
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in df[COLUMNS].itertuples(index=False):
        cells = []
        for col, v in zip(COLUMNS, row, strict=True):
            if col in ("seen", "robust"):
                v = (
                    "n/a"
                    if v is None or (isinstance(v, float) and math.isnan(v))
                    else ("yes" if v else "no")
                )
            elif col in ("note", "measures") and not isinstance(v, str):
                v = ""  # an empty text read back from a CSV is NaN
            cells.append(_fmt(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
