"""Rule probe_features: one streaming forward pass storing the aggregated features of the probe images."""

from seelike.rules import run
from seelike.rules.model_passes import probe_features

run(snakemake, probe_features)
