"""Rules fetch_model / train_model / python_model: build (hub, checkpoint, python factory) or train a model;
write model.json + taps."""

from seelike.rules import run

run(snakemake)
