"""Rule similarity: further similarity measures (cka.measures) of every tap pair of two cached models, with the CKA rule's linear CKA, in one long table."""

from seelike.rules import run
from seelike.rules.comparisons import similarity

run(snakemake, similarity)
