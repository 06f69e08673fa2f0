"""Rule plot_probes: Figs 11 (aggregations and single tokens per model) and 13 (models overlaid)."""

from seelike.figures.probes import plot_probe_aggregations, plot_probe_models
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
p, out = snakemake.params, snakemake.output
tables = {m: read_table(path)[0] for m, path in zip(p.models, snakemake.input)}
plot_probe_aggregations(tables, out.fig11, out.fig11_pdf)
plot_probe_models(tables, out.fig13, out.fig13_pdf)
