"""Rule attention_distance_convention: the attention-distance table in a further CLS convention."""

from seelike.rules import run

run(snakemake)
