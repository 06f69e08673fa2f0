rule cache:
    input:
        model="results/models/{model}/model.json",
        samples="results/samples/{dataset}.csv",
    output:
        directory("results/cache/{dataset}/{model}"),
    params:
        dataset_cfg=loader_cfg,
        cka=settings("cka", ("n_images", "batch_size", "repeats", "split")),
        seed=config["seed"],
        run=execution,
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    log:
        "logs/cache/{dataset}/{model}.log",
    benchmark:
        "benchmarks/cache/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/cache.py"
