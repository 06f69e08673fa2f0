"""Rule plot_per_block: Fig 12, per-block CKA of checkpoints of one architecture against a reference."""

from seelike.rules import run

run(snakemake)
