"""Rule plot_localisation: Fig 9 / 10 heatmaps of one model's localisation table."""

from seelike.analyses.localisation import token_indices
from seelike.figures.localisation import plot_localisation
from seelike.io import read_table
from seelike.models.geometry import PositionGrid
from seelike.rules import setup_rule

setup_rule(snakemake)
df, meta = read_table(snakemake.input[0])
tokens = None
if snakemake.params.plot_tokens is not None:
    grid = PositionGrid(tuple(meta["grid_hw"]), tuple(meta["img_hw"]), 0, ())
    tokens = token_indices(snakemake.params.plot_tokens, grid)
plot_localisation(df, meta, snakemake.output.png, snakemake.output.pdf, tokens=tokens)
