# k-shot closed-form linear probes per tap and aggregation (Figs 11, 13). One streaming forward pass per model
# stores the aggregated features of the probe images; the probe rule fits every tap from them (GPU when present).


include: "functions/issue5.smk"


FINAL_OUTPUT_FUNCS.append(probe_targets)


rule probe_features:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        directory("results/probes/{dataset}/{model}_features"),
    params:
        dataset_cfg=loader_cfg,
        probes=settings(
            "probes",
            ("shots", "n_test", "tap_kinds", "aggregations", "batch_size"),
            per_model=("taps", "token_taps"),
        ),
        seed=config["seed"],
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/probe_features/{dataset}/{model}.log",
    benchmark:
        "benchmarks/probe_features/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/probe_features.py"


rule linear_probes:
    input:
        features="results/probes/{dataset}/{model}_features",
        samples="results/samples/{dataset}.csv",
    output:
        "results/probes/{dataset}/{model}.parquet",
    params:
        probes=settings("probes", ("lambdas", "holdout")),
        seed=config["seed"],
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "logs/linear_probes/{dataset}/{model}.log",
    benchmark:
        "benchmarks/linear_probes/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/linear_probes.py"


rule plot_probes:
    input:
        probe_tables,
    output:
        fig11=report(
            "results/figures/fig11_probes.png",
            caption="../report/fig11_13.rst",
            category="Figs 11, 13: linear probes",
        ),
        fig11_pdf="results/figures/fig11_probes.pdf",
        fig13=report(
            "results/figures/fig13_probes_models.png",
            caption="../report/fig11_13.rst",
            category="Figs 11, 13: linear probes",
        ),
        fig13_pdf="results/figures/fig13_probes_models.pdf",
    params:
        models=probe_models(config),
    log:
        "logs/figures/fig11_fig13.log",
    benchmark:
        "benchmarks/figures/fig11_fig13.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/plot_probes.py"


rule fig11:
    input:
        expand("results/figures/fig11_probes.{ext}", ext=["png", "pdf"]),


rule fig13:
    input:
        expand("results/figures/fig13_probes_models.{ext}", ext=["png", "pdf"]),
