"""Rule plot_localisation_summary: Fig 10-style comparison of own-patch CKA across models."""

from seelike.rules import run
from seelike.rules.figures import plot_localisation_summary

run(snakemake, plot_localisation_summary)
