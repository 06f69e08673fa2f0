"""The entry of the rule of workflow/rules/claims.smk: `claims`, one number per testable finding of the paper
from the pipeline's own tables (CSV + markdown)."""

from __future__ import annotations

from seelike.rules.context import RuleContext

# The input sections whose tables have jackknife groups beside them (`seelike.analyses.replicates.groups_path`;
# workflow/rules/common.smk lists the same files as the rule's `groups` input)
GROUPED_SECTIONS = ("self_cka", "cross_cka", "per_block", "head_subsets")


def _claims_inputs(ctx: RuleContext):
    """The claims summary's inputs (`seelike.claims.ClaimInputs`) from the rule's labelled input sections."""
    from seelike.analyses.replicates import CkaGroups, groups_path
    from seelike.claims import ClaimInputs, no_skip_specs
    from seelike.claims.metrics import uniform_attention_distance
    from seelike.io import read_table
    from seelike.tables import oriented

    models = ctx.params.models

    groups = {}  # (section, label) → the table's jackknife groups, oriented as the table is read

    def read(label, path, section=None):
        """A table; a pair's with the label's first model on the rows (stored pairs are in config order). With
        `section`, its jackknife groups beside it go into `groups` (where the file is there)."""
        df, meta = read_table(path)
        pair = isinstance(label, (list, tuple))
        out = oriented(df, meta, label[0]) if pair else (df, meta)
        if section and (gp := groups_path(path)).exists():
            g = CkaGroups.load(gp)
            # `oriented` returns the metadata it was given unless it read the pair the other way round
            groups[(section, tuple(label) if pair else label)] = (
                g.transposed() if out[1] is not meta else g
            )
        return out

    def tables(section):
        """label → (frame, meta) of one input section (pairs as (a, b) tuples), in the layout's order."""
        paths = list(getattr(ctx.input, section, []))
        labels = ctx.params.labels[section]
        if len(paths) != len(labels):
            raise RuntimeError(f"claims: {len(paths)} {section} inputs but {len(labels)} labels")
        section_groups = section if section in GROUPED_SECTIONS else None
        return {
            tuple(lab) if isinstance(lab, (list, tuple)) else lab: read(lab, path, section_groups)
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
        groups=groups,
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
