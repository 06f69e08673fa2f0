"""Rule cache: one streaming forward pass writing every tap's per-minibatch Gram (packed)."""

from seelike.rules import run
from seelike.rules.model_passes import cache

run(snakemake, cache)
