"""Rule plot_probes: Figs 11 (aggregations and single tokens per model) and 13 (models overlaid)."""

from seelike.rules import run
from seelike.rules.figures import plot_probes

run(snakemake, plot_probes)
