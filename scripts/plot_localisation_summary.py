"""Rule plot_localisation_summary: Fig 10-style comparison of own-patch CKA across models."""

from seelike.rules import run

run(snakemake)
