"""Rule skip_stats: skip-connection norm ratios and cosines of one model (Fig 7, App. E.2)."""

from seelike.rules import run
from seelike.rules.model_passes import skip_stats

run(snakemake, skip_stats)
