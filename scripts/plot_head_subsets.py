"""Rule plot_head_subsets: Fig 5 from the head-subset CKA tables."""

from seelike.figures.attention import plot_head_subsets
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
p, out = snakemake.params, snakemake.output
tables = {m: read_table(path)[0] for m, path in zip(p.models, snakemake.input)}
plot_head_subsets(tables, out.png, out.pdf)
