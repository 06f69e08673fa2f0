# Comparisons computed from what the model passes stored, without rerunning a model: minibatch CKA from the
# Gram caches (Figs 1, 2) and further similarity measures from the same Grams (cka.measures), per-block CKA between checkpoints of one architecture (Fig 12), and the linear
# probes fitted on the stored features (Figs 11, 13; GPU when present).


rule cka:
    input:
        a="results/cache/{dataset}/{a}",
        b="results/cache/{dataset}/{b}",
    output:
        table="results/cka/{dataset}/{a}__{b}.parquet",
        # per repeat, the HSIC₁ terms of ≤ 20 groups of minibatches: the claims' jackknife / bootstrap
        groups="results/cka/{dataset}/{a}__{b}.groups.npz",
    log:
        "logs/cka/{dataset}/{a}__{b}.log",
    benchmark:
        "results/benchmarks/cka/{dataset}/{a}__{b}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        # CPU on purpose: a float64 step of ~3% of the forward passes, not worth holding a GPU (BENCHMARKS.md)
        device="cpu",
        cka=settings("cka", ("permutations",)),
        # what the table holds; raised when that changes, so tables of earlier runs are rebuilt (from the Grams)
        contents=PAIR_TABLE_CONTENTS,
    script:
        "../../scripts/cka.py"


rule similarity:
    input:
        a="results/cache/{dataset}/{a}",
        b="results/cache/{dataset}/{b}",
        cka="results/cka/{dataset}/{a}__{b}.parquet",
    output:
        "results/similarity/{dataset}/{a}__{b}.parquet",
    log:
        "logs/similarity/{dataset}/{a}__{b}.log",
    benchmark:
        "results/benchmarks/similarity/{dataset}/{a}__{b}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        # CPU as for CKA: float64 steps on the stored Grams (cost per measure: BENCHMARKS.md)
        device="cpu",
        cka=measure_settings,
        contents=PAIR_TABLE_CONTENTS,
    script:
        "../../scripts/similarity.py"


rule per_block_cka:
    input:
        cka="results/cka/{dataset}/{a}__{b}.parquet",
        groups="results/cka/{dataset}/{a}__{b}.groups.npz",
        taps="results/models/{a}/taps.csv",
    output:
        table="results/per_block/{dataset}/{a}__{b}.parquet",
        groups="results/per_block/{dataset}/{a}__{b}.groups.npz",
    log:
        "logs/per_block/{dataset}/{a}__{b}.log",
    benchmark:
        "results/benchmarks/per_block_cka/{dataset}/{a}__{b}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/per_block_cka.py"


rule linear_probes:
    input:
        features="results/probes/{dataset}/{model}_features",
        samples="results/samples/{dataset}.csv",
    output:
        "results/probes/{dataset}/{model}.parquet",
    log:
        "logs/linear_probes/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/linear_probes/{dataset}/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        contents=ANALYSIS_TABLE_CONTENTS,
        probes=settings("probes", ("lambdas", "holdout")),
        seed=config["seed"],
        run=execution,
    script:
        "../../scripts/linear_probes.py"
