"""Rule per_block_cka: each block output of a reference model against the same block of another checkpoint."""

import pandas as pd

from seelike.analyses.cka_tables import per_block_cka
from seelike.io import read_table, write_table
from seelike.rules import setup_rule

log = setup_rule(snakemake)
cross, meta = read_table(snakemake.input.cka)
df = per_block_cka(cross, pd.read_csv(snakemake.input.taps))
write_table(df, snakemake.output[0], {**meta, "kinds": sorted(set(df["kind"]))})
log.info(
    "%s vs %s: %d blocks, CKA first %.3f, last %.3f",
    meta["model_a"],
    meta["model_b"],
    len(df),
    df["cka"].iloc[0],
    df["cka"].iloc[-1],
)
