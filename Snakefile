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


include: "workflow/rules/common.smk"  # config checks, model lists, every input / target / params function
include: "workflow/rules/data.smk"  # samples: the sample list of each dataset
include: "workflow/rules/models.smk"  # fetch_model, train_model
include: "workflow/rules/model_passes.smk"  # every rule that runs a model (gpu=1)
include: "workflow/rules/comparisons.smk"  # cka, per_block_cka, linear_probes
include: "workflow/rules/figures.smk"  # plot_* rules and the fig1 ... fig13 targets
include: "workflow/rules/claims.smk"  # claims summary (target claims_all)


rule all:
    default_target: True
    input:
        get_final_output,
