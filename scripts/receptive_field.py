"""Rule receptive_field: effective receptive field maps and sizes of one model's taps (Fig 6, App. C.4)."""

from seelike.rules import run
from seelike.rules.model_passes import receptive_field

run(snakemake, receptive_field)
