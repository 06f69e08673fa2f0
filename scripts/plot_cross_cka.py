"""Rule plot_cross_cka: Fig 2, the CKA heatmap of two models, from their CKA table."""

from seelike.rules import run
from seelike.rules.figures import plot_cross_cka

run(snakemake, plot_cross_cka)
