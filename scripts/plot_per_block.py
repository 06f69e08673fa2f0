"""Rule plot_per_block: Fig 12, per-block CKA of checkpoints of one architecture against a reference."""

from seelike.figures.cka import plot_per_block_cka
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
plot_per_block_cka(
    [read_table(p) for p in snakemake.input], snakemake.output.png, snakemake.output.pdf
)
