# Effective receptive fields (Fig 6, App. C.4): |d centre activation / d input| per tap, ViTs and CNNs.


include: "functions/issue4.smk"


FINAL_OUTPUT_FUNCS.append(erf_targets)


rule receptive_field:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        table="results/erf/{dataset}/{model}.parquet",
        maps="results/erf/{dataset}/{model}.npz",
    params:
        dataset_cfg=loader_cfg,
        erf=settings(
            "erf",
            ("n_images", "batch_size", "split", "channel_reduce", "residual", "quantiles"),
            per_model=("taps",),
        ),
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/receptive_field/{dataset}/{model}.log",
    benchmark:
        "benchmarks/receptive_field/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/receptive_field.py"


rule plot_erf:
    input:
        tables=erf_tables,
        maps=erf_maps,
    output:
        png=report("results/figures/fig6_erf.png", caption="../report/fig6.rst", category="Fig 6: receptive fields"),
        pdf="results/figures/fig6_erf.pdf",
        sizes="results/figures/fig6_erf_sizes.csv",
    params:
        models=erf_models(config),
    log:
        "logs/figures/fig6.log",
    benchmark:
        "benchmarks/figures/fig6.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_erf.py"


rule fig6:
    input:
        erf_targets(config),
