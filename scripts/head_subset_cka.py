"""Rule head_subset_cka: CKA of first-block head subsets (local → global) with CNN units from its cache (Fig 5)."""

from seelike.rules import run
from seelike.rules.model_passes import head_subset_cka

run(snakemake, head_subset_cka)
