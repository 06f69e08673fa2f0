"""Rule plot_erf: Fig 6 map grid and the ERF size table of every model."""

from seelike.rules import run

run(snakemake)
