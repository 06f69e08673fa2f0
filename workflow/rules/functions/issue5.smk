# Input and target functions of the probe and localisation rules (issue 5). They live apart from the rules
# (snakemake --lint: no mixed rules and functions); included by probes.smk and localisation.smk (Snakemake
# ignores repeated includes).


def _listed_models(cfg, section):
    listed = cfg[section]["models"]
    if listed is None:
        return list(MODELS)
    unknown = [m for m in listed if m not in cfg["models"]]
    if unknown:
        raise ValueError(f"config: {section}.models names {unknown}, not keys of models {sorted(cfg['models'])}")
    return list(listed)


# ---- probes
def probe_models(cfg):
    """Configured probe models, or every model."""
    return _listed_models(cfg, "probes")


def probe_tables(wildcards):
    return expand(f"results/probes/{ANALYSIS}/{{model}}.parquet", model=probe_models(config))


def probe_targets(cfg):
    if not probe_models(cfg):
        return []
    return expand("results/figures/{fig}.{ext}", fig=["fig11_probes", "fig13_probes_models"], ext=["png", "pdf"])


# ---- localisation
def localisation_models(cfg):
    """Configured localisation models, or every model."""
    return _listed_models(cfg, "localisation")


def localisation_tables(wildcards):
    return expand(f"results/localisation/{ANALYSIS}/{{model}}.parquet", model=localisation_models(config))


def fig9_targets(cfg):
    return expand(
        "results/figures/fig9_localisation_{model}.{ext}", model=localisation_models(cfg), ext=["png", "pdf"]
    )


def fig10_targets(cfg):
    if not localisation_models(cfg):
        return []
    return expand("results/figures/fig10_localisation_summary.{ext}", ext=["png", "pdf"])
