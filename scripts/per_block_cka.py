"""Rule per_block_cka: each block output of a reference model against the same block of another checkpoint."""

from seelike.rules import run
from seelike.rules.comparisons import per_block_cka

run(snakemake, per_block_cka)
