"""The entries of the rules of workflow/rules/figures.smk, every figure drawn from tables: `plot_self_cka`,
`plot_cross_cka`, `plot_measures`, `measure_agreement`, `plot_per_block`, `plot_attention_distance`,
`plot_head_subsets`, `plot_erf`, `plot_skip`, `plot_localisation`, `plot_localisation_summary`,
`plot_probes`, and the atlas: `atlas` (page, pair scores, overview) and `atlas_shift` (across datasets)."""

from __future__ import annotations

from typing import Any

from seelike.rules.context import RuleContext


def _tables(ctx: RuleContext, paths=None) -> dict[str, Any]:
    """model → frame of a figure rule's input tables (`params.models`, in input order)."""
    from seelike.io import read_table

    paths = list(ctx.input if paths is None else paths)
    return {m: read_table(path)[0] for m, path in zip(ctx.params.models, paths, strict=True)}


def _dataset(ctx: RuleContext) -> str:
    """The dataset a figure is drawn on (every figure rule has the wildcard): named in its title."""
    return ctx.wildcards.dataset


def _plot_cka(ctx: RuleContext, a: str | None = None) -> None:
    """The CKA heatmap of one CKA table (Figs 1 and 2), model `a` on the rows (a pair stored the other way
    round is read as its transpose)."""
    from seelike.figures.cka import plot_cka_heatmap
    from seelike.io import read_table
    from seelike.tables import oriented

    df, meta = read_table(ctx.input[0])
    if a is not None:
        df, meta = oriented(df, meta, a)
    plot_cka_heatmap(df, meta, ctx.output.png, ctx.output.pdf, dataset=_dataset(ctx))


def plot_self_cka(ctx: RuleContext) -> None:
    """Rule plot_self_cka: Fig 1, the CKA heatmap of a model against itself."""
    _plot_cka(ctx)


def plot_cross_cka(ctx: RuleContext) -> None:
    """Rule plot_cross_cka: Fig 2, the CKA heatmap of two models."""
    _plot_cka(ctx, a=ctx.wildcards.a)


def plot_measures(ctx: RuleContext) -> None:
    from seelike.figures.measures import plot_measure_heatmaps
    from seelike.io import read_table

    df, meta = read_table(ctx.input[0])
    plot_measure_heatmaps(df, meta, ctx.output.png, ctx.output.pdf, dataset=_dataset(ctx))


def measure_agreement(ctx: RuleContext) -> None:
    from seelike.analyses.agreement import agreement_table
    from seelike.figures.measures import plot_measure_agreement
    from seelike.io import atomic_write, read_table

    tables = {
        tuple(p): read_table(path)[0] for p, path in zip(ctx.params.pairs, ctx.input, strict=True)
    }
    agreement = agreement_table(tables)
    with atomic_write(ctx.output.csv) as tmp:
        agreement.to_csv(tmp, index=False)
    plot_measure_agreement(agreement, ctx.output.png, ctx.output.pdf, dataset=_dataset(ctx))
    ctx.log.info("measure agreement (Spearman across cells):\n%s", agreement.to_string(index=False))


def plot_per_block(ctx: RuleContext) -> None:
    from seelike.figures.cka import plot_per_block_cka
    from seelike.io import read_table

    plot_per_block_cka(
        [read_table(p) for p in ctx.input], ctx.output.png, ctx.output.pdf, dataset=_dataset(ctx)
    )


def plot_attention_distance(ctx: RuleContext) -> None:
    from seelike.figures.attention import plot_attention_all_blocks
    from seelike.figures.attention import plot_attention_distance as plot

    tables, out = _tables(ctx), ctx.output
    plot(tables, ctx.params.blocks, out.fig3, out.fig3_pdf, dataset=_dataset(ctx))
    plot_attention_all_blocks(tables, out.fig4, out.fig4_pdf, dataset=_dataset(ctx))


def plot_head_subsets(ctx: RuleContext) -> None:
    from seelike.figures.attention import plot_head_subsets as plot
    from seelike.io import read_table

    cnn = read_table(ctx.input[0])[1].get("cnn_model")
    plot(_tables(ctx), ctx.output.png, ctx.output.pdf, dataset=_dataset(ctx), cnn=cnn)


def plot_erf(ctx: RuleContext) -> None:
    import numpy as np

    from seelike.figures.receptive_field import erf_size_summary, plot_erf_grid
    from seelike.io import atomic_write

    out = ctx.output
    tables = _tables(ctx, ctx.input.tables)
    maps = {}
    for m, path in zip(ctx.params.models, ctx.input.maps, strict=True):
        with np.load(path) as z:
            maps[m] = {k: z[k] for k in z.files}
    sizes = erf_size_summary(tables)
    with atomic_write(out.sizes) as tmp:
        sizes.to_csv(tmp, index=False)
    plot_erf_grid(maps, sizes, out.png, out.pdf, dataset=_dataset(ctx))


def plot_skip(ctx: RuleContext) -> None:
    from seelike.figures.skip import plot_skip_cosine, plot_skip_ratio

    tables, out = _tables(ctx), ctx.output
    plot_skip_ratio(tables, out.ratio, out.ratio_pdf, dataset=_dataset(ctx))
    plot_skip_cosine(tables, out.cosine, out.cosine_pdf, dataset=_dataset(ctx))


def plot_localisation(ctx: RuleContext) -> None:
    from seelike.analyses.localisation import token_indices
    from seelike.figures.localisation import plot_localisation as plot
    from seelike.io import read_table
    from seelike.models.geometry import PositionGrid

    df, meta = read_table(ctx.input[0])
    tokens = None
    if ctx.params.plot_tokens is not None:
        grid = PositionGrid(tuple(meta["grid_hw"]), tuple(meta["img_hw"]), 0, ())
        tokens = token_indices(ctx.params.plot_tokens, grid)
    plot(df, meta, ctx.output.png, ctx.output.pdf, tokens=tokens, dataset=_dataset(ctx))


def plot_localisation_summary(ctx: RuleContext) -> None:
    from seelike.figures.localisation import plot_localisation_summary as plot

    plot(_tables(ctx), ctx.output.png, ctx.output.pdf, dataset=_dataset(ctx))


def plot_probes(ctx: RuleContext) -> None:
    from seelike.figures.probes import plot_probe_aggregations, plot_probe_models

    tables, out = _tables(ctx), ctx.output
    plot_probe_aggregations(tables, out.fig11, out.fig11_pdf, dataset=_dataset(ctx))
    plot_probe_models(tables, out.fig13, out.fig13_pdf, dataset=_dataset(ctx))


def atlas(ctx: RuleContext) -> None:
    """Rule atlas: every stored model pair's tables → pairs.csv, the offline page and the overview figure.
    Every table is read before anything is written: a missing one fails the rule naming it, no page half made."""
    from pathlib import Path

    from seelike.atlas.data import atlas_data, pair_score_table
    from seelike.atlas.page import write_page
    from seelike.figures.atlas import plot_atlas_overview
    from seelike.io import atomic_write, read_table

    pairs = [tuple(p) for p in ctx.params.pairs]
    measures = list(ctx.params.measures)
    sections = {"cka": list(ctx.input.cka), "similarity": list(ctx.input.get("similarity", []))}
    for section, paths in sections.items():
        for (a, b), path in zip(pairs if paths else [], paths, strict=True):
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"atlas: the {section} table of {a} × {b} is missing: {path}; build it first "
                    f"(snakemake {path}) — no page is written without every pair"
                )
    cka = {p: read_table(path) for p, path in zip(pairs, sections["cka"], strict=True)}
    similarity = {
        p: read_table(path) for p, path in zip(pairs, sections["similarity"], strict=False)
    }
    models = {m["name"]: m for m in ctx.params.models}
    data = atlas_data(_dataset(ctx), models, cka)
    scores = pair_score_table(similarity or cka, measures)
    with atomic_write(ctx.output.pairs) as tmp:
        scores.to_csv(tmp, index=False)
    write_page(data, ctx.output.html)
    plot_atlas_overview(data, ctx.output.png, ctx.output.pdf)
    cross = scores[scores["measure"] == "linear_cka"]
    ctx.log.info(
        "%d models, %d pairs; pair scores %s",
        len(models), len(cross),
        ", ".join(f"{a}×{b} {s:.3f} (p {p:.3f})" for a, b, s, p in
                  cross[["a", "b", "score", "score_p"]].itertuples(index=False)),
    )  # fmt: skip


def atlas_shift(ctx: RuleContext) -> None:
    """Rule atlas_shift: each dataset's pairs.csv → one table of how every pair's scores move, and its figure."""
    import pandas as pd

    from seelike.atlas.data import score_shift
    from seelike.figures.atlas import plot_atlas_shift
    from seelike.io import atomic_write

    scores = {d: pd.read_csv(p) for d, p in zip(ctx.params.datasets, ctx.input, strict=True)}
    shift = score_shift(scores)
    with atomic_write(ctx.output.csv) as tmp:
        shift.to_csv(tmp, index=False)
    plot_atlas_shift(shift, ctx.output.png, ctx.output.pdf)
    ctx.log.info("%d pairs on %s", shift["pair"].nunique(), ", ".join(scores))
