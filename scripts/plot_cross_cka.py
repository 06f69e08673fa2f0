"""Rules plot_self_cka / plot_cross_cka: CKA heatmap (Fig 1 / Fig 2) from a CKA table."""

from seelike.figures.cka import plot_cka_heatmap
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
df, meta = read_table(snakemake.input[0])
plot_cka_heatmap(df, meta, snakemake.output.png, snakemake.output.pdf)
