"""Rule attention_distance_convention: the attention-distance table in a further CLS convention."""

from seelike.rules import run
from seelike.rules.model_passes import attention_distance_convention

run(snakemake, attention_distance_convention)
