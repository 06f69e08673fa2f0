# Claims summary: one number per testable finding of the paper (Figs 1-13), computed from the tables the other
# rules write, so VALIDATION.md quotes numbers the pipeline produces. Analyses the config does not run drop out.


rule claims:
    input:
        unpack(claims_inputs),
    output:
        csv="results/claims/{dataset}.csv",
        md="results/claims/{dataset}.md",
    log:
        "logs/claims/{dataset}.log",
    benchmark:
        "results/benchmarks/claims/{dataset}.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        labels=claims_labels(),
        models=claims_models(),
    script:
        "../../scripts/claims.py"


rule claims_all:
    input:
        claims_targets(),


localrules:
    claims,
    claims_all,
