# Every rule that runs a model over the analysis images (resources: gpu=1; one GPU job at a time with the
# default profile): the CKA Gram cache, attention distance and head-subset CKA (Figs 3-5), effective
# receptive fields (Fig 6), skip-connection statistics (Fig 7), probe features (Figs 11, 13) and
# localisation (Figs 9, 10). Which models each analysis runs on: common.smk, section 2.


rule cache:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        directory("results/cache/{dataset}/{model}"),
    log:
        "logs/cache/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/cache/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        dataset_cfg=loader_cfg,
        cka=settings("cka", ("n_images", "batch_size", "repeats", "split")),
        seed=config["seed"],
        run=execution,
    script:
        "../../scripts/cache.py"


rule attention_distance:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/attention/{dataset}/{model}.parquet",
    log:
        "logs/attention_distance/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/attention_distance/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        contents=ANALYSIS_TABLE_CONTENTS,
        dataset_cfg=loader_cfg,
        attention=attention_settings,
        run=execution,
    script:
        "../../scripts/attention_distance.py"


# The same pass in each further CLS convention of attention.cls (a list): tables only, beside the main one.
rule attention_distance_convention:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/attention/{dataset}/cls_{cls}/{model}.parquet",
    log:
        "logs/attention_distance/{dataset}/cls_{cls}/{model}.log",
    benchmark:
        "results/benchmarks/attention_distance/{dataset}/cls_{cls}/{model}.tsv"
    wildcard_constraints:
        cls=_alternation(CLS_CONVENTIONS[1:]),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        contents=ANALYSIS_TABLE_CONTENTS,
        dataset_cfg=loader_cfg,
        attention=attention_settings,
        run=execution,
    script:
        "../../scripts/attention_distance_convention.py"


rule head_subset_cka:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
        attention="results/attention/{dataset}/{model}.parquet",
        cnn_cache="results/cache/{dataset}/{cnn}",
    output:
        table="results/attention/{dataset}/head_subsets/{model}__{cnn}.parquet",
        groups="results/attention/{dataset}/head_subsets/{model}__{cnn}.groups.npz",
    log:
        "logs/head_subset_cka/{dataset}/{model}__{cnn}.log",
    benchmark:
        "results/benchmarks/head_subset_cka/{dataset}/{model}__{cnn}.tsv"
    wildcard_constraints:
        cnn=_alternation(MODELS),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        dataset_cfg=loader_cfg,
        head_subsets=head_subset_settings,
        run=execution,
    script:
        "../../scripts/head_subset_cka.py"


rule receptive_field:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        table="results/erf/{dataset}/{model}.parquet",
        maps="results/erf/{dataset}/{model}.npz",
    log:
        "logs/receptive_field/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/receptive_field/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        contents=ANALYSIS_TABLE_CONTENTS,
        dataset_cfg=loader_cfg,
        erf=settings(
            "erf",
            (
                "n_images",
                "batch_size",
                "split",
                "channel_reduce",
                "residual",
                "quantiles",
            ),
            per_model=("taps",),
        ),
        run=execution,
    script:
        "../../scripts/receptive_field.py"


rule skip_stats:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/skip/{dataset}/{model}.parquet",
    log:
        "logs/skip_stats/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/skip_stats/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        contents=ANALYSIS_TABLE_CONTENTS,
        dataset_cfg=loader_cfg,
        skip=settings("skip", ("n_images", "batch_size", "split")),
        run=execution,
    script:
        "../../scripts/skip_stats.py"


rule probe_features:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        directory("results/probes/{dataset}/{model}_features"),
    log:
        "logs/probe_features/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/probe_features/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        dataset_cfg=loader_cfg,
        probes=settings(
            "probes",
            ("shots", "n_test", "tap_kinds", "aggregations", "batch_size"),
            per_model=("taps", "token_taps"),
        ),
        seed=config["seed"],
        run=execution,
    script:
        "../../scripts/probe_features.py"


rule localisation:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        "results/localisation/{dataset}/{model}.parquet",
    log:
        "logs/localisation/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/localisation/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        contents=ANALYSIS_TABLE_CONTENTS,
        dataset_cfg=loader_cfg,
        localisation=settings(
            "localisation",
            ("n_images", "batch_size", "split", "tokens"),
            per_model=("taps",),
        ),
        run=execution,
    script:
        "../../scripts/localisation.py"
