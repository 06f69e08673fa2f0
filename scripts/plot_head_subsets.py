"""Rule plot_head_subsets: Fig 5 from the head-subset CKA tables."""

from seelike.rules import run
from seelike.rules.figures import plot_head_subsets

run(snakemake, plot_head_subsets)
