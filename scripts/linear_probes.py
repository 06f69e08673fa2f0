"""Rule linear_probes: closed-form ridge probes for every tap, aggregation and shot count."""

from seelike.analyses.probes import probe_table, read_features_meta
from seelike.analyses.ridge import lambda_grid
from seelike.data.samples import samples_hash
from seelike.device import pick_device
from seelike.io import write_table
from seelike.rules import setup_rule

log = setup_rule(snakemake)
p, inp = snakemake.params, snakemake.input
cfg = p.probes
device = pick_device(p.run.device)
feats = read_features_meta(inp.features)
if feats["samples_hash"] != samples_hash(inp.samples):
    raise ValueError(
        f"probe features {inp.features} come from another sample list ({feats['samples_hash']}); rerun "
        "probe_features (`snakemake --forcerun probe_features`)"
    )
lams = lambda_grid(cfg["lambdas"])
df = probe_table(
    inp.features, lams, cfg["holdout"], p.seed, device, model_name=snakemake.wildcards.model,
    progress=lambda tap, k: log.info("probed %s (%s-shot)", tap, k),
)  # fmt: skip
meta = {
    "analysis": "linear_probes",
    "model": snakemake.wildcards.model,
    "arch": feats.get("arch"),
    "family": feats.get("family"),
    "samples_hash": feats["samples_hash"],
    "shots": feats["shots"],
    "n_test": int(df["n_test"].iloc[0]),
    "lambdas": lams,
    "lambda_penalty": "lambda * n_fit on z-scored features (fit statistics), centred +-1 targets",
    "holdout": cfg["holdout"],
    "tie_break": "larger lambda",
    "seed": p.seed,
    "pool_hw": feats.get("pool_hw"),
    "num_prefix_tokens": feats.get("num_prefix_tokens"),
    "device": str(device),
}
write_table(df, snakemake.output[0], meta)
best = df[df.aggregation != "token"].groupby("tap", sort=False)["accuracy"].max()
log.info("best accuracy per tap:\n%s", best.to_string())
