"""Rule localisation: CKA between token representations and the input patch at every grid position."""

from seelike.rules import run

run(snakemake)
