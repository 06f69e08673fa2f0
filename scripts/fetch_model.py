"""Rules fetch_model / train_model: build (hub, checkpoint) or train a timm model; write model.json + taps."""

from seelike.rules import run

run(snakemake)
