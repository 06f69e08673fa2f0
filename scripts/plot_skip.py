"""Rule plot_skip: Fig 7 (norm ratios) and App. E.2 (cosines) from the skip tables."""

from seelike.figures.skip import plot_skip_cosine, plot_skip_ratio
from seelike.io import read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
p, out = snakemake.params, snakemake.output
tables = {m: read_table(path)[0] for m, path in zip(p.models, snakemake.input)}
plot_skip_ratio(tables, out.ratio, out.ratio_pdf)
plot_skip_cosine(tables, out.cosine, out.cosine_pdf)
