"""Rule probe_features: one streaming forward pass storing the aggregated features of the probe images."""

from seelike.rules import run

run(snakemake)
