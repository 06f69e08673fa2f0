"""Rule per_block_cka: each block output of a reference model against the same block of another checkpoint."""

from seelike.rules import run

run(snakemake)
