"""Rule claims: one number per testable finding of the paper from the pipeline's own tables (CSV + markdown)."""

from seelike.claims import ClaimInputs, no_skip_specs, summarise, to_markdown
from seelike.claims.metrics import uniform_attention_distance
from seelike.io import atomic_write, read_table, write_table
from seelike.rules import setup_rule

log = setup_rule(snakemake)
p, inp, out = snakemake.params, snakemake.input, snakemake.output


def tables(section):
    """label → frame for one input section (pairs as (a, b) tuples), in the layout's order."""
    paths = list(getattr(inp, section, []))
    labels = p.labels[section]
    if len(paths) != len(labels):
        raise RuntimeError(f"claims: {len(paths)} {section} inputs but {len(labels)} labels")
    return {
        tuple(lab) if isinstance(lab, (list, tuple)) else lab: read_table(path)
        for lab, path in zip(labels, paths)
    }


def frames(section):
    return {k: df for k, (df, _) in tables(section).items()}


attention = {}
for m, (df, meta) in tables("attention").items():
    # the "global" reference of Figs 3/4: uniform attention over this model's own patch grid
    attention[m] = (
        df,
        uniform_attention_distance(meta["grid_hw"], meta["patch_px"], meta["stride_px"]),
    )
inputs = ClaimInputs(
    families={m: spec["family"] for m, spec in p.models.items()},
    archs={m: spec["arch"] for m, spec in p.models.items()},
    self_cka=frames("self_cka"),
    cross_cka=frames("cross_cka"),
    attention=attention,
    head_subsets=frames("head_subsets"),
    erf=frames("erf"),
    skip=frames("skip"),
    localisation=frames("localisation"),
    probes=frames("probes"),
    per_block=frames("per_block"),
    no_skip=no_skip_specs(p.models),
)
df = summarise(inputs)
dataset = snakemake.wildcards.dataset
meta = {
    "analysis": "claims",
    "dataset": dataset,
    "inputs": {k: list(v) for k, v in p.labels.items()},
}
write_table(df, out.csv, meta)
with atomic_write(out.md) as tmp:
    tmp.write_text(to_markdown(df, title=f"Paper findings in this run ({dataset})"))
seen = df["seen"].dropna()
log.info(
    "%d metrics, %d decidable: %d seen, %d not",
    len(df),
    len(seen),
    int(seen.sum()),
    int((~seen.astype(bool)).sum()),
)
