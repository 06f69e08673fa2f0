"""The rule-entry layer: what a workflow rule's script calls, and nothing else does.

Every rule's code is one function named after the rule, in the module named after its .smk file
(rule cache of workflow/rules/model_passes.smk → `seelike.rules.model_passes.cache`), and its script
(scripts/<rule>.py) is a docstring and

    from seelike.rules import run
    from seelike.rules.model_passes import cache

    run(snakemake, cache)

`run` sets up the rule (logging into its log file, torch threads: `setup_rule`), wraps the Snakemake object in a
`RuleContext` (the rule's device, its model loaded there, its loader, a `Progress` logger, the metadata builder)
and calls the function.

- `context`: `Execution` (the `params.run` object of common.smk), `setup_rule`, `Progress` (the one progress
  protocol of `seelike.analyses.stream`, logged), `RuleContext`;
- `metadata`: `build_metadata`, the one builder every output's metadata comes from;
- one module per .smk file, one function per rule: `data` (samples), `models` (fetch_model, train_model,
  python_model), `model_passes` (cache, attention_distance, attention_distance_convention, head_subset_cka,
  receptive_field, skip_stats, probe_features, localisation), `comparisons` (cka, similarity, per_block_cka,
  linear_probes), `figures` (plot_*, measure_agreement), `claims` (claims).

Importing this package is cheap (no torch): common.smk imports `Execution` at parse time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seelike.rules.context import Execution, Progress, RuleContext, setup_rule
from seelike.rules.metadata import build_metadata

__all__ = ["Execution", "Progress", "RuleContext", "build_metadata", "run", "setup_rule"]


def run(snakemake: Any, entry: Callable[[RuleContext], Any]) -> Any:
    """Run `entry`, the function named after `snakemake.rule`, on the job's `RuleContext` (module docstring)."""
    if entry.__name__ != snakemake.rule:
        raise ValueError(
            f"the script of rule {snakemake.rule!r} runs {entry.__module__}.{entry.__name__}: "
            f"it should run the function named after the rule"
        )
    return entry(RuleContext(snakemake))
