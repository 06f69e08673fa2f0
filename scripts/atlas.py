"""Rule atlas: every model pair at once — the offline page, the pair-score table and the overview figure."""

from seelike.rules import run
from seelike.rules.figures import atlas

run(snakemake, atlas)
