rule cka:
    input:
        a="results/cache/{dataset}/{a}",
        b="results/cache/{dataset}/{b}",
    output:
        "results/cka/{dataset}/{a}__{b}.parquet",
    params:
        device=config["device"],
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    log:
        "logs/cka/{dataset}/{a}__{b}.log",
    benchmark:
        "benchmarks/cka/{dataset}/{a}__{b}.tsv"
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/compute_cka.py"
