"""Config checks in-process (seelike.config.checks): every bad config stops with a message naming the key.

Each case edits tests/configs/tiny.yaml, validates it against the workflow's schema with its defaults (as the
Snakefile does) and runs the cross-key checks common.smk runs at parse time; tests/test_workflow.py keeps a few
real `snakemake -n` runs of these cases for the wiring.
"""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from seelike.config import ConfigError, WorkflowConfig, check_config
from seelike.data.samples import build_samples, split_counts

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _imagefolder_dataset(source):
    def edit(c):
        c["datasets"]["digits"] = {"source": source, "root": "no/such/folder"}

    return edit


def _checkpoint_model(c):
    c["models"]["resnet"].update(source="checkpoint", path="no/such/r18.safetensors")
    del c["models"]["resnet"]["train"]


def _drop(section):
    def edit(c):
        del c[section]

    return edit


SCHEMA_ERROR, CHECK_ERROR = "schema", "check"

# (id, which step refuses it, edit of tests/configs/tiny.yaml, substrings of the message: key, problem, fix)
BAD_CONFIGS = [
    ("cka.batch_size", SCHEMA_ERROR, lambda c: c["cka"].update(batch_size=2), "batch_size"),
    ("unknown key", SCHEMA_ERROR, lambda c: c.update(colour="red"), "colour"),
    ("source: hub", SCHEMA_ERROR, lambda c: c["models"]["vit"].update(source="hub"), "hub"),
    (
        "analysis_dataset",
        CHECK_ERROR,
        lambda c: c.update(analysis_dataset="imagenet"),
        "analysis_dataset 'imagenet'",
    ),
    (
        "cka.pairs",
        CHECK_ERROR,
        lambda c: c["cka"].update(pairs=[["vit", "convnext"]]),
        "convnext",
    ),
    # the atlas's pairs (cka.pairs: all / groups) and datasets
    (
        "cka.pairs: all, one model",
        CHECK_ERROR,
        lambda c: (
            c["models"].pop("vit_variant"),
            c["models"].pop("resnet"),
            c["cka"].update(pairs="all", per_block=[]),
        ),
        "cka.pairs: all",
    ),
    (
        "cka.pairs.groups, a model in two",
        CHECK_ERROR,
        lambda c: c["cka"].update(
            pairs={"groups": {"vits": ["vit", "resnet"], "cnns": ["resnet"]}}
        ),
        ("'resnet' is in groups", "'vits'", "'cnns'"),
    ),
    (
        "cka.pairs.groups, unknown model",
        CHECK_ERROR,
        lambda c: c["cka"].update(pairs={"groups": {"vits": ["vit", "deit"], "cnns": ["resnet"]}}),
        "cka.pairs.groups.vits names 'deit'",
    ),
    (
        "cka.pairs.groups, one group",
        CHECK_ERROR,
        lambda c: c["cka"].update(pairs={"groups": {"all": ["vit", "resnet"]}}),
        "cka.pairs.groups has 1 group",
    ),
    (
        "cka.pairs, a self pair",
        CHECK_ERROR,
        lambda c: c["cka"].update(pairs=[["vit", "vit"]]),
        "compares a model with itself",
    ),
    ("cka.pairs: some", SCHEMA_ERROR, lambda c: c["cka"].update(pairs="some"), "some"),
    (
        "atlas.datasets, unknown",
        CHECK_ERROR,
        lambda c: c.update(atlas={"datasets": ["digits", "cifar"]}),
        "atlas.datasets names 'cifar'",
    ),
    (
        "atlas.datasets, no caches",
        CHECK_ERROR,
        lambda c: (
            c["datasets"].update(small={**c["datasets"]["digits"], "max_test": 8}),
            c.update(atlas={"datasets": ["digits", "small"]}),
        ),
        "atlas.datasets names 'small', whose 'test' split holds 8 images",
    ),
    (
        "model name with __",
        SCHEMA_ERROR,
        lambda c: c["models"].update({"a__b": c["models"]["vit"]}),
        "a__b",
    ),
    (
        "cka.per_block",
        CHECK_ERROR,
        lambda c: c["cka"].update(per_block=[["vit", "resnet"]]),
        "compares different architectures",
    ),
    (
        "remove_skip branch",
        SCHEMA_ERROR,
        lambda c: c["models"]["vit"].update(remove_skip={"blocks": [0], "branches": ["ffn"]}),
        "ffn",
    ),
    # model lists of the analyses
    *[
        (
            f"{section}.models unknown",
            CHECK_ERROR,
            lambda c, s=section: c[s].update(models=["vit", "nope"]),
            (
                f"config: {section}.models names ['nope'], not keys of models",
                f"set {section}.models",
            ),
        )
        for section in ("attention", "erf", "skip", "probes", "localisation")
    ],
    # an analysis that does not apply to a listed model: refused with the model, the analysis and the reason
    (
        "attention on a CNN",
        CHECK_ERROR,
        lambda c: c["attention"].update(models=["vit", "resnet"]),
        (
            "attention.models lists 'resnet'",
            "mean attention distance does not apply to it",
            "no self-attention",
            "drop 'resnet' from attention.models",
        ),
    ),
    (
        "skip on a VGG",
        CHECK_ERROR,
        lambda c: (
            c["models"].update(
                vgg={
                    "source": "train",
                    "arch": "vgg11",
                    "kwargs": {"num_classes": 10},
                    "train": {"dataset": "digits"},
                }
            ),
            c["skip"].update(models=["vgg"]),
        ),
        (
            "skip.models lists 'vgg' (vgg11)",
            "skip-connection statistics does not apply to it",
            "residual branch",
            "drop 'vgg' from skip.models",
        ),
    ),
    (
        "attention.head_subsets.cnn",
        CHECK_ERROR,
        lambda c: c["attention"]["head_subsets"].update(cnn="nope"),
        ("attention.head_subsets.cnn 'nope' is not a key of models", "name a configured CNN"),
    ),
    # models
    (
        "unknown arch",
        CHECK_ERROR,
        lambda c: c["models"]["vit"].update(arch="vit_tinyy_patch16_224"),
        (
            "models.vit.arch 'vit_tinyy_patch16_224' is not a timm architecture",
            "close names: vit_tiny_patch16_224",
            "timm.list_models('*vit*')",
        ),
    ),
    (
        "unknown kwarg",
        CHECK_ERROR,
        lambda c: c["models"]["vit"]["kwargs"].update(no_such_kwarg=1),
        ("models.vit: timm cannot build", "no_such_kwarg", "fix models.vit.arch or .kwargs"),
    ),
    (
        "checkpoint path",
        CHECK_ERROR,
        _checkpoint_model,
        ("models.resnet.path 'no/such/r18.safetensors' is not a file", "fix models.resnet.path"),
    ),
    # datasets
    (
        "imagefolder root",
        CHECK_ERROR,
        _imagefolder_dataset("imagefolder"),
        ("datasets.digits.root 'no/such/folder'", "does not exist", "set datasets.digits.root"),
    ),
    (
        "fashion_mnist root",
        CHECK_ERROR,
        _imagefolder_dataset("fashion_mnist"),
        ("datasets.digits.root 'no/such/folder'", "not found", "set datasets.digits.root"),
    ),
    # more images than the split holds (tiny: max_test 128)
    *[
        (
            f"{section}.n_images",
            CHECK_ERROR,
            lambda c, s=section: c[s].update(n_images=256),
            (
                f"config: {section}.n_images is 256 but the 'test' split",
                "holds 128 images",
                f"lower {section}.n_images to at most 128",
            ),
        )
        for section in ("cka", "attention", "erf", "skip", "localisation")
    ],
    (
        "probes.n_test",
        CHECK_ERROR,
        lambda c: c["probes"].update(n_test=200),
        ("config: probes.n_test is 200", "holds 128", "lower probes.n_test to at most 128"),
    ),
    (
        "skip.split",
        CHECK_ERROR,
        lambda c: c["skip"].update(split="val"),
        ("skip.split 'val' is not a split", "set skip.split"),
    ),
    (
        "probes.dataset",
        CHECK_ERROR,
        lambda c: c["probes"].update(dataset="cifar"),
        ("config: probes.dataset 'cifar' is not a key of datasets", "name a configured dataset"),
    ),
    (
        "probes.n_test of probes.dataset",
        CHECK_ERROR,
        lambda c: (
            c["datasets"].update(small={**c["datasets"]["digits"], "max_test": 40}),
            c["probes"].update(dataset="small", n_test=64),
        ),
        ("config: probes.n_test is 64", "dataset 'small' (probes.dataset)", "holds 40"),
    ),
    # similarity measures: a tap list for bures checked against the models' taps (weightless builds)
    (
        "cka.bures_taps",
        CHECK_ERROR,
        lambda c: c["cka"].update(measures=["linear_cka", "bures"], bures_taps=["blocks.1.blok"]),
        (
            "config: cka.bures_taps lists ['blocks.1.blok'], not taps of any model",
            "did you mean",
            "set cka.bures_taps: block_outputs",
        ),
    ),
    (
        "cka.measures",
        CHECK_ERROR,
        lambda c: c["cka"].update(measures=["cka_rbf"]),
        # close names, best first ('cknna' now ranks above 'rbf_cka' for 'cka_rbf')
        ("config: cka.measures lists ['cka_rbf']", "did you mean [", "'rbf_cka']?", "choose from"),
    ),
    # mutual_knn / cknna: k neighbours per image must leave an image out of every kept minibatch
    ("cka.knn_k 0", SCHEMA_ERROR, lambda c: c["cka"].update(knn_k=0), "knn_k"),
    ("cka.knn_metric", SCHEMA_ERROR, lambda c: c["cka"].update(knn_metric="l1"), "l1"),
    (
        "cka.knn_k ≥ batch_size − 1",
        CHECK_ERROR,
        lambda c: c["cka"].update(measures=["linear_cka", "cknna"], knn_k=31),
        (
            "config: cka.knn_k is 31 but cka.batch_size is 32",
            "cknna need knn_k < the minibatch size − 1",
            "lower cka.knn_k to at most 30, or raise cka.batch_size",
        ),
    ),
    (
        "cka.knn_k ≥ last minibatch − 1",
        CHECK_ERROR,
        lambda c: c["cka"].update(measures=["mutual_knn"], n_images=100),
        (
            "config: cka.knn_k is 10 but the last minibatch holds 4 images",
            "lower cka.knn_k to at most 2, or make cka.n_images a multiple of cka.batch_size",
        ),
    ),
    (
        "cka.knn_k ≥ n_images − 1",
        CHECK_ERROR,
        lambda c: c["cka"].update(measures=["mutual_knn"], n_images=10),
        ("config: cka.knn_k is 10 but cka.n_images is 10", "raise cka.n_images"),
    ),
    # the schema's defaults are the paper's protocol (10,240 images), checked against the tiny split
    ("schema defaults", CHECK_ERROR, _drop("cka"), "cka.n_images is 10240"),
]


def tiny(edit=None) -> dict:
    """tests/configs/tiny.yaml with `edit` applied, through a YAML round trip as the dry runs write it."""
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    if edit is not None:
        edit(cfg)
    return yaml.safe_load(yaml.safe_dump(cfg))


def validated(cfg: dict) -> dict:
    """`cfg` validated against the workflow's schema with its defaults filled in, as the Snakefile does."""
    validate(cfg, str(SCHEMA), set_default=True)
    return cfg


@pytest.fixture
def in_empty_dir(tmp_path, monkeypatch):
    """Relative paths in a config start at the working directory: an empty one, as a fresh run folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "kind,edit,message", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_stops_with_a_message_naming_the_key(in_empty_dir, kind, edit, message):
    cfg = tiny(edit)
    if kind == SCHEMA_ERROR:
        with pytest.raises(WorkflowError) as err:
            validated(cfg)
    else:
        validated(cfg)
        with pytest.raises(ConfigError) as err:
            check_config(cfg)
    for part in (message,) if isinstance(message, str) else message:
        assert part in str(err.value), str(err.value)


@pytest.mark.parametrize("name", ["tiny.yaml", "python_model.yaml", "../../config/config.yaml"])
def test_good_configs_pass(name):
    path = REPO / "tests" / "configs" / name
    checked = check_config(validated(yaml.safe_load(path.read_text())))
    assert checked.models


def test_knn_k_is_checked_only_for_the_knn_measures():
    """A knn_k too large for the minibatches is refused only when mutual_knn or cknna is asked for; one below
    the minibatch size − 1 passes, and a remainder minibatch under 4 images (dropped) is not counted."""
    cfg = validated(tiny(lambda c: c["cka"].update(knn_k=31, measures=["linear_cka", "rsa"])))
    WorkflowConfig(cfg).check_knn_k()
    cfg["cka"].update(measures=["mutual_knn", "cknna"], knn_k=30)
    WorkflowConfig(cfg).check_knn_k()
    cfg["cka"].update(n_images=99)  # minibatches 32, 32, 32 and 3 (dropped)
    WorkflowConfig(cfg).check_knn_k()
    cfg["cka"].update(knn_k=31)
    with pytest.raises(ConfigError, match="mutual_knn and cknna need"):
        WorkflowConfig(cfg).check_knn_k()


def test_python_models_get_their_factory_as_arch():
    """The rest of the workflow reads `arch`: a python model's is its factory (model.json records the same)."""
    cfg = validated(yaml.safe_load((REPO / "tests" / "configs" / "python_model.yaml").read_text()))
    assert "arch" not in cfg["models"]["tv_resnet"]
    check_config(cfg)
    assert cfg["models"]["tv_resnet"]["arch"] == "torchvision.models:resnet18"


def test_model_lists_follow_the_families():
    """Listed models are kept as listed; null lists are every model the analysis applies to."""
    cfg = validated(tiny())
    for section in ("attention", "erf", "skip"):
        cfg[section]["models"] = None
    wc = WorkflowConfig(cfg)
    assert wc.models == ["resnet", "vit", "vit_variant"]  # sorted by the YAML round trip
    assert wc.analysis_models("attention") == ["vit", "vit_variant"]
    assert wc.analysis_models("skip") == ["resnet", "vit", "vit_variant"]
    assert wc.analysis_models("probes") == ["vit", "resnet"]  # listed in tiny.yaml, in its order
    assert wc.refusal("resnet", "attention") and wc.refusal("vit", "attention") is None
    assert [wc.model_kind(m) for m in wc.models] == ["cnn", "vit", "vit"]
    assert wc.head_subset_cnn() == "resnet"
    cfg["attention"]["head_subsets"]["cnn"] = None
    assert wc.head_subset_cnn() == "resnet"  # the first CNN
    cfg["attention"]["head_subsets"]["enabled"] = False
    assert wc.head_subset_cnn() is None


def test_split_sizes_are_the_sample_lists_counts():
    """The dry run's image counts are those of the sample list `build_samples` makes (one counting function)."""
    cfg = validated(tiny())
    ds = cfg["datasets"]["digits"]
    wc = WorkflowConfig(cfg)
    assert wc.split_sizes("digits") == {"train": 256, "test": 128}
    for edit in ({}, {"test_fraction": 0.5, "max_train": None, "max_test": 1000}):
        d = {**ds, **edit}
        got = build_samples(d, seed=0)["split"].value_counts().to_dict()
        assert split_counts([None] * 1797, d) == got
    assert split_counts(["train", "val", None, None], {"test_fraction": 0.5, "max_train": 1}) == {
        "val": 1,
        "test": 1,
        "train": 1,
    }


def test_fig5_reads_only_models_whose_heads_are_their_own(in_empty_dir):
    """Swin's windowed attention has distances (Figs 3, 4) but no global head outputs for Fig 5: it is an
    attention model and not a head-subset model, decided at parse time."""

    def edit(c):
        c["models"]["swin"] = {
            "source": "train",
            "arch": "swin_tiny_patch4_window7_224",
            "kwargs": {"img_size": 32, "window_size": 4, "embed_dim": 24, "depths": [1, 1],
                       "num_heads": [1, 1], "num_classes": 10},
            "data_config": c["models"]["vit"]["data_config"],
            "train": {"dataset": c["models"]["vit"]["train"]["dataset"]},
        }  # fmt: skip
        c["attention"]["models"] = None

    cfg = check_config(validated(tiny(edit)))
    assert "swin" in cfg.analysis_models("attention")
    assert "swin" not in cfg.head_subset_models()
    assert "vit" in cfg.head_subset_models()


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (
            [["resnet", "vit"], ["vit", "resnet"]],
            [("resnet", "vit")],
        ),  # each unordered pair once, as asked
        ("all", [("vit", "vit_variant"), ("vit", "resnet"), ("vit_variant", "resnet")]),
        (
            {"groups": {"vits": ["vit", "vit_variant"], "cnns": ["resnet"]}},
            [("vit", "resnet"), ("vit_variant", "resnet")],
        ),
    ],
)
def test_cross_pairs_resolve_each_unordered_pair_once(pairs, expected):
    cfg = yaml.safe_load(
        (REPO / "tests" / "configs" / "tiny.yaml").read_text()
    )  # models in file order
    cfg["cka"]["pairs"] = pairs
    conf = WorkflowConfig(validated(cfg))
    assert conf.cross_pairs == expected
    # stored in config order, whichever way they were asked
    assert [conf.stored_pair(a, b) for a, b in expected] == [
        tuple(sorted(p, key=list(cfg["models"]).index)) for p in expected
    ]
    assert conf.pairs_listed == isinstance(pairs, list)
    assert conf.atlas_datasets == ["digits"]
