"""Rule plot_attention_distance: Figs 3 (chosen blocks) and 4 (all blocks) from the attention tables."""

from seelike.rules import run
from seelike.rules.figures import plot_attention_distance

run(snakemake, plot_attention_distance)
