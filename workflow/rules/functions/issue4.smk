# Input and target functions of the attention, receptive-field and skip rules (issue 4). They live apart from the
# rules (snakemake --lint: no mixed rules and functions); included by attention.smk, receptive_field.smk and
# skip.smk (Snakemake ignores repeated includes). They could move into common.smk.


# ---- attention
def attention_models(cfg):
    """Configured attention models, or every model whose arch is ViT-like."""
    listed = cfg["attention"]["models"]
    return list(listed) if listed is not None else [m for m in MODELS if is_vit_arch(m)]


def head_subset_cnn(cfg):
    """The CNN of Fig 5: configured, or the first non-ViT model; None when there is none or Fig 5 is off."""
    hs = cfg["attention"]["head_subsets"]
    if not hs["enabled"]:
        return None
    if hs["cnn"] is not None:
        if hs["cnn"] not in cfg["models"]:
            raise ValueError(f"config: attention.head_subsets.cnn {hs['cnn']!r} is not a key of models")
        return hs["cnn"]
    return next((m for m in MODELS if not is_vit_arch(m)), None)


def attention_tables(wildcards):
    return expand(f"results/attention/{ANALYSIS}/{{model}}.parquet", model=attention_models(config))


def head_subset_tables(wildcards):
    cnn = head_subset_cnn(config)
    if cnn is None:
        raise ValueError(
            "Fig 5 needs a CNN: set attention.head_subsets.cnn to a CNN model (and enabled: true)"
        )
    return expand(
        f"results/attention/{ANALYSIS}/head_subsets/{{model}}__{cnn}.parquet", model=attention_models(config)
    )


def attention_targets(cfg):
    if not attention_models(cfg):
        return []
    out = expand("results/figures/{fig}.{ext}", fig=["fig3_attention_distance", "fig4_attention_distance_all"],
                 ext=["png", "pdf"])
    if head_subset_cnn(cfg) is not None:
        out += expand("results/figures/fig5_head_subset_cka.{ext}", ext=["png", "pdf"])
    return out


# ---- receptive_field
def has_residual_taps(cfg, name):
    """Whether a model is of a tap family with known residual units (seelike.models.taps), by its arch name:
    ViT-like, timm ResNet / ResNetV2 or EfficientNet (decided without loading it)."""
    arch = cfg["models"][name]["arch"].split(".")[0]
    return is_vit_arch(name) or any(k in arch for k in ("resnet", "efficientnet"))


def erf_models(cfg):
    """Configured models, or every ViT-like, ResNet- or EfficientNet-family model plus those with explicit taps."""
    listed = cfg["erf"]["models"]
    if listed is not None:
        return list(listed)
    return [m for m in MODELS if has_residual_taps(cfg, m) or m in cfg["erf"]["taps"]]


def erf_tables(wildcards):
    return expand(f"results/erf/{ANALYSIS}/{{model}}.parquet", model=erf_models(config))


def erf_maps(wildcards):
    return expand(f"results/erf/{ANALYSIS}/{{model}}.npz", model=erf_models(config))


def erf_targets(cfg):
    if not erf_models(cfg):
        return []
    return expand("results/figures/fig6_erf.{ext}", ext=["png", "pdf"]) + ["results/figures/fig6_erf_sizes.csv"]


# ---- skip
def skip_models(cfg):
    """Configured models, or every ViT-like, ResNet- or EfficientNet-family model (others have no known residual
    units)."""
    listed = cfg["skip"]["models"]
    if listed is not None:
        return list(listed)
    return [m for m in MODELS if has_residual_taps(cfg, m)]


def skip_tables(wildcards):
    return expand(f"results/skip/{ANALYSIS}/{{model}}.parquet", model=skip_models(config))


def skip_targets(cfg):
    if not skip_models(cfg):
        return []
    return expand("results/figures/{fig}.{ext}", fig=["fig7_skip_ratio", "fig7_skip_cosine"], ext=["png", "pdf"])
