# seelike: the analyses of Raghu et al. 2021, "Do Vision Transformers See Like CNNs?", for any timm model.
# Table of contents: every stage is one file under workflow/rules/; `rule all` takes its targets from
# get_final_output() in common.smk. Run: `snakemake --cores all` (embedded default, config/config.yaml).

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless the command line names its own config: `--configfile config/paper.yaml`
# then REPLACES it instead of being merged into it (a merge would add the default's models to the paper's).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/cka.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/attention.smk"
include: "workflow/rules/receptive_field.smk"
include: "workflow/rules/skip.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/localisation.smk"
include: "workflow/rules/claims.smk"


rule all:
    input:
        get_final_output,
    default_target: True
