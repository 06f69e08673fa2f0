"""Rule skip_stats: skip-connection norm ratios and cosines of one model (Fig 7, App. E.2)."""

from seelike.analyses.skip import skip_statistics
from seelike.data.samples import samples_hash
from seelike.device import exact_fp32, pick_device
from seelike.io import write_table
from seelike.models.load import load_model
from seelike.rules import analysis_loader, setup_rule

log = setup_rule(snakemake)
p, inp = snakemake.params, snakemake.input
cfg = p.skip
device = pick_device(p.run.device)
model, info = load_model(inp.model, device)
loader = analysis_loader(snakemake, info["data_config"], cfg)
with exact_fp32():
    stats = skip_statistics(model, loader, n_images=cfg["n_images"], device=device)
df = stats.to_frame()
df.insert(0, "model", info["name"])
n_inf = int(df["n_inf"].sum())
if n_inf:
    log.warning(
        "%s: %d token/position ratios are infinite (zero branch output)", info["name"], n_inf
    )
meta = {
    "analysis": "skip",
    "model": info["name"],
    "arch": info["arch"],
    "family": stats.family,
    "n_images": stats.n_images,
    "split": cfg["split"],
    "samples_hash": samples_hash(inp.samples),
}
write_table(df, snakemake.output[0], meta)
log.info(
    "%s: skip statistics of %d units over %d images",
    info["name"],
    df["block"].nunique(),
    stats.n_images,
)
