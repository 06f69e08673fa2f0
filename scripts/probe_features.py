"""Rule probe_features: one streaming forward pass storing the aggregated features of the probe images."""

from seelike.analyses.probes import build_probe_features
from seelike.device import pick_device
from seelike.models.load import load_model
from seelike.rules import Progress, setup_rule

log = setup_rule(snakemake)
p, inp = snakemake.params, snakemake.input
model_key = snakemake.wildcards.model
device = pick_device(p.run.device)
model, info = load_model(inp.model, device)
meta = build_probe_features(
    model, info, inp.samples, p.dataset_cfg, snakemake.output[0], p.probes, model_key,
    seed=p.seed, device=device, num_workers=p.run.num_workers, progress=Progress(log, f"probe features {model_key}"),
)  # fmt: skip
log.info(
    "%s: %d images, %d taps (%d with per-token features) in %.1f s",
    model_key, meta["n_images"], len(meta["taps"]), sum(t["token"] for t in meta["taps"]), meta["seconds"],
)  # fmt: skip
