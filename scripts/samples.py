"""Rule samples: the fixed, seeded, ordered image list of one dataset."""

from seelike.rules import run

run(snakemake)
