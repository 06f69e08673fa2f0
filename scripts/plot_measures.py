"""Rule plot_measures: Fig 1/2-style heatmaps of every similarity measure of one model pair."""

from seelike.rules import run

run(snakemake)
