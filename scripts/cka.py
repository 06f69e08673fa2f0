"""Rule cka: minibatch CKA of every tap pair of two cached models (a == b: self-similarity)."""

from seelike.rules import run
from seelike.rules.comparisons import cka

run(snakemake, cka)
