"""Rule claims: one number per testable finding of the paper from the pipeline's own tables (CSV + markdown)."""

from seelike.rules import run

run(snakemake)
