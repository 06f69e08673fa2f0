"""Rule localisation: CKA between token representations and the input patch at every grid position."""

from seelike.analyses.localisation import build_localisation
from seelike.device import exact_fp32, pick_device
from seelike.io import write_table
from seelike.models.load import load_model
from seelike.rules import setup_rule

log = setup_rule(snakemake)
p, inp = snakemake.params, snakemake.input
model_key = snakemake.wildcards.model
device = pick_device(p.run.device)
model, info = load_model(inp.model, device)
with exact_fp32():
    df, meta = build_localisation(
        model, info, inp.samples, p.dataset_cfg, p.localisation, model_key, device=device,
        num_workers=p.run.num_workers,
    )  # fmt: skip
write_table(df, snakemake.output[0], meta)
own = df[df.token == df.patch]["cka"]
log.info(
    "%s at %s: %s grid, %d images, own-patch CKA mean %.3f", model_key, meta["tap"], meta["grid_hw"],
    meta["n_images"], own.mean(),
)  # fmt: skip
