# Localisation (Figs 9, 10): CKA between one token's representation and the raw input patch at every position.


include: "functions/issue5.smk"


FINAL_OUTPUT_FUNCS.extend([fig9_targets, fig10_targets])


rule localisation:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/localisation/{dataset}/{model}.parquet",
    params:
        dataset_cfg=loader_cfg,
        localisation=settings(
            "localisation", ("n_images", "batch_size", "split", "tokens"), per_model=("taps",)
        ),
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/localisation/{dataset}/{model}.log",
    benchmark:
        "benchmarks/localisation/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/localisation.py"


rule plot_localisation:
    input:
        f"results/localisation/{ANALYSIS}/{{model}}.parquet",
    output:
        png=report(
            "results/figures/fig9_localisation_{model}.png",
            caption="../report/fig9_10.rst",
            category="Figs 9, 10: localisation",
            labels={"model": "{model}"},
        ),
        pdf="results/figures/fig9_localisation_{model}.pdf",
    params:
        plot_tokens=config["localisation"]["plot_tokens"],
    log:
        "logs/figures/fig9_{model}.log",
    benchmark:
        "benchmarks/figures/fig9_{model}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_localisation.py"


rule plot_localisation_summary:
    input:
        localisation_tables,
    output:
        png=report(
            "results/figures/fig10_localisation_summary.png",
            caption="../report/fig9_10.rst",
            category="Figs 9, 10: localisation",
        ),
        pdf="results/figures/fig10_localisation_summary.pdf",
    params:
        models=localisation_models(config),
    log:
        "logs/figures/fig10.log",
    benchmark:
        "benchmarks/figures/fig10.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_localisation_summary.py"


rule fig9:
    input:
        fig9_targets(config),


rule fig10:
    input:
        fig10_targets(config),
