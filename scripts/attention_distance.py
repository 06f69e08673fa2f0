"""Rule attention_distance: mean attention distance per block × head of one ViT-family model."""

from seelike.rules import run

run(snakemake)
