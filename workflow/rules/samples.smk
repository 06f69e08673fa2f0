rule samples:
    output:
        "results/samples/{dataset}.csv",
    params:
        cfg=dataset_cfg,
        seed=config["seed"],
    log:
        "logs/samples/{dataset}.log",
    benchmark:
        "benchmarks/samples/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/samples.py"
