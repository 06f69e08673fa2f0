"""Rule linear_probes: closed-form ridge probes for every tap, aggregation and shot count."""

from seelike.rules import run
from seelike.rules.comparisons import linear_probes

run(snakemake, linear_probes)
