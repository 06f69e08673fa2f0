"""Rule plot_measures: Fig 1/2-style heatmaps of every similarity measure of one model pair."""

from seelike.rules import run
from seelike.rules.figures import plot_measures

run(snakemake, plot_measures)
