"""Figures, one module per figure family, drawn from the pipeline's tidy tables only (Agg backend, PNG + PDF
written atomically), so each reruns in seconds without a GPU: `cka` (Figs 1, 2, 12), `attention` (3-5),
`receptive_field` (6), `skip` (7), `localisation` (9, 10), `probes` (11, 13); `common` holds what they share."""

import matplotlib

matplotlib.use("Agg")  # before any pyplot import: figures are files, never windows
