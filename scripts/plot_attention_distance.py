"""Rule plot_attention_distance: Figs 3 (chosen blocks) and 4 (all blocks) from the attention tables."""

from seelike.figures.attention import plot_attention_all_blocks, plot_attention_distance
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
p, out = snakemake.params, snakemake.output
tables = {m: read_table(path)[0] for m, path in zip(p.models, snakemake.input)}
plot_attention_distance(tables, p.blocks, out.fig3, out.fig3_pdf)
plot_attention_all_blocks(tables, out.fig4, out.fig4_pdf)
