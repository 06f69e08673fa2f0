"""Rules fetch_model / train_model: build (hub, checkpoint) or train a timm model; write model.json + taps."""

from seelike.device import pick_device
from seelike.models.acquire import acquire_model
from seelike.rules import setup_rule

log = setup_rule(snakemake)  # noqa: F821
spec = snakemake.params.spec  # noqa: F821
info = acquire_model(
    snakemake.wildcards.model,  # noqa: F821
    spec,
    snakemake.output.json,  # noqa: F821
    snakemake.output.taps,  # noqa: F821
    samples_csv=snakemake.input.get("samples") or None,  # noqa: F821
    dataset_cfg=snakemake.params.get("dataset_cfg"),  # noqa: F821
    device=pick_device(snakemake.params.get("device", "cpu")),  # noqa: F821
)
log.info(
    "model %s: %s taps, %s parameters, metrics %s",
    info["name"],
    info["num_taps"],
    info["num_params"],
    info.get("metrics"),
)
