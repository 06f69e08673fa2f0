"""Rule samples: the fixed, seeded, ordered image list of one dataset."""

from seelike.rules import run
from seelike.rules.data import samples

run(snakemake, samples)
