# Models: hub and local-checkpoint models only fetch or verify weights (a local rule: on a cluster, compute
# nodes may have no network); trained models need a GPU; python models (a factory's nn.Module) are built on the
# CPU and their weights saved (a local rule too: a factory may download weights). Each writes model.json (arch,
# family, data config, metrics) and taps.csv.


rule fetch_model:
    input:
        checkpoint_file,
    output:
        json="results/models/{model}/model.json",
        taps="results/models/{model}/taps.csv",
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    wildcard_constraints:
        model=_alternation(models_with_source("timm", "checkpoint")),
    conda:
        "../../envs/torch.yaml"
    params:
        spec=model_spec,
        run=execution,
    script:
        "../../scripts/fetch_model.py"


rule train_model:
    input:
        samples=train_samples,
    output:
        json="results/models/{model}/model.json",
        taps="results/models/{model}/taps.csv",
        weights="results/models/{model}/weights.safetensors",
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    wildcard_constraints:
        model=_alternation(models_with_source("train")),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        spec=model_spec,
        dataset_cfg=train_loader_cfg,
        run=execution,
    script:
        "../../scripts/train_model.py"


rule python_model:
    input:
        checkpoint_file,
    output:
        json="results/models/{model}/model.json",
        taps="results/models/{model}/taps.csv",
        weights="results/models/{model}/weights.safetensors",
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/models/{model}.tsv"
    wildcard_constraints:
        model=_alternation(models_with_source("python")),
    conda:
        "../../envs/torch.yaml"
    params:
        spec=model_spec,
        run=execution,
    script:
        "../../scripts/python_model.py"


localrules:
    fetch_model,
    python_model,
