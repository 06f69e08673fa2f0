"""The paper's CNN findings for one EfficientNet-family model, from the workflow's output tables.

    python scripts/efficientnet_findings.py --dataset imagenet_sample --model efficientnet_lite0

Reads results/cka/{dataset}/{model}__{model}.parquet (Fig 1), results/erf/{dataset}/{model}.parquet (Fig 6),
results/skip/{dataset}/{model}.parquet (Fig 7) and results/localisation/{dataset}/{model}.parquet (Figs 9, 10)
and prints the markdown tables of VALIDATION.md ("CNN findings on real ImageNet weights"). Not a workflow rule: a reading aid for one
validation run. The stage of a tap is `s` in `blocks.{s}.{b}.…` (timm EfficientNet naming); `stem` and `head`
have none. Constant taps (CKA undefined) would be left out; none occur here.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from seelike.tables import cka_array

_STAGE = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def stage_of(name: str) -> int | None:
    """The EfficientNet stage of a tap (None for stem / head)."""
    return int(mt.group(1)) if (mt := _STAGE.match(name)) else None


def within_across(m: np.ndarray, stages: list[int | None], idx: list[int]) -> tuple[float, float]:
    """Mean CKA of distinct tap pairs (among `idx`) in the same stage and in different stages."""
    same, diff = [], []
    for a, i in enumerate(idx):
        for j in idx[a + 1 :]:
            if stages[i] is None or stages[j] is None:
                continue
            (same if stages[i] == stages[j] else diff).append(m[i, j])
    return float(np.nanmean(same)), float(np.nanmean(diff))


def self_cka_findings(df: pd.DataFrame) -> str:
    m, names, _ = cka_array(df)
    kinds = df.drop_duplicates("index_a").sort_values("index_a")["kind_a"].astype(str).tolist()
    n, k = len(names), max(1, len(names) // 3)
    stages = [stage_of(t) for t in names]
    all_idx = list(range(n))
    outs = [i for i in all_idx if kinds[i] == "out"]
    w_all, a_all = within_across(m, stages, all_idx)
    # residual branches are unlike everything (dark stripes in Fig 1): the stage contrast without them
    w_nb, a_nb = within_across(m, stages, [i for i in all_idx if kinds[i] != "branch"])
    w_out, a_out = within_across(m, stages, outs)
    # one block apart only, so that tap distance cannot explain the contrast: inside a stage vs over a boundary
    step_in = [m[i, j] for i, j in itertools.pairwise(outs) if stages[i] == stages[j]]
    step_over = [m[i, j] for i, j in itertools.pairwise(outs) if stages[i] != stages[j]]
    # adjacent stages vs stages two or more apart, block outputs only
    near, far = [], []
    for a, i in enumerate(outs):
        for j in outs[a + 1 :]:
            gap = abs(stages[i] - stages[j])  # type: ignore[operator]
            if gap == 1:
                near.append(m[i, j])
            elif gap >= 2:
                far.append(m[i, j])
    lines = [
        f"| quantity | value |\n|---|---|\n| taps | {n} |",
        f"| mean CKA, lowest third × highest third ({k} × {k} taps) | {np.nanmean(m[:k, n - k :]):.3f} |",
        f"| mean CKA of consecutive taps (i, i+1) | {np.nanmean(np.diagonal(m, 1)):.3f} |",
        f"| mean CKA within a stage, all taps (pairs i < j) | {w_all:.3f} |",
        f"| mean CKA across stages, all taps | {a_all:.3f} |",
        f"| mean CKA within a stage, all taps but `branch` | {w_nb:.3f} |",
        f"| mean CKA across stages, all taps but `branch` | {a_nb:.3f} |",
        f"| mean CKA within a stage, block outputs (`out`) | {w_out:.3f} |",
        f"| mean CKA across stages, block outputs | {a_out:.3f} |",
        f"| consecutive block outputs, same stage ({len(step_in)} pairs) | {np.nanmean(step_in):.3f} |",
        (
            f"| consecutive block outputs, over a stage boundary ({len(step_over)} pairs) | "
            f"{np.nanmean(step_over):.3f} |"
        ),
        f"| block outputs of adjacent stages | {np.nanmean(near):.3f} |",
        f"| block outputs two or more stages apart | {np.nanmean(far):.3f} |",
        f"| stem × head | {m[names.index('stem'), names.index('head')]:.3f} |",
    ]
    per_stage = []
    for s in sorted({x for x in stages if x is not None}):
        idx = [i for i in all_idx if stages[i] == s]
        sub = m[np.ix_(idx, idx)]
        off = sub[~np.eye(len(idx), dtype=bool)]
        per_stage.append(
            f"| {s} | {len(idx)} | {np.nanmean(off) if off.size else float('nan'):.3f} |"
        )
    return (
        "\n".join(lines)
        + "\n\nPer stage (mean CKA of distinct tap pairs inside the stage):\n\n| stage | taps | mean CKA |\n|---|---|---|\n"
        + "\n".join(per_stage)
    )


def erf_findings(df: pd.DataFrame) -> str:
    rows = ["| residual | tap | r50 (px) | r90 (px) | σ (px) |", "|---|---|---|---|---|"]
    for _, r in df.sort_values(["residual", "order"], ascending=[False, True]).iterrows():
        rows.append(
            f"| {r['residual']} | `{r['tap']}` | {r['r50_px']:.1f} | {r['r90_px']:.1f} | {r['sigma_px']:.1f} |"
        )
    return "\n".join(rows)


def skip_findings(df: pd.DataFrame) -> str:
    rows = [
        "| block | unit | ‖z‖/‖f(z)‖ | cos(z+f, f) | mean ‖z‖ | mean ‖f‖ |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in df.sort_values("block").iterrows():
        rows.append(
            f"| {r['block']} | `{r['unit']}` | {r['ratio_mean']:.2f} | {r['cosine_mean']:.3f} | "
            f"{r['norm_z_mean']:.2f} | {r['norm_f_mean']:.2f} |"
        )
    r = df["ratio_mean"].to_numpy(np.float64)
    rows.append(
        f"\nmean ratio {np.mean(r):.2f} (min {r.min():.2f}, max {r.max():.2f}); n_inf = {int(df['n_inf'].sum())}"
    )
    return "\n".join(rows)


def localisation_findings(df: pd.DataFrame) -> str:
    h, w = int(df["patch_row"].max()) + 1, int(df["patch_col"].max()) + 1
    d = df[~df["patch_constant"].to_numpy(bool) & ~df["token_constant"].to_numpy(bool)]
    interior = d["token_row"].between(1, h - 2) & d["token_col"].between(1, w - 2)
    d = d[interior]
    own = d[d["token"] == d["patch"]].set_index("token")["cka"]
    other = d[d["token"] != d["patch"]].groupby("token")["cka"].mean()
    best = d.loc[d.groupby("token")["cka"].idxmax()].set_index("token")["patch"]
    # own patch vs its 8 neighbours (the next-best candidates for a local representation)
    nb = d[
        (d["token"] != d["patch"])
        & ((d["token_row"] - d["patch_row"]).abs() <= 1)
        & ((d["token_col"] - d["patch_col"]).abs() <= 1)
    ]
    neighbours = nb.groupby("token")["cka"].mean()
    centre = (h // 2) * w + w // 2
    return "\n".join(
        [
            "| quantity | value |",
            "|---|---|",
            f"| grid | {h}×{w} ({len(own)} interior positions) |",
            f"| mean CKA with own patch (interior) | {own.mean():.4f} |",
            f"| mean CKA with the 8 neighbouring patches | {neighbours.mean():.4f} |",
            f"| mean CKA with every other patch | {other.mean():.4f} |",
            f"| own / other | {own.mean() / other.mean():.2f} |",
            f"| interior positions whose best patch is their own | {(best == best.index).mean():.2f} |",
            f"| centre position: own, mean other | {own.get(centre, np.nan):.4f}, {other.get(centre, np.nan):.4f} |",
            f"| largest CKA anywhere in the map | {df['cka'].max():.4f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--results", type=Path, default=Path("results"))
    a = p.parse_args(argv)
    r, d, m = a.results, a.dataset, a.model
    sections = [
        ("Fig 1: self-CKA", self_cka_findings, r / "cka" / d / f"{m}__{m}.parquet"),
        ("Fig 6: effective receptive fields", erf_findings, r / "erf" / d / f"{m}.parquet"),
        ("Fig 7: skip connections", skip_findings, r / "skip" / d / f"{m}.parquet"),
        (
            "Figs 9, 10: localisation",
            localisation_findings,
            r / "localisation" / d / f"{m}.parquet",
        ),
    ]
    for title, fn, path in sections:
        print(f"### {title}\n\n`{path}`\n")
        print(fn(pd.read_parquet(path)) if path.is_file() else "(table absent)")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
