"""The entries of the rules of workflow/rules/model_passes.smk, every rule that runs a model: `cache`,
`attention_distance` (and `attention_distance_convention`), `head_subset_cka`, `receptive_field`, `skip_stats`,
`probe_features`, `localisation`."""

from __future__ import annotations

from seelike.rules.context import RuleContext


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


def attention_distance_convention(ctx: RuleContext) -> None:
    """Rule attention_distance_convention: `attention_distance` in a further CLS convention (its
    `params.attention`)."""
    attention_distance(ctx)


def head_subset_cka(ctx: RuleContext) -> None:
    from seelike.analyses.head_subsets import head_subset_cka_from_cache
    from seelike.io import read_table, write_table

    model, info = ctx.load_model()
    hs = ctx.params.head_subsets
    att, _ = read_table(ctx.input.attention)
    df, fields, groups = head_subset_cka_from_cache(
        model, info, att, ctx.input.samples, ctx.params.dataset_cfg, ctx.input.cnn_cache,
        cnn_taps=hs["cnn_taps"], subset_size=hs["subset_size"], block=hs["block"], tokens=hs["tokens"],
        device=ctx.device, num_workers=ctx.run.num_workers, progress=ctx.progress("head subsets"),
    )  # fmt: skip
    df.insert(0, "model", info["name"])
    plan = fields["plan"]
    meta = ctx.metadata("head_subset_cka", split=plan["split"], n_images=plan["n_images"], **fields)
    write_table(df, ctx.output.table, meta)
    groups.save(ctx.output.groups)  # the claims' jackknife / bootstrap of the Fig 5 trend
    ctx.log.info(
        "%s vs %s: %d subsets × %d taps",
        info["name"], ctx.wildcards.cnn, df["subset"].nunique(), df["cnn_tap"].nunique(),
    )  # fmt: skip


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
        size_reference="mass centroid of the ERF map", groups=int(df["n_groups"].iloc[0]),
        size_se="delete-one-group jackknife of each size over interleaved image groups (image i in group i mod "
        "n_groups); *_jk columns: each group's leave-one-out size",
    )  # fmt: skip
    write_table(df, ctx.output.table, meta)
    with atomic_write(ctx.output.maps) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{t.name: res.maps[t.name] for t in taps})
    ctx.log.info("%s: ERF of %d taps over %d images", name, len(taps), res.n_images)


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
