"""The entries of the rules of workflow/rules/models.smk: `fetch_model` (hub / checkpoint), `train_model`,
`python_model` (a factory's nn.Module); each builds or trains its model and writes model.json + taps.csv."""

from __future__ import annotations

from seelike.rules.context import RuleContext


def _acquire(ctx: RuleContext) -> None:
    """Build (hub, checkpoint, python factory) or train the model; write model.json + taps.csv."""
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


def fetch_model(ctx: RuleContext) -> None:
    """Rule fetch_model: build a hub or checkpoint model (weights fetched or verified)."""
    _acquire(ctx)


def train_model(ctx: RuleContext) -> None:
    """Rule train_model: train a model on its sample list."""
    _acquire(ctx)


def python_model(ctx: RuleContext) -> None:
    """Rule python_model: build a python factory's model and save its weights."""
    _acquire(ctx)
