"""Rule plot_skip: Fig 7 (norm ratios) and App. E.2 (cosines) from the skip tables."""

from seelike.rules import run
from seelike.rules.figures import plot_skip

run(snakemake, plot_skip)
