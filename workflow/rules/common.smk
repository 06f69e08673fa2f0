# The map of the workflow: config validation and every check a dry run makes, the model lists each analysis
# runs on, every input / target / params function, and get_final_output() (what `rule all` builds). The rule
# files (data, models, model_passes, comparisons, figures, claims) hold no Python logic.
#
#   1. validation: schema, then cross-key checks        (_check_config: every bad config fails `snakemake -n`)
#   2. model families and the model list of each analysis (attention_models, erf_models, ...)
#   3. final targets, section by section                 (get_final_output and one function per figure)
#   4. input functions                                    (tables a figure or the claims summary reads)
#   5. params functions                                   (settings, loader_cfg, execution, canonical)
import difflib
import re
from pathlib import Path

import timm
from snakemake.utils import validate

from seelike.data.sources import DatasetConfigError, open_source
from seelike.models.families import (
    analysis_support,
    model_class,
    model_family,
    model_structure,
    model_tap_names,
    residual_sums_refusal,
)
from seelike.rules import Execution

validate(config, schema="../schemas/config.schema.yaml", set_default=True)

DATASETS = list(config["datasets"])
MODELS = list(config["models"])
ANALYSIS = config["analysis_dataset"]
# Analyses with a `models:` list (null = the default list below) and, with `n_images`, the images they read.
LISTED_SECTIONS = ("attention", "erf", "skip", "probes", "localisation")
N_IMAGES_SECTIONS = ("cka", "attention", "erf", "skip", "localisation")
DIGITS_IMAGES = 1797  # scikit-learn's digits


class ConfigError(ValueError):
    """A config that validates against the schema but cannot run; the message names the key and the fix."""


# ============================================================================ 1. cross-key checks
def _check_models(cfg):
    datasets, models = cfg["datasets"], cfg["models"]
    for name, spec in models.items():
        if spec["source"] == "python":
            # the factory imports and returns an nn.Module, data_config, path, every tap pattern matches a
            # module (seelike.models.load.check_python_spec); arch is set to the factory, the architecture
            # name the rest of the workflow reads (model.json records the same)
            from seelike.models.load import ModelConfigError, check_python_spec

            try:
                check_python_spec(name, spec)
            except ModelConfigError as e:
                raise ConfigError(f"config: {e}") from e
            spec.setdefault("arch", spec["factory"])
            try:
                model_family(spec)
            except Exception as e:
                raise ConfigError(
                    f"config: models.{name}: the structure of {spec['factory']!r} with kwargs "
                    f"{spec.get('kwargs') or {}} could not be read ({type(e).__name__}: {e}); fix "
                    f"models.{name}.factory or .kwargs"
                ) from e
            continue
        for key in ("factory", "taps"):
            if key in spec:
                raise ConfigError(
                    f"config: models.{name}.{key} is read for source: python only (source: {spec['source']} "
                    f"builds timm's {spec['arch']!r} with its family's taps); drop it, or set source: python"
                )
        arch = spec["arch"].split(".")[0]
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
            raise ConfigError(
                f"config: models.{name}.arch {spec['arch']!r} is not a timm architecture"
                + (f" (close names: {', '.join(close)})" if close else "")
                + f"; list the names timm knows with: python -c \"import timm; print(timm.list_models('*{arch.split('_')[0]}*'))\""
            )
        if spec["source"] == "train":
            if "train" not in spec:
                raise ConfigError(
                    f"config: models.{name} has source: train but no train: section; add train: {{dataset: <a key of datasets>}}"
                )
            if spec["train"]["dataset"] not in datasets:
                raise ConfigError(
                    f"config: models.{name}.train.dataset {spec['train']['dataset']!r} is not a key of "
                    f"datasets {sorted(datasets)}"
                )
        if spec["source"] == "checkpoint":
            if "path" not in spec:
                raise ConfigError(
                    f"config: models.{name} has source: checkpoint but no path:; set models.{name}.path to the weights file"
                )
            if not Path(spec["path"]).expanduser().is_file():
                raise ConfigError(
                    f"config: models.{name}.path {spec['path']!r} is not a file (source: checkpoint reads its "
                    f"weights from it; relative paths start at the working directory {str(Path.cwd())!r}); "
                    f"fix models.{name}.path, or use source: timm to download the weights"
                )
        try:
            model_family(spec)
        except Exception as e:
            raise ConfigError(
                f"config: models.{name}: timm cannot build {spec['arch']!r} with kwargs "
                f"{spec.get('kwargs') or {}} ({type(e).__name__}: {e}); fix models.{name}.arch or .kwargs"
            ) from e


def _check_pairs(cfg):
    models = cfg["models"]
    for key in ("pairs", "per_block"):
        for pair in cfg["cka"][key]:
            for m in pair:
                if m not in models:
                    raise ConfigError(
                        f"config: cka.{key} entry {pair} names {m!r}, not a key of models {sorted(models)}"
                    )
    for a, b in cfg["cka"]["per_block"]:
        if (models[a]["arch"], models[a].get("kwargs") or {}) != (
            models[b]["arch"],
            models[b].get("kwargs") or {},
        ):
            raise ConfigError(
                f"config: cka.per_block entry {[a, b]} compares different architectures "
                f"({models[a]['arch']} vs {models[b]['arch']} or different kwargs); per-block CKA needs two "
                "checkpoints of one architecture: use cka.pairs for a cross-model matrix"
            )


def _check_bures_taps(cfg):
    """cka.bures_taps as a list: every name a tap of some compared model (names from weightless builds;
    a family whose taps only a forward pass reveals is checked at run time instead)."""
    listed = cfg["cka"]["bures_taps"]
    if "bures" not in cfg["cka"]["measures"] or isinstance(listed, str):
        return
    names = {n for spec in cfg["models"].values() for n in model_tap_names(spec)}
    unknown = [t for t in listed if t not in names]
    if names and unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(names), n=3)
        raise ConfigError(
            f"config: cka.bures_taps lists {unknown[:5]}, not taps of any model"
            + (f" (did you mean {hint}?)" if hint else "")
            + "; list names from results/models/<model>/taps.csv, or set cka.bures_taps: block_outputs"
        )


def _check_model_lists(cfg):
    models = cfg["models"]
    for section in LISTED_SECTIONS:
        listed = cfg[section]["models"]
        unknown = [m for m in listed or [] if m not in models]
        if unknown:
            raise ConfigError(
                f"config: {section}.models names {unknown}, not keys of models {sorted(models)}; list configured "
                f"model names, or set {section}.models: null for the default list"
            )
    for section in LISTED_SECTIONS:
        for m in cfg[section]["models"] or []:
            why = refusal(m, section)
            if why:
                raise ConfigError(
                    f"config: {section}.models lists {m!r} ({config['models'][m]['arch']}), but {SECTION_NAMES[section]} "
                    f"does not apply to it: {why}; drop {m!r} from {section}.models (or set {section}.models: null "
                    "for every model it applies to)"
                )
    cnn = cfg["attention"]["head_subsets"]["cnn"]
    if cnn is not None and cnn not in models:
        raise ConfigError(
            f"config: attention.head_subsets.cnn {cnn!r} is not a key of models {sorted(models)}; name a "
            "configured CNN, or null for the first CNN"
        )


def split_sizes(name):
    """Images per split of dataset `name`'s sample list, computed as seelike.data.samples.build_samples
    does but without reading an image (image folders are listed); None for torchvision sources.
    """
    ds = config["datasets"][name]
    if ds["source"] == "digits":
        splits = [None] * DIGITS_IMAGES
    elif ds["source"] == "torchvision":
        return None
    else:
        if ds["source"] == "imagefolder" and "root" not in ds:
            raise ConfigError(
                f"config: datasets.{name} has source: imagefolder but no root:; set datasets.{name}.root to "
                "a folder laid out as <root>/<class>/<image> (or <root>/<split>/<class>/<image>)"
            )
        try:
            splits = [split for _, _, split in open_source(ds).rows()]
        except DatasetConfigError as e:
            raise ConfigError(
                f"config: datasets.{name}.root {ds.get('root')!r}: {e}".replace(
                    "datasets.<name>", f"datasets.{name}"
                )
            ) from e
    sizes = {}
    for split in splits:
        sizes[split] = sizes.get(split, 0) + 1
    unsplit = sizes.pop(None, 0)
    n_test = round(unsplit * float(ds.get("test_fraction", 0.25)))
    sizes["test"] = sizes.get("test", 0) + n_test
    sizes["train"] = sizes.get("train", 0) + unsplit - n_test
    for split, key in (("train", "max_train"), ("test", "max_test")):
        if ds.get(key) is not None:
            sizes[split] = min(sizes[split], int(ds[key]))
    return sizes


def _check_datasets(cfg):
    """Every dataset a run reads exists; the analyses ask for no more images than their split holds."""
    used = [ANALYSIS, PROBE_DATASET] + [
        s["train"]["dataset"] for s in cfg["models"].values() if s["source"] == "train"
    ]
    sizes = {name: split_sizes(name) for name in dict.fromkeys(used)}
    held = sizes[ANALYSIS]
    if held is None:  # torchvision: counted when the sample list is made
        return
    where = f"dataset {ANALYSIS!r} (analysis_dataset)"
    hint = "after test_fraction / max_train / max_test"
    wanted = [("cka", "n_images", cfg["cka"]["split"])]
    wanted += [
        (s, "n_images", cfg[s]["split"])
        for s in N_IMAGES_SECTIONS[1:]
        if analysis_models(s)
    ]
    probe_held = sizes[PROBE_DATASET]
    if (
        probe_models()
        and cfg["probes"]["n_test"] is not None
        and probe_held is not None
    ):
        n, have = cfg["probes"]["n_test"], probe_held.get("test", 0)
        if n > have:
            raise ConfigError(
                f"config: probes.n_test is {n} but the 'test' split of dataset {PROBE_DATASET!r} (probes.dataset) "
                f"holds {have} images ({hint}); lower probes.n_test to at most {have}, or null for all"
            )
    for section, key, split in wanted:
        if split not in held:
            raise ConfigError(
                f"config: {section}.split {split!r} is not a split of {where}, which has {sorted(held)}; "
                f"set {section}.split to one of them"
            )
        n = cfg[section][key]
        if n > held[split]:
            raise ConfigError(
                f"config: {section}.{key} is {n} but the {split!r} split of {where} holds {held[split]} images "
                f"({hint}); lower {section}.{key} to at most {held[split]}, or give the split more images"
            )


if ANALYSIS not in config["datasets"]:
    raise ConfigError(
        f"config: analysis_dataset {ANALYSIS!r} is not a key of datasets {sorted(config['datasets'])}"
    )
# attention.cls: one convention or a list; the first feeds Figs 3-5 and the claims, each other one its own table.
CLS_CONVENTIONS = (
    [config["attention"]["cls"]]
    if isinstance(config["attention"]["cls"], str)
    else list(config["attention"]["cls"])
)
# cka.measures: linear CKA always (Figs 1, 2 and the claims read it), first; any other measure adds the
# similarity tables, their agreement and the claims' robustness verdicts.
MEASURES = ["linear_cka"] + [m for m in config["cka"]["measures"] if m != "linear_cka"]
# The probes may read another dataset than the other analyses (probes.dataset; null = analysis_dataset).
PROBE_DATASET = config["probes"]["dataset"] or ANALYSIS
if PROBE_DATASET not in config["datasets"]:
    raise ConfigError(
        f"config: probes.dataset {PROBE_DATASET!r} is not a key of datasets {sorted(config['datasets'])}; "
        "name a configured dataset, or null for analysis_dataset"
    )


# ============================================================================ 2. families and model lists
def family(name):
    """The tap family of a configured model, decided by its structure (seelike.models.families)."""
    return model_family(config["models"][name])


def model_kind(name):
    """vit, cnn or other: how the claims read a configured model (seelike.models.families.model_class)."""
    s = model_structure(config["models"][name])
    return model_class(s.family, s.taps)


SECTION_NAMES = {
    "attention": "mean attention distance",
    "erf": "the effective receptive field",
    "skip": "skip-connection statistics",
    "probes": "linear probes",
    "localisation": "localisation",
}


def _listed_taps(section, name):
    """The taps the config names for `section` and model `name` (erf.taps, localisation.taps, probes.taps)."""
    taps = (config[section].get("taps") or {}).get(name)
    return [taps] if isinstance(taps, str) else taps


def refusal(name, section):
    """Why `section` cannot run on configured model `name`, or None: decided from its family record and its
    taps' layouts (seelike.models.families.analysis_support), the same function the rules ask."""
    spec = config["models"][name]
    s = model_structure(spec)
    why = analysis_support(
        s.family, s.taps, section, _listed_taps(section, name), config[section]
    )
    if why is None and section == "skip":
        why = residual_sums_refusal(spec)
    return why


def _default_models(section):
    """Null `models:` of each analysis: every model it applies to (`refusal`)."""
    return [m for m in MODELS if refusal(m, section) is None]


def analysis_models(section):
    """The models `section` (attention, erf, skip, probes, localisation) runs on: listed, or the default."""
    listed = config[section]["models"]
    return list(listed) if listed is not None else _default_models(section)


def attention_models():
    return analysis_models("attention")


def erf_models():
    return analysis_models("erf")


def skip_models():
    return analysis_models("skip")


def probe_models():
    return analysis_models("probes")


def localisation_models():
    return analysis_models("localisation")


def head_subset_cnn():
    """The CNN of Fig 5: configured, or the first CNN-family model; None when there is none or Fig 5 is off."""
    hs = config["attention"]["head_subsets"]
    if not hs["enabled"]:
        return None
    if hs["cnn"] is not None:
        return hs["cnn"]
    return next((m for m in MODELS if model_kind(m) == "cnn"), None)


def models_with_source(*sources):
    return [m for m in MODELS if config["models"][m]["source"] in sources]


def _check_config(cfg):
    _check_models(cfg)
    _check_pairs(cfg)
    _check_bures_taps(cfg)
    _check_model_lists(cfg)
    _check_datasets(cfg)


_check_config(config)


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    model=_alternation(MODELS),
    a=_alternation(MODELS),
    b=_alternation(MODELS),


# ============================================================================ 3. final targets
# Every figure is under results/figures/{dataset}/ (the analysis dataset), so runs of two configs on different
# datasets in one folder never overwrite each other's figures.
EXTS = ("png", "pdf")


def figure(name, dataset=None):
    """A figure's PNG and PDF: results/figures/{dataset}/{name}.{png,pdf}."""
    return [f"results/figures/{dataset or ANALYSIS}/{name}.{ext}" for ext in EXTS]


def fig1_targets():
    """Fig 1 (and Fig 8, the no-skip model's): every model's self-similarity."""
    return [p for m in MODELS for p in figure(f"fig1_self_cka/{m}")]


def fig2_targets():
    return [
        p for a, b in config["cka"]["pairs"] for p in figure(f"fig2_cross_cka/{a}__{b}")
    ]


def similarity_pairs():
    """The model pairs every similarity measure is computed for: each model with itself (Fig 1) and the
    configured cross pairs (Fig 2); none when cka.measures asks for linear CKA only."""
    if len(MEASURES) == 1:
        return []
    return [[m, m] for m in MODELS] + [list(p) for p in config["cka"]["pairs"]]


def similarity_targets():
    """Every pair's long table of all measures, their agreement (table and figure) and, with
    cka.measure_figures, one heatmap figure per pair with a panel per measure."""
    pairs = similarity_pairs()
    if not pairs:
        return []
    return (
        [f"results/similarity/{ANALYSIS}/{a}__{b}.parquet" for a, b in pairs]
        + [f"results/similarity/{ANALYSIS}/agreement.csv"]
        + figure("measure_agreement")
        + (
            [p for a, b in pairs for p in figure(f"measures/{a}__{b}")]
            if config["cka"]["measure_figures"]
            else []
        )
    )


def fig3_targets():
    return figure("fig3_attention_distance") if attention_models() else []


def fig4_targets():
    return figure("fig4_attention_distance_all") if attention_models() else []


def attention_convention_targets():
    """The attention tables of the extra CLS conventions (attention.cls as a list)."""
    return [
        f"results/attention/{ANALYSIS}/cls_{cls}/{m}.parquet"
        for cls in CLS_CONVENTIONS[1:]
        for m in attention_models()
    ]


def fig5_targets():
    return (
        figure("fig5_head_subset_cka")
        if attention_models() and head_subset_cnn()
        else []
    )


def fig6_targets():
    if not erf_models():
        return []
    return figure("fig6_erf") + [f"results/figures/{ANALYSIS}/fig6_erf_sizes.csv"]


def fig7_targets():
    return (
        figure("fig7_skip_ratio") + figure("fig7_skip_cosine") if skip_models() else []
    )


def fig9_targets():
    return [p for m in localisation_models() for p in figure(f"fig9_localisation_{m}")]


def fig10_targets():
    return figure("fig10_localisation_summary") if localisation_models() else []


def fig11_targets():
    return figure("fig11_probes") if probe_models() else []


def fig12_targets():
    return figure("fig12_per_block_cka") if config["cka"]["per_block"] else []


def fig13_targets():
    return figure("fig13_probes_models") if probe_models() else []


def claims_targets():
    return [f"results/claims/{ANALYSIS}.csv", f"results/claims/{ANALYSIS}.md"]


def get_final_output(wildcards=None):
    """What `rule all` builds, section by section (each is empty when the config does not ask for it)."""
    return (
        # CKA inside and across models (Figs 1, 2, 8) and per block between checkpoints (Fig 12)
        fig1_targets()
        + fig2_targets()
        + fig12_targets()
        # the same comparisons under further similarity measures (cka.measures)
        + similarity_targets()
        # attention distance (Figs 3, 4) and head-subset CKA with a CNN (Fig 5)
        + fig3_targets()
        + fig4_targets()
        + attention_convention_targets()
        + fig5_targets()
        # effective receptive fields (Fig 6) and skip connections (Fig 7)
        + fig6_targets()
        + fig7_targets()
        # localisation (Figs 9, 10) and linear probes (Figs 11, 13)
        + fig9_targets()
        + fig10_targets()
        + fig11_targets()
        + fig13_targets()
        # one number per finding of the paper
        + claims_targets()
    )


# ============================================================================ 4. input functions
def train_samples(wildcards):
    """The sample list a trained model learns from (empty for hub / checkpoint models)."""
    spec = config["models"][wildcards.model]
    if spec["source"] != "train":
        return []
    return f"results/samples/{spec['train']['dataset']}.csv"


def checkpoint_file(wildcards):
    spec = config["models"][wildcards.model]
    return [spec["path"]] if spec["source"] in ("checkpoint", "python") and spec.get("path") else []


def _tables(pattern, models):
    def tables(wildcards):
        return [pattern.format(dataset=wildcards.dataset, model=m) for m in models]

    return tables


attention_tables = _tables(
    "results/attention/{dataset}/{model}.parquet", attention_models()
)
erf_tables = _tables("results/erf/{dataset}/{model}.parquet", erf_models())
erf_maps = _tables("results/erf/{dataset}/{model}.npz", erf_models())
skip_tables = _tables("results/skip/{dataset}/{model}.parquet", skip_models())


def probe_tables(wildcards):
    """The probe tables a figure reads: from probes.dataset, whatever dataset the figure is filed under."""
    return [f"results/probes/{PROBE_DATASET}/{m}.parquet" for m in probe_models()]


localisation_tables = _tables(
    "results/localisation/{dataset}/{model}.parquet", localisation_models()
)


def head_subset_tables(wildcards):
    cnn = head_subset_cnn()
    if cnn is None:
        raise ConfigError(
            "Fig 5 needs a CNN: set attention.head_subsets.cnn to a CNN model (and enabled: true)"
        )
    return [
        f"results/attention/{wildcards.dataset}/head_subsets/{m}__{cnn}.parquet"
        for m in attention_models()
    ]


def similarity_tables(wildcards):
    return [
        f"results/similarity/{wildcards.dataset}/{a}__{b}.parquet"
        for a, b in similarity_pairs()
    ]


def per_block_tables(wildcards):
    return [
        f"results/per_block/{wildcards.dataset}/{a}__{b}.parquet"
        for a, b in config["cka"]["per_block"]
    ]


def claims_layout():
    """Which table each input of the claims rule is, section → list of [label, path pattern with {dataset}].

    A label is a model name or an [a, b] pair. Sections the config does not produce are empty lists, so their
    metrics are simply left out of the summary.
    """
    d = "{dataset}"
    hs_cnn = head_subset_cnn()
    att = attention_models()
    return {
        "self_cka": [[m, f"results/cka/{d}/{m}__{m}.parquet"] for m in MODELS],
        "cross_cka": [
            [[a, b], f"results/cka/{d}/{a}__{b}.parquet"]
            for a, b in config["cka"]["pairs"]
        ],
        "attention": [[m, f"results/attention/{d}/{m}.parquet"] for m in att],
        "head_subsets": [
            [m, f"results/attention/{d}/head_subsets/{m}__{hs_cnn}.parquet"]
            for m in (att if hs_cnn else [])
        ],
        "erf": [[m, f"results/erf/{d}/{m}.parquet"] for m in erf_models()],
        "skip": [[m, f"results/skip/{d}/{m}.parquet"] for m in skip_models()],
        "localisation": [
            [m, f"results/localisation/{d}/{m}.parquet"] for m in localisation_models()
        ],
        "probes": [
            [m, f"results/probes/{PROBE_DATASET}/{m}.parquet"] for m in probe_models()
        ],
        "per_block": [
            [[a, b], f"results/per_block/{d}/{a}__{b}.parquet"]
            for a, b in config["cka"]["per_block"]
        ],
        "similarity": [
            [[a, b], f"results/similarity/{d}/{a}__{b}.parquet"]
            for a, b in similarity_pairs()
        ],
    }


def claims_inputs(wildcards):
    """Named inputs of the claims rule, one list of table paths per section of `claims_layout`."""
    return {
        section: [path.format(dataset=wildcards.dataset) for _, path in entries]
        for section, entries in claims_layout().items()
    }


# ============================================================================ 5. params functions
# Each rule gets exactly the settings it reads, in canonical (sorted-key) order, because Snakemake reruns a
# job whose params compare unequal and dicts compare by repr, i.e. by key order. Settings that only say where
# or how fast a job runs travel as one Execution object (`params.run`), which Snakemake leaves out of the
# comparison. A rule's settings never include other models' entries.
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
    return Execution(
        device=str(config["device"]), num_workers=int(config["num_workers"])
    )


def model_spec(wildcards):
    return canonical(config["models"][wildcards.model])


def dataset_cfg(wildcards):
    return canonical(config["datasets"][wildcards.dataset])


def _image_reading(dataset):
    """What reading `dataset`'s images needs (LOADER_KEYS), in canonical order."""
    ds = config["datasets"][dataset]
    return canonical({k: ds[k] for k in LOADER_KEYS if k in ds})


def loader_cfg(wildcards):
    """The analysed dataset's image-reading settings."""
    return _image_reading(wildcards.dataset)


def train_loader_cfg(wildcards):
    """The image-reading settings of the dataset a trained model learns from (empty for other sources)."""
    spec = config["models"][wildcards.model]
    return _image_reading(spec["train"]["dataset"]) if spec["source"] == "train" else {}


def settings(section, keys, per_model=(), extra=None):
    """A params function: `keys` of config[section]; the `per_model` keys (model → value maps) narrowed to
    the job's own model, so adding or editing another model's entry reruns nothing of this one.
    """

    def params(wildcards):
        cfg = config[section] if section else config
        out = {k: cfg[k] for k in keys}
        for k in per_model:
            value = cfg[k]
            if isinstance(value, dict):
                value = (
                    {wildcards.model: value[wildcards.model]}
                    if wildcards.model in value
                    else {}
                )
            out[k] = value
        if extra:
            out.update(extra(cfg, wildcards))
        return canonical(out)

    return params


# what each measure reads besides the caches: a job's params hold only the requested measures' settings, so
# editing the settings of a measure not computed reruns nothing
MEASURE_OPTIONS = {
    "rbf_cka": ("rbf_sigma",),
    "rsa": ("rsa_correlation",),
    "linear_cka_minus_pc": ("pcs_removed",),
    "bures": ("bures_taps",),
}


def measure_settings(wildcards=None):
    cfg = config["cka"]
    out = {"measures": MEASURES, "permutations": cfg["permutations"]}
    for m in MEASURES:
        out.update({k: cfg[k] for k in MEASURE_OPTIONS.get(m, ())})
    return canonical(out)


def attention_settings(wildcards):
    """The attention-distance settings of one job: its convention is the job's `cls` wildcard (the extra
    conventions' rule) or the first configured one (the main rule)."""
    cls = wildcards.get("cls", CLS_CONVENTIONS[0])
    cfg = config["attention"]
    return canonical(
        {**{k: cfg[k] for k in ("n_images", "batch_size", "split")}, "cls": cls}
    )


def head_subset_settings(wildcards):
    hs = config["attention"]["head_subsets"]
    return canonical({k: hs[k] for k in ("cnn_taps", "subset_size", "block", "tokens")})


def claims_labels():
    """The labels of `claims_layout`, in input order (a params value: no paths)."""
    return {
        section: [label for label, _ in entries]
        for section, entries in claims_layout().items()
    }


def claims_models():
    """What the summary needs to know of each model: its family (vit or cnn) and the Fig 8 settings."""
    return canonical(
        {
            m: {
                "family": model_kind(m),
                "arch": spec["arch"],
                "kwargs": spec.get("kwargs") or {},
                "remove_skip": spec.get("remove_skip"),
            }
            for m, spec in config["models"].items()
        }
    )
