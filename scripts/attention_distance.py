"""Rule attention_distance: mean attention distance per block × head of one ViT-family model."""

from seelike.analyses.attention import attention_distances
from seelike.data.samples import samples_hash
from seelike.device import exact_fp32, pick_device
from seelike.io import write_table
from seelike.models.load import load_model
from seelike.rules import analysis_loader, setup_rule

log = setup_rule(snakemake)
p, inp = snakemake.params, snakemake.input
cfg = p.attention
device = pick_device(p.run.device)
model, info = load_model(inp.model, device)
loader = analysis_loader(snakemake, info["data_config"], cfg)
with exact_fp32():
    res = attention_distances(
        model, loader, cls=cfg["cls"], n_images=cfg["n_images"], device=device
    )
df = res.to_frame()
df.insert(0, "model", info["name"])
g = res.grid
meta = {
    "analysis": "attention_distance",
    "model": info["name"],
    "arch": info["arch"],
    "cls": cfg["cls"],
    "n_images": res.n_images,
    "split": cfg["split"],
    "samples_hash": samples_hash(inp.samples),
    "grid_hw": g.grid_hw,
    "patch_px": g.patch_px,
    "stride_px": g.stride_px,
    "img_hw": g.img_hw,
    "num_prefix_tokens": g.num_prefix_tokens,
    "device": str(device),
}
write_table(df, snakemake.output[0], meta)
log.info(
    "%s: %d blocks × heads over %d images (cls=%s)", info["name"], len(df), res.n_images, cfg["cls"]
)
