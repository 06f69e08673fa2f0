"""Rules fetch_model / train_model: build (hub, checkpoint) or train a timm model; write model.json + taps."""

from seelike.device import pick_device
from seelike.models.acquire import acquire_model
from seelike.rules import setup_rule

log = setup_rule(snakemake)
spec = snakemake.params.spec
info = acquire_model(
    snakemake.wildcards.model,
    spec,
    snakemake.output.json,
    snakemake.output.taps,
    samples_csv=snakemake.input.get("samples") or None,
    dataset_cfg=snakemake.params.get("dataset_cfg"),
    device=pick_device(snakemake.params.run.device),
)
log.info(
    "model %s: %s taps, %s parameters, metrics %s",
    info["name"],
    info["num_taps"],
    info["num_params"],
    info.get("metrics"),
)
