"""Rule samples: the fixed, seeded, ordered image list of one dataset."""

from seelike.data.samples import build_samples, samples_hash, write_samples
from seelike.rules import setup_rule

log = setup_rule(snakemake)
df = build_samples(snakemake.params.cfg, seed=snakemake.params.seed)
write_samples(df, snakemake.output[0])
log.info(
    "%d images (%s), hash %s",
    len(df),
    df["split"].value_counts().to_dict(),
    samples_hash(snakemake.output[0]),
)
