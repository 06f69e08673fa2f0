"""Rule plot_localisation_summary: Fig 10-style comparison of own-patch CKA across models."""

from seelike.figures.localisation import plot_localisation_summary
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
p, out = snakemake.params, snakemake.output
tables = {m: read_table(path)[0] for m, path in zip(p.models, snakemake.input)}
plot_localisation_summary(tables, out.png, out.pdf)
