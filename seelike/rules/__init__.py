"""The rule-entry layer: what a workflow rule's script calls, and nothing else does.

Every script in scripts/ is a docstring and

    from seelike.rules import run
    run(snakemake)

`run` sets up the rule (logging into its log file, torch threads: `setup_rule`), wraps the Snakemake object in a
`RuleContext` (the rule's device, its model loaded there, its loader, a `Progress` logger, the metadata builder)
and calls the rule's entry function, found by `snakemake.rule` in `seelike.rules.entries.ENTRIES`.

- `context`: `Execution` (the `params.run` object of common.smk), `setup_rule`, `Progress` (the one progress
  protocol of `seelike.analyses.stream`, logged), `RuleContext`;
- `metadata`: `build_metadata`, the one builder every output's metadata comes from;
- `entries`: one entry function per rule (samples, fetch_model, train_model, cache, cka, per_block_cka,
  attention_distance, head_subset_cka, receptive_field, skip_stats, probe_features, linear_probes,
  localisation, plot_*, claims).

Importing this package is cheap (no torch): common.smk imports `Execution` at parse time.
"""

from __future__ import annotations

from typing import Any

from seelike.rules.context import Execution, Progress, RuleContext, setup_rule
from seelike.rules.metadata import build_metadata

__all__ = ["Execution", "Progress", "RuleContext", "build_metadata", "run", "setup_rule"]


def run(snakemake: Any) -> Any:
    """Run the entry function of `snakemake.rule` (see the module docstring)."""
    from seelike.rules.entries import ENTRIES

    entry = ENTRIES.get(snakemake.rule)
    if entry is None:
        raise KeyError(
            f"no entry function for rule {snakemake.rule!r} in seelike.rules.entries (have {sorted(ENTRIES)})"
        )
    return entry(RuleContext(snakemake))
