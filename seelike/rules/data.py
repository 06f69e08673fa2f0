"""The entry of the rule of workflow/rules/data.smk: `samples`, the seeded sample list of one dataset."""

from __future__ import annotations

from seelike.rules.context import RuleContext


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
