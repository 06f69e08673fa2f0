# The map of the workflow: every input / target / params function and get_final_output() (what `rule all`
# builds). The config checks and the model list of each analysis live in the package (seelike.config.checks,
# unit-tested in-process); this file validates the config against the schema, runs those checks at parse time
# (every bad config fails `snakemake -n`) and names the lists the rules read. The rule files (data, models,
# model_passes, comparisons, figures, claims) hold no Python logic.
#
#   1. validation: schema, then the cross-key checks     (seelike.config.check_config)
#   2. model lists of the analyses                        (attention_models, erf_models, ..., head_subset_cnn)
#   3. final targets, section by section                 (get_final_output and one function per figure)
#   4. input functions                                    (tables a figure or the claims summary reads)
#   5. params functions                                   (settings, loader_cfg, execution, canonical)
import re

from snakemake.utils import validate

# torch-free imports: with the model decisions cached on disk (seelike.models.families), parsing the workflow
# imports neither torch nor timm
from seelike.analyses.replicates import groups_path
from seelike.config import ConfigError, check_config
from seelike.rules.claims import GROUPED_SECTIONS
from seelike.config.measures import MEASURE_SETTINGS
from seelike.rules import Execution

# ============================================================================ 1. validation
validate(config, schema="../schemas/config.schema.yaml", set_default=True)
# dataset and model names, cross-key checks, model builds, model lists, images per split: a ConfigError
# naming the key, the problem and the fix
CONFIG = check_config(config)

DATASETS = list(config["datasets"])
MODELS = list(config["models"])
ANALYSIS = CONFIG.analysis_dataset
# The probes may read another dataset than the other analyses (probes.dataset; null = analysis_dataset).
PROBE_DATASET = CONFIG.probe_dataset
# attention.cls: one convention or a list; the first feeds Figs 3-5 and the claims, each other one its own table.
CLS_CONVENTIONS = (
    [config["attention"]["cls"]]
    if isinstance(config["attention"]["cls"], str)
    else list(config["attention"]["cls"])
)
# cka.measures: linear CKA always (Figs 1, 2 and the claims read it), first; any other measure adds the
# similarity tables, their agreement and the claims' robustness verdicts.
MEASURES = ["linear_cka"] + [m for m in config["cka"]["measures"] if m != "linear_cka"]
# What a pair's CKA / similarity table holds, a param of both rules. 2: also the null maxima and jackknife terms
# of the atlas's pair scores (seelike.analyses.pair_scores); 3: the CKA table's jackknife groups beside it
# (seelike.analyses.replicates); tables of earlier runs are rebuilt from the Grams.
PAIR_TABLE_CONTENTS = 3
# What the analyses' own tables hold (attention distances, ERF sizes, skip ratios, localisation maps, probe
# accuracies), a param of their rules. 2: their standard errors over images (issue 22); older tables rerun.
ANALYSIS_TABLE_CONTENTS = 2
# cka.pairs resolved (listed, all, groups): the cross-model comparisons as asked, each unordered pair once
CROSS_PAIRS = CONFIG.cross_pairs


# ============================================================================ 2. model lists
# Listed in the config, or (models: null) every model the analysis applies to, decided by the model's family
# and taps (seelike.config.checks.WorkflowConfig.refusal).
def attention_models():
    return CONFIG.analysis_models("attention")


def erf_models():
    return CONFIG.analysis_models("erf")


def skip_models():
    return CONFIG.analysis_models("skip")


def probe_models():
    return CONFIG.analysis_models("probes")


def localisation_models():
    return CONFIG.analysis_models("localisation")


def head_subset_cnn():
    """The CNN of Fig 5: configured, or the first CNN-kind model; None when there is none or Fig 5 is off."""
    return CONFIG.head_subset_cnn()


def head_subset_models():
    """The attention models of Fig 5 (global attention whose heads' outputs are their own)."""
    return CONFIG.head_subset_models()


def models_with_source(*sources):
    return [m for m in MODELS if config["models"][m]["source"] in sources]


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
    """Fig 2 for each listed cross pair (cka.pairs: all / groups draw the atlas instead)."""
    if not CONFIG.pairs_listed:
        return []
    return [p for a, b in CROSS_PAIRS for p in figure(f"fig2_cross_cka/{a}__{b}")]


def stored_pairs():
    """Every pair a table is computed for, as stored (config order): each model with itself (Fig 1), then the
    cross pairs (cka.pairs), each unordered pair once."""
    return [[m, m] for m in MODELS] + [
        list(CONFIG.stored_pair(a, b)) for a, b in CROSS_PAIRS
    ]


def pair_table(kind, a, b, dataset="{dataset}"):
    """results/{kind}/{dataset}/{a}__{b}.parquet of a pair as stored (b × a is read as the transpose of a × b)."""
    a, b = CONFIG.stored_pair(a, b)
    return f"results/{kind}/{dataset}/{a}__{b}.parquet"


def similarity_pairs():
    """The model pairs every similarity measure is computed for (`stored_pairs`); none when cka.measures asks
    for linear CKA only."""
    return stored_pairs() if len(MEASURES) > 1 else []


def atlas_targets():
    """With a cross pair: the atlas page, its pair-score table and overview figure per atlas dataset, and with
    two datasets or more the panel of how each pair's score moves between them."""
    per_dataset = [
        p
        for d in CONFIG.atlas_datasets
        for p in [f"results/atlas/{d}/index.html", f"results/atlas/{d}/pairs.csv"]
        + figure("atlas_overview", dataset=d)
    ]
    return per_dataset + (SHIFT_OUTPUTS if len(CONFIG.atlas_datasets) > 1 else [])


# How the pair scores move between the atlas datasets: named by the datasets, so that configs on other datasets
# never overwrite it.
SHIFT_STEM = "results/atlas/shift/" + "__".join(CONFIG.atlas_datasets or ["none"])
SHIFT_OUTPUTS = [f"{SHIFT_STEM}.{ext}" for ext in ("csv", "png", "pdf")]


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
    return figure("fig5_head_subset_cka") if head_subset_models() else []


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
        # every cross pair at once: the atlas page (cka.pairs)
        + atlas_targets()
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
    return (
        [spec["path"]]
        if spec["source"] in ("checkpoint", "python") and spec.get("path")
        else []
    )


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
        for m in head_subset_models()
    ]


def cross_cka_table(wildcards):
    """Fig 2's CKA table: the pair as stored (the figure reads b × a as the transpose)."""
    return pair_table("cka", wildcards.a, wildcards.b, wildcards.dataset)


def atlas_inputs(wildcards):
    """The atlas's tables: every stored pair's CKA (self pairs too: the embedding reads them) and the similarity
    tables of the other measures."""
    d = wildcards.dataset
    return {
        "cka": [f"results/cka/{d}/{a}__{b}.parquet" for a, b in stored_pairs()],
        "similarity": [
            f"results/similarity/{d}/{a}__{b}.parquet" for a, b in similarity_pairs()
        ],
    }


def atlas_models():
    """What the atlas shows of each model, in config order: architecture, tap family and how the claims read it
    (vit, cnn, other)."""
    return [
        {
            "name": m,
            "arch": config["models"][m]["arch"],
            "family": CONFIG.family(m),
            "class": CONFIG.model_kind(m),
        }
        for m in MODELS
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
        "cross_cka": [[[a, b], pair_table("cka", a, b, d)] for a, b in CROSS_PAIRS],
        "attention": [[m, f"results/attention/{d}/{m}.parquet"] for m in att],
        "head_subsets": [
            [m, f"results/attention/{d}/head_subsets/{m}__{hs_cnn}.parquet"]
            for m in head_subset_models()
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
    """Named inputs of the claims rule, one list of table paths per section of `claims_layout`, and `groups`: the
    jackknife groups beside the CKA-derived tables (the rule finds each beside its table).
    """
    inputs = {
        section: [path.format(dataset=wildcards.dataset) for _, path in entries]
        for section, entries in claims_layout().items()
    }
    inputs["groups"] = [
        str(groups_path(p)) for s in GROUPED_SECTIONS for p in inputs[s]
    ]
    return inputs


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


def settings(section, keys, per_model=()):
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
        return canonical(out)

    return params


def measure_settings(wildcards=None):
    cfg = config["cka"]
    out = {"measures": MEASURES, "permutations": cfg["permutations"]}
    for m in MEASURES:
        out.update({k: cfg[k] for k in MEASURE_SETTINGS.get(m, ())})
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
                "family": CONFIG.model_kind(m),
                "arch": spec["arch"],
                "kwargs": spec.get("kwargs") or {},
                "remove_skip": spec.get("remove_skip"),
            }
            for m, spec in config["models"].items()
        }
    )
