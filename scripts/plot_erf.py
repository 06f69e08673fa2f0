"""Rule plot_erf: Fig 6 map grid and the ERF size table of every model."""

import numpy as np

from seelike.figures.receptive_field import erf_size_summary, plot_erf_grid
from seelike.io import atomic_write, read_table
from seelike.rules import setup_rule

setup_rule(snakemake)
p, inp, out = snakemake.params, snakemake.input, snakemake.output
tables = {m: read_table(path)[0] for m, path in zip(p.models, inp.tables)}
maps = {}
for m, path in zip(p.models, inp.maps):
    with np.load(path) as z:
        maps[m] = {k: z[k] for k in z.files}
sizes = erf_size_summary(tables)
with atomic_write(out.sizes) as tmp:
    sizes.to_csv(tmp, index=False)
plot_erf_grid(maps, sizes, out.png, out.pdf)
