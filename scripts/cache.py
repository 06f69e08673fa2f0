"""Rule cache: one streaming forward pass writing every tap's per-minibatch Gram (packed)."""

from seelike.rules import run

run(snakemake)
