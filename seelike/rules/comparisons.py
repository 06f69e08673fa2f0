"""The entries of the rules of workflow/rules/comparisons.smk, from stored Grams / features, no model run:
`cka`, `similarity`, `per_block_cka`, `linear_probes`."""

from __future__ import annotations

from seelike.rules.context import RuleContext


def cka(ctx: RuleContext) -> None:
    from seelike.analyses.cache import read_cache_meta
    from seelike.analyses.cka_tables import cka_from_caches
    from seelike.io import write_table

    permutations = (ctx.params.get("cka") or {}).get("permutations", 0)
    df, fields, groups = cka_from_caches(
        ctx.input.a, ctx.input.b, ctx.device, permutations=permutations, with_groups=True
    )
    cache_a, plan = read_cache_meta(ctx.input.a), fields["plan"]
    meta = ctx.metadata(
        "cka", samples={"samples_hash": plan["samples_hash"], **cache_a},
        split=plan["split"], n_images=plan["n_images"], **fields,
    )  # fmt: skip
    write_table(df, ctx.output.table, meta)
    # per repeat, the HSIC₁ terms of groups of minibatches: the claims' jackknife / bootstrap of any statistic
    groups.save(ctx.output.groups)
    ctx.log.info(
        "%s vs %s: %d tap pairs, mean CKA %.3f",
        fields["model_a"], fields["model_b"], len(df), df["cka"].mean(),
    )  # fmt: skip


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


def per_block_cka(ctx: RuleContext) -> None:
    import pandas as pd

    from seelike.analyses.cka_tables import per_block_cka as per_block
    from seelike.analyses.cka_tables import per_block_groups
    from seelike.analyses.replicates import CkaGroups
    from seelike.io import read_table, write_table

    cross, fields = read_table(ctx.input.cka)
    df = per_block(cross, pd.read_csv(ctx.input.taps))
    # the cross-CKA table's metadata, then this output's own keys
    meta = {
        **fields,
        **ctx.metadata("per_block_cka", samples=fields, device=None, kinds=sorted(set(df["kind"]))),
    }
    write_table(df, ctx.output.table, meta)
    per_block_groups(cross, CkaGroups.load(ctx.input.groups)).save(ctx.output.groups)
    ctx.log.info(
        "%s vs %s: %d blocks, CKA first %.3f, last %.3f",
        fields["model_a"], fields["model_b"], len(df), df["cka"].iloc[0], df["cka"].iloc[-1],
    )  # fmt: skip


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
