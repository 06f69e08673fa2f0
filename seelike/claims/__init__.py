"""One number per testable finding of Raghu et al. 2021, computed from the pipeline's own output tables.

`metrics` holds the numbers (pure functions of the tidy tables), `findings` turns them into rows figure by figure,
`table` is the table itself (columns, inputs, standard errors, markdown). Entry points: `ClaimInputs`,
`cnn_label`, `summarise`, `to_markdown`, `no_skip_specs`.
"""

from seelike.claims.findings import summarise
from seelike.claims.metrics import no_skip_specs
from seelike.claims.table import COLUMNS, ClaimInputs, cnn_label, to_markdown

__all__ = ["COLUMNS", "ClaimInputs", "cnn_label", "no_skip_specs", "summarise", "to_markdown"]
