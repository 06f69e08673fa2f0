"""Rule plot_per_block: Fig 12, per-block CKA of checkpoints of one architecture against a reference."""

from seelike.rules import run
from seelike.rules.figures import plot_per_block

run(snakemake, plot_per_block)
