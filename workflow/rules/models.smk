# Hub and local-checkpoint models only fetch or verify weights (local rules on a cluster: compute nodes
# may have no network); trained models need a GPU.


rule fetch_model:
    input:
        checkpoint_file,
    output:
        json="results/models/{model}/model.json",
        taps="results/models/{model}/taps.csv",
    wildcard_constraints:
        model=_alternation(models_with_source("timm", "checkpoint")),
    params:
        spec=model_spec,
        run=execution,
    log:
        "logs/models/{model}.log",
    benchmark:
        "benchmarks/models/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/fetch_model.py"


rule train_model:
    input:
        samples=train_samples,
    output:
        json="results/models/{model}/model.json",
        taps="results/models/{model}/taps.csv",
        weights="results/models/{model}/weights.safetensors",
    wildcard_constraints:
        model=_alternation(models_with_source("train")),
    params:
        spec=model_spec,
        dataset_cfg=train_loader_cfg,
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    log:
        "logs/models/{model}.log",
    benchmark:
        "benchmarks/models/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/train_model.py"


localrules:
    fetch_model,
