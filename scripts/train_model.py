"""Rule train_model: train a timm model on its sample list; write model.json + taps + weights."""

from seelike.rules import run
from seelike.rules.models import train_model

run(snakemake, train_model)
