"""Rule receptive_field: effective receptive field maps and sizes of one model's taps (Fig 6, App. C.4)."""

import numpy as np
import pandas as pd

from seelike.analyses.receptive_field import (
    auto_erf_taps,
    effective_receptive_fields,
    erf_sizes_frame,
)
from seelike.data.samples import samples_hash
from seelike.device import exact_fp32, pick_device
from seelike.io import atomic_write, write_table
from seelike.models.load import load_model
from seelike.models.taps import discover_taps, tap_family
from seelike.rules import analysis_loader, setup_rule

log = setup_rule(snakemake)
p, inp, out = snakemake.params, snakemake.input, snakemake.output
cfg = p.erf
device = pick_device(p.run.device)
model, info = load_model(inp.model, device)
all_taps, family = discover_taps(model), tap_family(model)
explicit = cfg["taps"].get(info["name"])
if explicit:
    by_name = {t.name: t for t in all_taps}
    unknown = [n for n in explicit if n not in by_name]
    if unknown:
        raise ValueError(
            f"erf.taps.{info['name']}: unknown taps {unknown}; see results/models/{info['name']}/taps.csv"
        )
    chosen = {"explicit": [by_name[n] for n in explicit]}
else:
    chosen = {r: auto_erf_taps(all_taps, family, r) for r in cfg["residual"]}
taps = list(
    {t.name: t for ts in chosen.values() for t in ts}.values()
)  # one pass for all, no duplicates
loader = analysis_loader(snakemake, info["data_config"], cfg)
with exact_fp32():
    res = effective_receptive_fields(
        model,
        loader,
        taps,
        n_images=cfg["n_images"],
        channel_reduce=cfg["channel_reduce"],
        device=device,
    )
frames = []
for residual, ts in chosen.items():
    f = erf_sizes_frame(res, ts, cfg["quantiles"])
    f.insert(0, "residual", residual)
    frames.append(f)
df = pd.concat(frames, ignore_index=True)
df.insert(0, "model", info["name"])
df.insert(1, "family", family)
meta = {
    "analysis": "erf",
    "model": info["name"],
    "arch": info["arch"],
    "family": family,
    "n_images": res.n_images,
    "channel_reduce": res.channel_reduce,
    "img_hw": res.img_hw,
    "split": cfg["split"],
    "samples_hash": samples_hash(inp.samples),
    "quantiles": cfg["quantiles"],
    "centre": "(H//2, W//2) of the tap's map / patch grid, prefix tokens excluded",
    "size_reference": "mass centroid of the ERF map",
}
write_table(df, out.table, meta)
with atomic_write(out.maps) as tmp, open(tmp, "wb") as fh:
    np.savez_compressed(fh, **{t.name: res.maps[t.name] for t in taps})
log.info("%s: ERF of %d taps over %d images", info["name"], len(taps), res.n_images)
