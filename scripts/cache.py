"""Rule cache: one streaming forward pass writing every tap's per-minibatch Gram (packed)."""

from seelike.analyses.cache import build_cache
from seelike.device import pick_device
from seelike.models.load import load_model
from seelike.rules import Progress, setup_rule

log = setup_rule(snakemake)
p = snakemake.params
device = pick_device(p.run.device)
model, info = load_model(snakemake.input.model, device)
meta = build_cache(
    model,
    info,
    snakemake.input.samples,
    p.dataset_cfg,
    snakemake.output[0],
    n_images=p.cka["n_images"],
    batch_size=p.cka["batch_size"],
    repeats=p.cka["repeats"],
    seed=p.seed,
    split=p.cka["split"],
    device=device,
    num_workers=p.run.num_workers,
    progress=Progress(log, f"cache {info['name']}"),
)
log.info(
    "cached %d taps, %.1f MB of Grams, %s images/s",
    len(meta["taps"]),
    meta["gram_bytes"] / 1e6,
    meta["images_per_second"],
)
