"""One number per testable finding of Raghu et al. 2021, computed from the pipeline's own output tables.

`metrics` holds the numbers (pure functions of the tidy tables), `findings` assembles them into the claims table
and its markdown. Entry points: `ClaimInputs`, `cnn_label`, `summarise`, `to_markdown`, `no_skip_specs`.
"""

from seelike.claims.findings import COLUMNS, ClaimInputs, cnn_label, summarise, to_markdown
from seelike.claims.metrics import no_skip_specs

__all__ = ["COLUMNS", "ClaimInputs", "cnn_label", "no_skip_specs", "summarise", "to_markdown"]
