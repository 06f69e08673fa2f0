"""Rule plot_erf: Fig 6 map grid and the ERF size table of every model."""

from seelike.rules import run
from seelike.rules.figures import plot_erf

run(snakemake, plot_erf)
