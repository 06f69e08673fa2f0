# Figures are drawn from tables only, so `snakemake fig1` reruns in seconds without a GPU.


rule plot_self_cka:
    input:
        f"results/cka/{ANALYSIS}/{{model}}__{{model}}.parquet",
    output:
        png=report(
            "results/figures/fig1_self_cka/{model}.png",
            caption="../report/fig1.rst",
            category="Fig 1: self-similarity",
            labels={"model": "{model}"},
        ),
        pdf="results/figures/fig1_self_cka/{model}.pdf",
    log:
        "logs/figures/fig1_{model}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_self_cka.py"


rule plot_cross_cka:
    input:
        f"results/cka/{ANALYSIS}/{{a}}__{{b}}.parquet",
    output:
        png=report(
            "results/figures/fig2_cross_cka/{a}__{b}.png",
            caption="../report/fig2.rst",
            category="Fig 2: cross-model CKA",
            labels={"pair": "{a} vs {b}"},
        ),
        pdf="results/figures/fig2_cross_cka/{a}__{b}.pdf",
    log:
        "logs/figures/fig2_{a}__{b}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_cross_cka.py"


rule plot_per_block:
    input:
        per_block_tables,
    output:
        png=report(
            "results/figures/fig12_per_block_cka.png",
            caption="../report/fig12.rst",
            category="Fig 12: per-block CKA of checkpoints",
        ),
        pdf="results/figures/fig12_per_block_cka.pdf",
    log:
        "logs/figures/fig12.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_per_block.py"


rule fig1:
    input:
        fig1_targets(config),


rule fig2:
    input:
        fig2_targets(config),


rule fig12:
    input:
        fig12_targets(config),
