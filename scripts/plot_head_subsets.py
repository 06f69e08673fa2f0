"""Rule plot_head_subsets: Fig 5 from the head-subset CKA tables."""

from seelike.rules import run

run(snakemake)
