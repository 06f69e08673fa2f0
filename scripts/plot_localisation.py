"""Rule plot_localisation: Fig 9 / 10 heatmaps of one model's localisation table."""

from seelike.rules import run
from seelike.rules.figures import plot_localisation

run(snakemake, plot_localisation)
