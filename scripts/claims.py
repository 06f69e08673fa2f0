"""Rule claims: one number per testable finding of the paper from the pipeline's own tables (CSV + markdown)."""

from seelike.rules import run
from seelike.rules.claims import claims

run(snakemake, claims)
