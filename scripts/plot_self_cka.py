"""Rules plot_self_cka / plot_cross_cka: CKA heatmap (Fig 1 / Fig 2) from a CKA table."""

from seelike.rules import run

run(snakemake)
