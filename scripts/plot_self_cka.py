"""Rule plot_self_cka: Fig 1, the CKA heatmap of a model against itself, from its CKA table."""

from seelike.rules import run
from seelike.rules.figures import plot_self_cka

run(snakemake, plot_self_cka)
