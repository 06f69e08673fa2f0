"""Rule attention_distance: mean attention distance per block × head of one ViT-family model."""

from seelike.rules import run
from seelike.rules.model_passes import attention_distance

run(snakemake, attention_distance)
