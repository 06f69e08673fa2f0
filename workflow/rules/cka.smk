rule cka:
    input:
        a="results/cache/{dataset}/{a}",
        b="results/cache/{dataset}/{b}",
    output:
        "results/cka/{dataset}/{a}__{b}.parquet",
    params:
        # CPU on purpose: a float64 step of ~3% of the forward passes, not worth holding a GPU (BENCHMARKS.md)
        device="cpu",
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
        "../../scripts/cka.py"


rule per_block_cka:
    input:
        cka="results/cka/{dataset}/{a}__{b}.parquet",
        taps="results/models/{a}/taps.csv",
    output:
        "results/per_block/{dataset}/{a}__{b}.parquet",
    log:
        "logs/per_block/{dataset}/{a}__{b}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/per_block_cka.py"
