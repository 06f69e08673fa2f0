"""Rule measure_agreement: rank agreement between similarity measures across cells (table and figure)."""

from seelike.rules import run
from seelike.rules.figures import measure_agreement

run(snakemake, measure_agreement)
