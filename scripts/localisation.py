"""Rule localisation: CKA between token representations and the input patch at every grid position."""

from seelike.rules import run
from seelike.rules.model_passes import localisation

run(snakemake, localisation)
