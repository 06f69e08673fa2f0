"""Rule fetch_model: build a hub or checkpoint model (weights fetched or verified); write model.json + taps."""

from seelike.rules import run
from seelike.rules.models import fetch_model

run(snakemake, fetch_model)
