# Claims summary: one number per testable finding of the paper (Figs 1-13), computed from the tables the other
# rules write, so VALIDATION.md quotes numbers the pipeline produces. Analyses the config does not run drop out.
include: "functions/issue4.smk"
include: "functions/issue5.smk"
include: "functions/claims.smk"


FINAL_OUTPUT_FUNCS.append(claims_targets)


rule claims:
    input:
        unpack(claims_inputs),
    output:
        csv="results/claims/{dataset}.csv",
        md="results/claims/{dataset}.md",
    params:
        labels=claims_labels(config),
        models=claims_models(config),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/claims/{dataset}.log",
    benchmark:
        "benchmarks/claims/{dataset}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/claims.py"


rule claims_all:
    input:
        claims_targets(config),


localrules:
    claims,
    claims_all,
