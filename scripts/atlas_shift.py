"""Rule atlas_shift: how every pair's scores move between the atlas datasets (table and figure)."""

from seelike.rules import run
from seelike.rules.figures import atlas_shift

run(snakemake, atlas_shift)
