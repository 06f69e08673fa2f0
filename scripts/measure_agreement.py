"""Rule measure_agreement: rank agreement between similarity measures across cells (table and figure)."""

from seelike.rules import run

run(snakemake)
