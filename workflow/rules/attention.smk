# Mean attention distance per block × head (Figs 3, 4) and first-block head-subset CKA (Fig 5).
# Only ViT-family models get attention targets; asking for a CNN's table fails with a clear message.


include: "functions/issue4.smk"


FINAL_OUTPUT_FUNCS.append(attention_targets)


rule attention_distance:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/attention/{dataset}/{model}.parquet",
    params:
        dataset_cfg=loader_cfg,
        attention=settings("attention", ("n_images", "batch_size", "split", "cls")),
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/attention_distance/{dataset}/{model}.log",
    benchmark:
        "benchmarks/attention_distance/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/attention_distance.py"


rule head_subset_cka:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
        attention="results/attention/{dataset}/{model}.parquet",
        cnn_cache="results/cache/{dataset}/{cnn}",
    output:
        "results/attention/{dataset}/head_subsets/{model}__{cnn}.parquet",
    wildcard_constraints:
        cnn=_alternation(MODELS),
    params:
        dataset_cfg=loader_cfg,
        head_subsets=head_subset_settings,
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/head_subset_cka/{dataset}/{model}__{cnn}.log",
    benchmark:
        "benchmarks/head_subset_cka/{dataset}/{model}__{cnn}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/head_subset_cka.py"


rule plot_attention_distance:
    input:
        attention_tables,
    output:
        fig3=report(
            "results/figures/fig3_attention_distance.png",
            caption="../report/fig3.rst",
            category="Figs 3-5: attention distance",
        ),
        fig3_pdf="results/figures/fig3_attention_distance.pdf",
        fig4=report(
            "results/figures/fig4_attention_distance_all.png",
            caption="../report/fig4.rst",
            category="Figs 3-5: attention distance",
        ),
        fig4_pdf="results/figures/fig4_attention_distance_all.pdf",
    params:
        blocks=config["attention"]["blocks"],
        models=attention_models(config),
    log:
        "logs/figures/fig3_fig4.log",
    benchmark:
        "benchmarks/figures/fig3_fig4.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_attention_distance.py"


rule plot_head_subsets:
    input:
        head_subset_tables,
    output:
        png=report(
            "results/figures/fig5_head_subset_cka.png",
            caption="../report/fig5.rst",
            category="Figs 3-5: attention distance",
        ),
        pdf="results/figures/fig5_head_subset_cka.pdf",
    params:
        models=attention_models(config),
    log:
        "logs/figures/fig5.log",
    benchmark:
        "benchmarks/figures/fig5.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_head_subsets.py"


rule fig3:
    input:
        expand("results/figures/fig3_attention_distance.{ext}", ext=["png", "pdf"]),


rule fig4:
    input:
        expand("results/figures/fig4_attention_distance_all.{ext}", ext=["png", "pdf"]),


rule fig5:
    input:
        expand("results/figures/fig5_head_subset_cka.{ext}", ext=["png", "pdf"]),
