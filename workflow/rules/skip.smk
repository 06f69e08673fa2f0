# Skip-connection statistics (Fig 7, App. E.2): ||z|| / ||f(z)|| per token and block, cosine(output, branch).


include: "functions/issue4.smk"


FINAL_OUTPUT_FUNCS.append(skip_targets)


rule skip_stats:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/skip/{dataset}/{model}.parquet",
    params:
        dataset_cfg=loader_cfg,
        skip=settings("skip", ("n_images", "batch_size", "split")),
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/skip_stats/{dataset}/{model}.log",
    benchmark:
        "benchmarks/skip_stats/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/skip_stats.py"


rule plot_skip:
    input:
        skip_tables,
    output:
        ratio=report(
            "results/figures/fig7_skip_ratio.png", caption="../report/fig7.rst", category="Fig 7: skip connections"
        ),
        ratio_pdf="results/figures/fig7_skip_ratio.pdf",
        cosine=report(
            "results/figures/fig7_skip_cosine.png",
            caption="../report/fig7_cosine.rst",
            category="Fig 7: skip connections",
        ),
        cosine_pdf="results/figures/fig7_skip_cosine.pdf",
    params:
        models=skip_models(config),
    log:
        "logs/figures/fig7.log",
    benchmark:
        "benchmarks/figures/fig7.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_skip.py"


rule fig7:
    input:
        skip_targets(config),
