"""Rule head_subset_cka: CKA of first-block head subsets (local → global) with CNN units from its cache (Fig 5)."""

from seelike.analyses.head_subsets import head_subset_cka_from_cache
from seelike.data.samples import samples_hash
from seelike.device import exact_fp32, pick_device
from seelike.io import read_table, write_table
from seelike.models.load import load_model
from seelike.rules import setup_rule

log = setup_rule(snakemake)
p, inp, wc = snakemake.params, snakemake.input, snakemake.wildcards
hs = p.head_subsets
device = pick_device(p.run.device)
model, info = load_model(inp.model, device)
att, _ = read_table(inp.attention)
with exact_fp32():
    df, meta = head_subset_cka_from_cache(
        model,
        info,
        att,
        inp.samples,
        p.dataset_cfg,
        inp.cnn_cache,
        cnn_taps=hs["cnn_taps"],
        subset_size=hs["subset_size"],
        block=hs["block"],
        tokens=hs["tokens"],
        device=device,
        num_workers=p.run.num_workers,
    )
df.insert(0, "model", info["name"])
meta.update(
    {
        "analysis": "head_subset_cka",
        "model": info["name"],
        "samples_hash": samples_hash(inp.samples),
    }
)
write_table(df, snakemake.output[0], meta)
log.info(
    "%s vs %s: %d subsets × %d taps",
    info["name"],
    wc.cnn,
    df["subset"].nunique(),
    df["cnn_tap"].nunique(),
)
