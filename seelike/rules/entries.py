"""One entry function per workflow rule, `ENTRIES[rule name]`, each taking the job's `RuleContext`.

An entry reads the rule's inputs and params, calls the package (`seelike.analyses`, `seelike.figures`,
`seelike.claims`, ...), and writes the outputs with metadata from `RuleContext.metadata`. The analyses stream
their images through `seelike.analyses.stream` and apply exact fp32 themselves; what an entry holds beyond that
is only which settings go where.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seelike.rules.context import RuleContext

ENTRIES: dict[str, Callable[[RuleContext], Any]] = {}


def entry(*rules: str):
    """Register a function as the entry of `rules` (default: its own name)."""

    def register(fn):
        for rule in rules or (fn.__name__,):
            ENTRIES[rule] = fn
        return fn

    return register


def _tables(ctx: RuleContext, paths=None) -> dict[str, Any]:
    """model → frame of a figure rule's input tables (`params.models`, in input order)."""
    from seelike.io import read_table

    paths = list(ctx.input if paths is None else paths)
    return {m: read_table(path)[0] for m, path in zip(ctx.params.models, paths)}


# ------------------------------------------------------------------------------------------- data and models
@entry()
def samples(ctx: RuleContext) -> None:
    from seelike.data.samples import build_samples, samples_hash, write_samples
    from seelike.data.sources import open_source, verify_images

    df = build_samples(ctx.params.cfg, seed=ctx.params.seed)
    if (
        ctx.params.cfg["source"] == "imagefolder"
    ):  # files a user copied in: decode each listed one once
        verify_images(open_source(ctx.params.cfg), list(df["id"]))
    write_samples(df, ctx.output[0])
    ctx.log.info(
        "%d images (%s), hash %s",
        len(df),
        df["split"].value_counts().to_dict(),
        samples_hash(ctx.output[0]),
    )


@entry("fetch_model", "train_model", "python_model")
def model(ctx: RuleContext) -> None:
    from seelike.models.acquire import acquire_model

    info = acquire_model(
        ctx.wildcards.model,
        ctx.params.spec,
        ctx.output.json,
        ctx.output.taps,
        samples_csv=ctx.input.get("samples") or None,
        dataset_cfg=ctx.params.get("dataset_cfg"),
        device=ctx.device,
    )
    ctx.log.info(
        "model %s: %s taps, %s parameters, metrics %s",
        info["name"],
        info["num_taps"],
        info["num_params"],
        info.get("metrics"),
    )


# ------------------------------------------------------------------------------------------- model passes
@entry()
def cache(ctx: RuleContext) -> None:
    from seelike.analyses.cache import build_cache

    model, info = ctx.load_model()
    cfg = ctx.params.cka
    meta = build_cache(
        model, info, ctx.input.samples, ctx.params.dataset_cfg, ctx.output[0],
        n_images=cfg["n_images"], batch_size=cfg["batch_size"], repeats=cfg["repeats"],
        seed=ctx.params.seed, split=cfg["split"], device=ctx.device,
        num_workers=ctx.run.num_workers, progress=ctx.progress("cache"),
        extra_meta=ctx.metadata("cache", split=cfg["split"], n_images=cfg["n_images"]),
    )  # fmt: skip
    ctx.log.info(
        "cached %d taps, %.1f MB of Grams, %s images/s",
        len(meta["taps"]),
        meta["gram_bytes"] / 1e6,
        meta["images_per_second"],
    )


@entry("attention_distance", "attention_distance_convention")
def attention_distance(ctx: RuleContext) -> None:
    from seelike.analyses.attention import attention_distances
    from seelike.io import write_table

    model, info = ctx.load_model()
    cfg = ctx.params.attention
    res = attention_distances(
        model, ctx.loader(cfg), cls=cfg["cls"], n_images=cfg["n_images"], device=ctx.device,
        progress=ctx.progress("attention distance"),
    )  # fmt: skip
    df = res.to_frame()
    df.insert(0, "model", info["name"])
    g = res.grid
    meta = ctx.metadata(
        "attention_distance", split=cfg["split"], n_images=res.n_images, cls=cfg["cls"],
        grid_hw=g.grid_hw, patch_px=g.patch_px, stride_px=g.stride_px, img_hw=g.img_hw,
        num_prefix_tokens=g.num_prefix_tokens, kind=res.kind, blocks=res.geometry(),
    )  # fmt: skip
    write_table(df, ctx.output[0], meta)
    ctx.log.info(
        "%s: %d blocks × heads over %d images (cls=%s)",
        info["name"], len(df), res.n_images, cfg["cls"],
    )  # fmt: skip


@entry()
def head_subset_cka(ctx: RuleContext) -> None:
    from seelike.analyses.head_subsets import head_subset_cka_from_cache
    from seelike.io import read_table, write_table

    model, info = ctx.load_model()
    hs = ctx.params.head_subsets
    att, _ = read_table(ctx.input.attention)
    df, fields = head_subset_cka_from_cache(
        model, info, att, ctx.input.samples, ctx.params.dataset_cfg, ctx.input.cnn_cache,
        cnn_taps=hs["cnn_taps"], subset_size=hs["subset_size"], block=hs["block"], tokens=hs["tokens"],
        device=ctx.device, num_workers=ctx.run.num_workers, progress=ctx.progress("head subsets"),
    )  # fmt: skip
    df.insert(0, "model", info["name"])
    plan = fields["plan"]
    meta = ctx.metadata("head_subset_cka", split=plan["split"], n_images=plan["n_images"], **fields)
    write_table(df, ctx.output[0], meta)
    ctx.log.info(
        "%s vs %s: %d subsets × %d taps",
        info["name"], ctx.wildcards.cnn, df["subset"].nunique(), df["cnn_tap"].nunique(),
    )  # fmt: skip


@entry()
def receptive_field(ctx: RuleContext) -> None:
    import numpy as np

    from seelike.analyses.receptive_field import (
        choose_erf_taps,
        distinct_taps,
        effective_receptive_fields,
        erf_table,
    )
    from seelike.io import atomic_write, write_table
    from seelike.models.taps import discover_taps, tap_family

    model, info = ctx.load_model()
    cfg, name = ctx.params.erf, info["name"]
    family = tap_family(model)
    chosen = choose_erf_taps(
        discover_taps(model), family, cfg["taps"].get(name), cfg["residual"], name
    )
    taps = distinct_taps(chosen)
    res = effective_receptive_fields(
        model, ctx.loader(cfg), taps, n_images=cfg["n_images"], channel_reduce=cfg["channel_reduce"],
        device=ctx.device, progress=ctx.progress("receptive field"),
    )  # fmt: skip
    df = erf_table(res, chosen, cfg["quantiles"])
    df.insert(0, "model", name)
    df.insert(1, "family", family)
    meta = ctx.metadata(
        "erf", family=family, split=cfg["split"], n_images=res.n_images,
        channel_reduce=res.channel_reduce, img_hw=res.img_hw, quantiles=cfg["quantiles"],
        centre="(gh//2, gw//2) of the tap's own grid (nchw / nhwc map or token grid), its prefix tokens excluded",
        size_reference="mass centroid of the ERF map",
    )  # fmt: skip
    write_table(df, ctx.output.table, meta)
    with atomic_write(ctx.output.maps) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{t.name: res.maps[t.name] for t in taps})
    ctx.log.info("%s: ERF of %d taps over %d images", name, len(taps), res.n_images)


@entry()
def skip_stats(ctx: RuleContext) -> None:
    from seelike.analyses.skip import skip_statistics
    from seelike.io import write_table

    model, info = ctx.load_model()
    cfg = ctx.params.skip
    stats = skip_statistics(
        model, ctx.loader(cfg), n_images=cfg["n_images"], device=ctx.device,
        progress=ctx.progress("skip statistics"),
    )  # fmt: skip
    df = stats.to_frame()
    df.insert(0, "model", info["name"])
    n_inf = int(df["n_inf"].sum())
    if n_inf:
        ctx.log.warning(
            "%s: %d token/position ratios are infinite (zero branch output)", info["name"], n_inf
        )
    meta = ctx.metadata("skip", family=stats.family, split=cfg["split"], n_images=stats.n_images)
    write_table(df, ctx.output[0], meta)
    ctx.log.info(
        "%s: skip statistics of %d units over %d images",
        info["name"], df["block"].nunique(), stats.n_images,
    )  # fmt: skip


@entry()
def probe_features(ctx: RuleContext) -> None:
    from seelike.analyses.probes import extract_probe_features, plan_probe_features
    from seelike.data.loader import read_samples

    model, info = ctx.load_model()
    cfg, seed = ctx.params.probes, ctx.params.seed
    plan = plan_probe_features(model, read_samples(ctx.input.samples), cfg, info["name"], seed)
    n = len(plan.rows)
    extra = ctx.metadata(
        "probe_features", n_images=n, splits=plan.rows["split"].tolist(),
        ids=plan.rows["id"].astype(str).tolist(), train_sets=plan.train_sets,
        shots=[str(k) for k in cfg["shots"]], seed=int(seed),
    )  # fmt: skip
    meta = extract_probe_features(
        model, ctx.loader(rows=plan.rows, batch_size=cfg["batch_size"]), n, ctx.output[0],
        plan.taps, plan.token_taps, cfg.get("aggregations"), ctx.device, extra_meta=extra,
        progress=ctx.progress("probe features"),
    )  # fmt: skip
    ctx.log.info(
        "%s: %d images, %d taps (%d with per-token features) in %.1f s",
        info["name"], meta["n_images"], len(meta["taps"]), sum(t["token"] for t in meta["taps"]),
        meta["seconds"],
    )  # fmt: skip


@entry()
def localisation(ctx: RuleContext) -> None:
    from seelike.analyses.localisation import localisation_maps
    from seelike.io import write_table

    model, info = ctx.load_model()
    cfg, name = ctx.params.localisation, info["name"]
    res = localisation_maps(
        model, ctx.loader(cfg), tap=(cfg.get("taps") or {}).get(name), tokens=cfg.get("tokens"),
        device=ctx.device, n_images=cfg["n_images"], progress=ctx.progress("localisation"),
    )  # fmt: skip
    df = res.to_frame()
    df.insert(0, "model", name)
    meta = ctx.metadata(
        "localisation", split=cfg["split"], n_images=res.n_images, batch_size=cfg["batch_size"],
        **res.fields(),
    )  # fmt: skip
    write_table(df, ctx.output[0], meta)
    own = df[df.token == df.patch]["cka"]
    ctx.log.info(
        "%s at %s: %s grid, %d images, own-patch CKA mean %.3f",
        name, res.tap, meta["grid_hw"], res.n_images, own.mean(),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- comparisons
@entry()
def cka(ctx: RuleContext) -> None:
    from seelike.analyses.cache import read_cache_meta
    from seelike.analyses.cka_tables import cka_from_caches
    from seelike.io import write_table

    permutations = (ctx.params.get("cka") or {}).get("permutations", 0)
    df, fields = cka_from_caches(ctx.input.a, ctx.input.b, ctx.device, permutations=permutations)
    cache_a, plan = read_cache_meta(ctx.input.a), fields["plan"]
    meta = ctx.metadata(
        "cka", samples={"samples_hash": plan["samples_hash"], **cache_a},
        split=plan["split"], n_images=plan["n_images"], **fields,
    )  # fmt: skip
    write_table(df, ctx.output[0], meta)
    ctx.log.info(
        "%s vs %s: %d tap pairs, mean CKA %.3f",
        fields["model_a"], fields["model_b"], len(df), df["cka"].mean(),
    )  # fmt: skip


@entry()
def similarity(ctx: RuleContext) -> None:
    from dataclasses import fields

    from seelike.analyses.cache import read_cache_meta
    from seelike.analyses.cka_tables import measures_from_caches, with_linear_cka
    from seelike.io import read_table, write_table
    from seelike.similarity import MeasureOptions

    cfg = ctx.params.cka
    # the job's params hold only the requested measures' settings; the rest keep their defaults
    options = MeasureOptions(
        **{f.name: cfg[f.name] for f in fields(MeasureOptions) if f.name in cfg}
    )
    others = [m for m in cfg["measures"] if m != "linear_cka"]
    df, fields = measures_from_caches(
        ctx.input.a, ctx.input.b, others, options, ctx.device,
        permutations=cfg["permutations"], bures_taps=cfg.get("bures_taps", "block_outputs"),
    )  # fmt: skip
    df, fields = with_linear_cka(*read_table(ctx.input.cka), df, fields)
    plan = fields["plan"]
    meta = ctx.metadata(
        "similarity", samples={"samples_hash": plan["samples_hash"], **read_cache_meta(ctx.input.a)},
        split=plan["split"], n_images=plan["n_images"], **fields,
    )  # fmt: skip
    write_table(df, ctx.output[0], meta)
    summary = df.groupby("measure", sort=False)["value"].mean()
    ctx.log.info(
        "%s vs %s: %d tap pairs; mean per measure: %s",
        fields["model_a"], fields["model_b"], int((df["measure"] == "linear_cka").sum()),
        ", ".join(f"{m} {v:.3f}" for m, v in summary.items()),
    )  # fmt: skip


@entry()
def per_block_cka(ctx: RuleContext) -> None:
    import pandas as pd

    from seelike.analyses.cka_tables import per_block_cka as per_block
    from seelike.io import read_table, write_table

    cross, fields = read_table(ctx.input.cka)
    df = per_block(cross, pd.read_csv(ctx.input.taps))
    # the cross-CKA table's metadata, then this output's own keys
    meta = {
        **fields,
        **ctx.metadata("per_block_cka", samples=fields, device=None, kinds=sorted(set(df["kind"]))),
    }
    write_table(df, ctx.output[0], meta)
    ctx.log.info(
        "%s vs %s: %d blocks, CKA first %.3f, last %.3f",
        fields["model_a"], fields["model_b"], len(df), df["cka"].iloc[0], df["cka"].iloc[-1],
    )  # fmt: skip


@entry()
def linear_probes(ctx: RuleContext) -> None:
    from seelike.analyses.probes import probe_table, read_features_meta
    from seelike.analyses.ridge import lambda_grid
    from seelike.data.samples import samples_hash
    from seelike.io import write_table

    cfg, name = ctx.params.probes, ctx.wildcards.model
    feats = read_features_meta(ctx.input.features)
    if feats["samples_hash"] != samples_hash(ctx.input.samples):
        raise ValueError(
            f"probe features {ctx.input.features} come from another sample list ({feats['samples_hash']}); "
            "rerun probe_features (`snakemake --forcerun probe_features`)"
        )
    lams = lambda_grid(cfg["lambdas"])
    df = probe_table(
        ctx.input.features, lams, cfg["holdout"], ctx.params.seed, ctx.device, model_name=name,
        progress=ctx.progress(f"linear probes {name}", unit="fit"),
    )  # fmt: skip
    meta = ctx.metadata(
        "linear_probes", model=name, arch=feats.get("arch"), family=feats.get("family"),
        shots=feats["shots"], n_test=int(df["n_test"].iloc[0]), lambdas=lams,
        lambda_penalty="lambda * n_fit on z-scored features (fit statistics), centred +-1 targets",
        holdout=cfg["holdout"], tie_break="larger lambda", seed=ctx.params.seed,
        pool_hw=feats.get("pool_hw"),
    )  # fmt: skip
    write_table(df, ctx.output[0], meta)
    best = df[df.aggregation != "token"].groupby("tap", sort=False)["accuracy"].max()
    ctx.log.info("best accuracy per tap:\n%s", best.to_string())


# ------------------------------------------------------------------------------------------- figures
@entry("plot_self_cka", "plot_cross_cka")
def plot_cka(ctx: RuleContext) -> None:
    from seelike.figures.cka import plot_cka_heatmap
    from seelike.io import read_table

    df, meta = read_table(ctx.input[0])
    plot_cka_heatmap(df, meta, ctx.output.png, ctx.output.pdf)


@entry()
def plot_measures(ctx: RuleContext) -> None:
    from seelike.figures.measures import plot_measure_heatmaps
    from seelike.io import read_table

    df, meta = read_table(ctx.input[0])
    plot_measure_heatmaps(df, meta, ctx.output.png, ctx.output.pdf)


@entry()
def measure_agreement(ctx: RuleContext) -> None:
    from seelike.analyses.agreement import agreement_table
    from seelike.figures.measures import plot_measure_agreement
    from seelike.io import atomic_write, read_table

    tables = {tuple(p): read_table(path)[0] for p, path in zip(ctx.params.pairs, ctx.input)}
    agreement = agreement_table(tables)
    with atomic_write(ctx.output.csv) as tmp:
        agreement.to_csv(tmp, index=False)
    plot_measure_agreement(agreement, ctx.output.png, ctx.output.pdf)
    ctx.log.info("measure agreement (Spearman across cells):\n%s", agreement.to_string(index=False))


@entry()
def plot_per_block(ctx: RuleContext) -> None:
    from seelike.figures.cka import plot_per_block_cka
    from seelike.io import read_table

    plot_per_block_cka([read_table(p) for p in ctx.input], ctx.output.png, ctx.output.pdf)


@entry()
def plot_attention_distance(ctx: RuleContext) -> None:
    from seelike.figures.attention import plot_attention_all_blocks
    from seelike.figures.attention import plot_attention_distance as plot

    tables, out = _tables(ctx), ctx.output
    plot(tables, ctx.params.blocks, out.fig3, out.fig3_pdf)
    plot_attention_all_blocks(tables, out.fig4, out.fig4_pdf)


@entry()
def plot_head_subsets(ctx: RuleContext) -> None:
    from seelike.figures.attention import plot_head_subsets as plot

    plot(_tables(ctx), ctx.output.png, ctx.output.pdf)


@entry()
def plot_erf(ctx: RuleContext) -> None:
    import numpy as np

    from seelike.figures.receptive_field import erf_size_summary, plot_erf_grid
    from seelike.io import atomic_write

    out = ctx.output
    tables = _tables(ctx, ctx.input.tables)
    maps = {}
    for m, path in zip(ctx.params.models, ctx.input.maps):
        with np.load(path) as z:
            maps[m] = {k: z[k] for k in z.files}
    sizes = erf_size_summary(tables)
    with atomic_write(out.sizes) as tmp:
        sizes.to_csv(tmp, index=False)
    plot_erf_grid(maps, sizes, out.png, out.pdf)


@entry()
def plot_skip(ctx: RuleContext) -> None:
    from seelike.figures.skip import plot_skip_cosine, plot_skip_ratio

    tables, out = _tables(ctx), ctx.output
    plot_skip_ratio(tables, out.ratio, out.ratio_pdf)
    plot_skip_cosine(tables, out.cosine, out.cosine_pdf)


@entry()
def plot_localisation(ctx: RuleContext) -> None:
    from seelike.analyses.localisation import token_indices
    from seelike.figures.localisation import plot_localisation as plot
    from seelike.io import read_table
    from seelike.models.geometry import PositionGrid

    df, meta = read_table(ctx.input[0])
    tokens = None
    if ctx.params.plot_tokens is not None:
        grid = PositionGrid(tuple(meta["grid_hw"]), tuple(meta["img_hw"]), 0, ())
        tokens = token_indices(ctx.params.plot_tokens, grid)
    plot(df, meta, ctx.output.png, ctx.output.pdf, tokens=tokens)


@entry()
def plot_localisation_summary(ctx: RuleContext) -> None:
    from seelike.figures.localisation import plot_localisation_summary as plot

    plot(_tables(ctx), ctx.output.png, ctx.output.pdf)


@entry()
def plot_probes(ctx: RuleContext) -> None:
    from seelike.figures.probes import plot_probe_aggregations, plot_probe_models

    tables, out = _tables(ctx), ctx.output
    plot_probe_aggregations(tables, out.fig11, out.fig11_pdf)
    plot_probe_models(tables, out.fig13, out.fig13_pdf)


# ------------------------------------------------------------------------------------------- claims
def claims_inputs(ctx: RuleContext):
    """The claims summary's inputs (`seelike.claims.ClaimInputs`) from the rule's labelled input sections."""
    from seelike.claims import ClaimInputs, no_skip_specs
    from seelike.claims.metrics import uniform_attention_distance
    from seelike.io import read_table

    models = ctx.params.models

    def tables(section):
        """label → (frame, meta) of one input section (pairs as (a, b) tuples), in the layout's order."""
        paths = list(getattr(ctx.input, section, []))
        labels = ctx.params.labels[section]
        if len(paths) != len(labels):
            raise RuntimeError(f"claims: {len(paths)} {section} inputs but {len(labels)} labels")
        return {
            tuple(lab) if isinstance(lab, (list, tuple)) else lab: read_table(path)
            for lab, path in zip(labels, paths)
        }

    def frames(section):
        return {k: df for k, (df, _) in tables(section).items()}

    # the "global" reference of Figs 3/4: uniform attention over each model's own patch grid
    attention = {
        m: (df, uniform_attention_distance(meta["grid_hw"], meta["patch_px"], meta["stride_px"]))
        for m, (df, meta) in tables("attention").items()
    }
    return ClaimInputs(
        families={m: spec["family"] for m, spec in models.items()},
        archs={m: spec["arch"] for m, spec in models.items()},
        self_cka=frames("self_cka"),
        cross_cka=frames("cross_cka"),
        attention=attention,
        head_subsets=frames("head_subsets"),
        erf=frames("erf"),
        skip=frames("skip"),
        localisation=frames("localisation"),
        probes=frames("probes"),
        per_block=frames("per_block"),
        similarity=frames("similarity"),
        no_skip=no_skip_specs(models),
    )


@entry()
def claims(ctx: RuleContext) -> None:
    from seelike.claims import summarise, to_markdown
    from seelike.io import atomic_write, write_table

    df = summarise(claims_inputs(ctx))
    dataset = ctx.wildcards.dataset
    meta = ctx.metadata(
        "claims", device=None, dataset=dataset,
        inputs={k: list(v) for k, v in ctx.params.labels.items()},
    )  # fmt: skip
    write_table(df, ctx.output.csv, meta)
    with atomic_write(ctx.output.md) as tmp:
        tmp.write_text(to_markdown(df, title=f"Paper findings in this run ({dataset})"))
    seen = df["seen"].dropna()
    ctx.log.info(
        "%d metrics, %d decidable: %d seen, %d not",
        len(df), len(seen), int(seen.sum()), int((~seen.astype(bool)).sum()),
    )  # fmt: skip
