"""Rule cka: minibatch CKA of every tap pair of two cached models (a == b: self-similarity)."""

from seelike.analyses.cka_tables import cka_from_caches
from seelike.device import pick_device
from seelike.io import write_table
from seelike.rules import setup_rule

log = setup_rule(snakemake)
df, meta = cka_from_caches(
    snakemake.input.a, snakemake.input.b, pick_device(snakemake.params.device)
)
write_table(df, snakemake.output[0], meta)
log.info(
    "%s vs %s: %d tap pairs, mean CKA %.3f",
    meta["model_a"],
    meta["model_b"],
    len(df),
    df["cka"].mean(),
)
