# The sample list of each dataset: a fixed, seeded, ordered table (id, label, split) that every model sees.


rule samples:
    output:
        "results/samples/{dataset}.csv",
    log:
        "logs/samples/{dataset}.log",
    benchmark:
        "results/benchmarks/samples/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        cfg=dataset_cfg,
        seed=config["seed"],
    script:
        "../../scripts/samples.py"
