"""The entry of the rule of workflow/rules/claims.smk: `claims`, one number per testable finding of the paper
from the pipeline's own tables (CSV + markdown)."""

from __future__ import annotations

from seelike.rules.context import RuleContext


def _claims_inputs(ctx: RuleContext):
    """The claims summary's inputs (`seelike.claims.ClaimInputs`) from the rule's labelled input sections."""
    from seelike.claims import ClaimInputs, no_skip_specs
    from seelike.claims.metrics import uniform_attention_distance
    from seelike.io import read_table
    from seelike.tables import oriented

    models = ctx.params.models

    def read(label, path):
        """A table; a pair's with the label's first model on the rows (stored pairs are in config order)."""
        df, meta = read_table(path)
        return oriented(df, meta, label[0]) if isinstance(label, (list, tuple)) else (df, meta)

    def tables(section):
        """label → (frame, meta) of one input section (pairs as (a, b) tuples), in the layout's order."""
        paths = list(getattr(ctx.input, section, []))
        labels = ctx.params.labels[section]
        if len(paths) != len(labels):
            raise RuntimeError(f"claims: {len(paths)} {section} inputs but {len(labels)} labels")
        return {
            tuple(lab) if isinstance(lab, (list, tuple)) else lab: read(lab, path)
            for lab, path in zip(labels, paths, strict=True)
        }

    def frames(section):
        return {k: df for k, (df, _) in tables(section).items()}

    # the "global" reference of Figs 3/4: uniform attention over each model's own patch grid
    attention = {
        m: (df, uniform_attention_distance(meta["grid_hw"], meta["patch_px"], meta["stride_px"]))
        for m, (df, meta) in tables("attention").items()
    }
    return ClaimInputs(
        families={m: spec["family"] for m, spec in models.items()},
        archs={m: spec["arch"] for m, spec in models.items()},
        self_cka=frames("self_cka"),
        cross_cka=frames("cross_cka"),
        attention=attention,
        head_subsets=frames("head_subsets"),
        erf=frames("erf"),
        skip=frames("skip"),
        localisation=frames("localisation"),
        probes=frames("probes"),
        per_block=frames("per_block"),
        similarity=frames("similarity"),
        no_skip=no_skip_specs(models),
    )


def claims(ctx: RuleContext) -> None:
    from seelike.claims import summarise, to_markdown
    from seelike.io import atomic_write, write_table

    df = summarise(_claims_inputs(ctx))
    dataset = ctx.wildcards.dataset
    meta = ctx.metadata(
        "claims", device=None, dataset=dataset,
        inputs={k: list(v) for k, v in ctx.params.labels.items()},
    )  # fmt: skip
    write_table(df, ctx.output.csv, meta)
    with atomic_write(ctx.output.md) as tmp:
        tmp.write_text(to_markdown(df, title=f"Paper findings in this run ({dataset})"))
    seen = df["seen"].dropna()
    ctx.log.info(
        "%d metrics, %d decidable: %d seen, %d not",
        len(df), len(seen), int(seen.sum()), int((~seen.astype(bool)).sum()),
    )  # fmt: skip
