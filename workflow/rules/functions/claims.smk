# Input and target functions of the claims summary, kept apart from its rule file (snakemake --lint wants no mixed
# rules and functions). They reuse the model lists of issue4.smk / issue5.smk, so the summary reads exactly the
# tables the config makes.


def claims_layout(cfg):
    """Which table each input of the claims rule is, section → list of [label, path pattern with {dataset}].

    A label is a model name or an [a, b] pair. Sections the config does not produce are empty lists, so their
    metrics are simply left out of the summary.
    """
    d = "{dataset}"
    hs_cnn = head_subset_cnn(cfg)
    att = attention_models(cfg)
    return {
        "self_cka": [[m, f"results/cka/{d}/{m}__{m}.parquet"] for m in MODELS],
        "cross_cka": [[[a, b], f"results/cka/{d}/{a}__{b}.parquet"] for a, b in cfg["cka"]["pairs"]],
        "attention": [[m, f"results/attention/{d}/{m}.parquet"] for m in att],
        "head_subsets": [
            [m, f"results/attention/{d}/head_subsets/{m}__{hs_cnn}.parquet"] for m in (att if hs_cnn else [])
        ],
        "erf": [[m, f"results/erf/{d}/{m}.parquet"] for m in erf_models(cfg)],
        "skip": [[m, f"results/skip/{d}/{m}.parquet"] for m in skip_models(cfg)],
        "localisation": [[m, f"results/localisation/{d}/{m}.parquet"] for m in localisation_models(cfg)],
        "probes": [[m, f"results/probes/{d}/{m}.parquet"] for m in probe_models(cfg)],
        "per_block": [[[a, b], f"results/per_block/{d}/{a}__{b}.parquet"] for a, b in cfg["cka"]["per_block"]],
    }


def claims_inputs(wildcards):
    """Named inputs of the claims rule, one list of table paths per section of `claims_layout`."""
    return {
        section: [path.format(dataset=wildcards.dataset) for _, path in entries]
        for section, entries in claims_layout(config).items()
    }


def claims_labels(cfg):
    """The labels of `claims_layout`, in input order (a params value: no paths)."""
    return {section: [label for label, _ in entries] for section, entries in claims_layout(cfg).items()}


def claims_models(cfg):
    """What the summary needs to know of each model: its family and the Fig 8 settings."""
    return canonical({
        m: {
            "family": "vit" if is_vit_arch(m) else "cnn",
            "arch": spec["arch"],
            "kwargs": spec.get("kwargs") or {},
            "remove_skip": spec.get("remove_skip"),
        }
        for m, spec in cfg["models"].items()
    })


def claims_targets(cfg):
    return [f"results/claims/{ANALYSIS}.csv", f"results/claims/{ANALYSIS}.md"]
