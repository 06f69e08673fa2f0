# Config validation, wildcard constraints and every input function. Rules hold no Python logic.
import re

from snakemake.utils import validate

from seelike.rules import Execution


validate(config, schema="../schemas/config.schema.yaml", set_default=True)


def _check_references(cfg):
    """Cross-key checks a JSON schema cannot express; each names the key and the fix."""
    datasets, models = cfg["datasets"], cfg["models"]
    if cfg["analysis_dataset"] not in datasets:
        raise ValueError(
            f"config: analysis_dataset {cfg['analysis_dataset']!r} is not a key of datasets {sorted(datasets)}"
        )
    for name, spec in models.items():
        if spec["source"] == "train":
            if "train" not in spec:
                raise ValueError(f"config: models.{name} has source: train but no train: section")
            if spec["train"]["dataset"] not in datasets:
                raise ValueError(
                    f"config: models.{name}.train.dataset {spec['train']['dataset']!r} is not a key of datasets"
                )
        if spec["source"] == "checkpoint" and "path" not in spec:
            raise ValueError(f"config: models.{name} has source: checkpoint but no path:")
    for key in ("pairs", "per_block"):
        for pair in cfg["cka"][key]:
            for m in pair:
                if m not in models:
                    raise ValueError(
                        f"config: cka.{key} entry {pair} names {m!r}, not a key of models {sorted(models)}"
                    )
    for a, b in cfg["cka"]["per_block"]:
        if (models[a]["arch"], models[a].get("kwargs") or {}) != (models[b]["arch"], models[b].get("kwargs") or {}):
            raise ValueError(
                f"config: cka.per_block entry {[a, b]} compares different architectures "
                f"({models[a]['arch']} vs {models[b]['arch']} or different kwargs); per-block CKA needs two "
                "checkpoints of one architecture: use cka.pairs for a cross-model matrix"
            )


_check_references(config)

DATASETS = list(config["datasets"])
MODELS = list(config["models"])
ANALYSIS = config["analysis_dataset"]
# Every rule file appends a function (config) -> list of its final targets; `rule all` collects them.
FINAL_OUTPUT_FUNCS = []


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def models_with_source(*sources):
    return [m for m in MODELS if config["models"][m]["source"] in sources]


wildcard_constraints:
    dataset=_alternation(DATASETS),
    model=_alternation(MODELS),
    a=_alternation(MODELS),
    b=_alternation(MODELS),


def get_final_output(wildcards):
    targets = []
    for func in FINAL_OUTPUT_FUNCS:
        targets.extend(func(config))
    return targets


def model_spec(wildcards):
    return canonical(config["models"][wildcards.model])


def train_samples(wildcards):
    """The sample list a trained model learns from (empty for hub / checkpoint models)."""
    spec = config["models"][wildcards.model]
    if spec["source"] != "train":
        return []
    return f"results/samples/{spec['train']['dataset']}.csv"


def checkpoint_file(wildcards):
    spec = config["models"][wildcards.model]
    return [spec["path"]] if spec["source"] == "checkpoint" else []


def dataset_cfg(wildcards):
    return canonical(config["datasets"][wildcards.dataset])


# ---- Params: each rule gets exactly the settings it reads, in canonical (sorted-key) order, because
# Snakemake reruns a job whose params compare unequal and dicts compare by repr, i.e. by key order.
# Settings that only say where or how fast a job runs travel as one Execution object (`params.run`),
# which Snakemake leaves out of the comparison. A rule's settings never include other models' entries.
# What reading an image needs; the sample list itself (test_fraction, max_*) arrives as the samples file.
LOADER_KEYS = ("source", "root", "name", "image_size", "split_dirs")


def canonical(obj):
    """A copy of a config value with every dict's keys sorted (lists keep their order)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    return obj


def execution(wildcards=None):
    return Execution(device=str(config["device"]), num_workers=int(config["num_workers"]))


def loader_cfg(wildcards):
    """The analysed dataset's image-reading settings."""
    ds = config["datasets"][wildcards.dataset]
    return canonical({k: ds[k] for k in LOADER_KEYS if k in ds})


def train_loader_cfg(wildcards):
    spec = config["models"][wildcards.model]
    if spec["source"] != "train":
        return {}
    ds = config["datasets"][spec["train"]["dataset"]]
    return canonical({k: ds[k] for k in LOADER_KEYS if k in ds})


def settings(section, keys, per_model=(), extra=None):
    """A params function: `keys` of config[section]; the `per_model` keys (model → value maps) narrowed to
    the job's own model, so adding or editing another model's entry reruns nothing of this one."""

    def params(wildcards):
        cfg = config[section] if section else config
        out = {k: cfg[k] for k in keys}
        for k in per_model:
            value = cfg[k]
            if isinstance(value, dict):
                value = {wildcards.model: value[wildcards.model]} if wildcards.model in value else {}
            out[k] = value
        if extra:
            out.update(extra(cfg, wildcards))
        return canonical(out)

    return params


def head_subset_settings(wildcards):
    hs = config["attention"]["head_subsets"]
    return canonical({k: hs[k] for k in ("cnn_taps", "subset_size", "block", "tokens")})


def is_vit_arch(name):
    """Whether a configured model is ViT-like by its timm architecture name (decided without loading it)."""
    arch = config["models"][name]["arch"].split(".")[0]
    return any(k in arch for k in ("vit", "deit", "beit", "eva", "cait")) and "convit" not in arch


def cka_pairs():
    """Self pairs for every model, then the configured cross pairs."""
    pairs = [(m, m) for m in MODELS] + [tuple(p) for p in config["cka"]["pairs"] + config["cka"]["per_block"]]
    return list(dict.fromkeys(pairs))


# ---- Figs 1, 2 (figures.smk)
def fig1_targets(cfg):
    return expand("results/figures/fig1_self_cka/{model}.{ext}", model=MODELS, ext=["png", "pdf"])


def fig2_targets(cfg):
    return [
        f"results/figures/fig2_cross_cka/{a}__{b}.{ext}"
        for a, b in (tuple(p) for p in cfg["cka"]["pairs"])
        for ext in ("png", "pdf")
    ]


def per_block_tables(wildcards=None):
    return [f"results/per_block/{ANALYSIS}/{a}__{b}.parquet" for a, b in config["cka"]["per_block"]]


def fig12_targets(cfg):
    if not cfg["cka"]["per_block"]:
        return []
    return [f"results/figures/fig12_per_block_cka.{ext}" for ext in ("png", "pdf")]


FINAL_OUTPUT_FUNCS.extend([fig1_targets, fig2_targets, fig12_targets])
