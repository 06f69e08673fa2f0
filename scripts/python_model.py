"""Rule python_model: build a python factory's model and save its weights; write model.json + taps."""

from seelike.rules import run
from seelike.rules.models import python_model

run(snakemake, python_model)
