"""The workflow as users run it: config validation errors, dry runs, and one real end-to-end run."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_RUN_ARGS, prepare_workdir, run_snakemake

from seelike.io import read_json, read_table
from seelike.similarity import MEASURES


def _config_with(tmp_path, edit):
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    edit(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return prepare_workdir(tmp_path / "run", path)


def _drop(section):
    def edit(c):
        del c[section]

    return edit


# A few bad configs through a real `snakemake -n`: the wiring from the Snakefile to the schema and to
# seelike.config.check_config. Every case, in-process: tests/test_config_checks.py.
# (edit of tests/configs/tiny.yaml, substrings of the message: the key, the problem, the fix)
BAD_CONFIGS = [
    # the schema
    (lambda c: c.update(colour="red"), "colour"),
    # a model timm does not know
    (
        lambda c: c["models"]["vit"].update(arch="vit_tinyy_patch16_224"),
        (
            "models.vit.arch 'vit_tinyy_patch16_224' is not a timm architecture",
            "close names: vit_tiny_patch16_224",
        ),
    ),
    # a listed analysis that does not apply to the model
    (
        lambda c: c["attention"].update(models=["vit", "resnet"]),
        (
            "attention.models lists 'resnet'",
            "mean attention distance does not apply to it",
            "drop 'resnet' from attention.models",
        ),
    ),
    # more images than the split holds (tiny: max_test 128)
    (
        lambda c: c["cka"].update(n_images=256),
        ("config: cka.n_images is 256 but the 'test' split", "lower cka.n_images to at most 128"),
    ),
]


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
    """The dry run of every BAD_CONFIGS entry, two at a time: each is mostly interpreter start-up and imports
    (one core's worth), so the 2-core CI machine runs them in half the time."""
    root = tmp_path_factory.mktemp("bad_configs")

    def dry_run(i):
        (root / f"bad{i}").mkdir()
        cfg = _config_with(root / f"bad{i}", BAD_CONFIGS[i][0])
        return run_snakemake(cfg, "-n", "--cores", "1", check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(dry_run, range(len(BAD_CONFIGS))))


@pytest.mark.parametrize(
    "i", range(len(BAD_CONFIGS)), ids=[f"bad{i}" for i in range(len(BAD_CONFIGS))]
)
def test_bad_config_stops_with_a_message_naming_the_key(bad_config_runs, i):
    proc, message = bad_config_runs[i], BAD_CONFIGS[i][1]
    assert proc.returncode != 0
    for part in (message,) if isinstance(message, str) else message:
        assert part in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_schema_defaults_fill_missing_sections(tmp_path):
    # the erf defaults (32 images, models chosen by family) fit the tiny sample list
    root = _config_with(tmp_path, _drop("erf"))
    proc = run_snakemake(root, "-n", "--cores", "1", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {w for r, w in _jobs(proc.stdout) if r == "receptive_field"}
    assert got == {f"dataset=digits, model={m}" for m in ("vit", "vit_variant", "resnet")}, got


def test_model_families_decide_the_default_model_lists(tmp_path):
    """A MobileViT (ViT in its name, no ViT blocks) gets no attention job (its attention runs over unfolded
    patches, not image positions) and no skip job (its drop_path branches do not add up to its block outputs),
    but an ERF job (its stage outputs are maps): the default lists follow the structure of the model
    (seelike.models.families.analysis_support), as the rules do at run time."""

    def edit(c):
        c["models"]["mobilevit"] = {
            "source": "train",
            "arch": "mobilevit_xxs",
            "kwargs": {"num_classes": 10},
            "train": {"dataset": "digits"},
        }
        for section in ("attention", "erf", "skip"):
            c[section]["models"] = None

    proc = run_snakemake(_config_with(tmp_path, edit), "-n", "--cores", "1")
    jobs = _jobs(proc.stdout)
    for rule, expected in (
        ("attention_distance", {"vit", "vit_variant"}),
        ("receptive_field", {"vit", "vit_variant", "resnet", "mobilevit"}),
        ("skip_stats", {"vit", "vit_variant", "resnet"}),
        ("train_model", {"vit", "vit_variant", "resnet", "mobilevit"}),
    ):
        got = {w.split("model=")[1].split(",")[0] for r, w in jobs if r == rule}
        assert got == expected, (rule, got)


def test_default_config_dry_runs(tmp_path):
    root = prepare_workdir(
        tmp_path, REPO / "config" / "config.yaml"
    )  # a clean folder: nothing done yet
    proc = run_snakemake(root, "-n", "--cores", "2", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("samples", "train_model", "cache", "cka", "plot_self_cka", "plot_cross_cka"):
        assert rule in proc.stdout


@pytest.mark.slow
def test_end_to_end_outputs(workflow_run):
    res = workflow_run / "results"
    samples = pd.read_csv(res / "samples" / "digits.csv")
    assert samples["split"].value_counts().to_dict() == {"train": 256, "test": 128}
    # resnet: stem_conv, stem + 8 basic units × (conv1, branch, sum, out) + 4 projections (64-wide stem → 16-wide
    # stage 1)
    for name, n_taps in (("vit", 2 + 7 * 2), ("resnet", 2 + 8 * 4 + 4)):
        info = read_json(res / "models" / name / "model.json")
        assert info["num_taps"] == n_taps
        assert 0.15 < info["metrics"]["test_accuracy"] <= 1.0  # chance is 0.1
        taps = pd.read_csv(res / "models" / name / "taps.csv")
        assert len(taps) == n_taps and taps["index"].tolist() == list(range(n_taps))
        meta = read_json(res / "cache" / "digits" / name / "meta.json")
        assert meta["plan"]["samples_hash"] == info["samples_hash"]
    for a, b in (("vit", "vit"), ("resnet", "resnet"), ("vit", "resnet")):
        df, meta = read_table(res / "cka" / "digits" / f"{a}__{b}.parquet")
        assert meta["plan"]["repeats"] == 2 and meta["model_a"] == a
        assert df["cka"].between(-0.1, 1.0 + 1e-6).all() and not df["cka"].isna().any()
        if a == b:
            diag = df[df.index_a == df.index_b]
            assert np.allclose(diag.loc[~diag.constant, "cka"], 1.0, atol=1e-5)
    # a trained ResNet's consecutive taps are more alike than its first and last
    df, _ = read_table(res / "cka" / "digits" / "resnet__resnet.parquet")
    first_last = df[(df.index_a == 0) & (df.index_b == df.index_b.max())]["cka"].item()
    neighbours = df[(df.index_b == df.index_a + 1) & ~df.constant]["cka"].mean()
    assert neighbours > first_last
    # Fig 12 from the per-block pair: the diagonal of the cross table at the block outputs
    pb, _ = read_table(res / "per_block" / "digits" / "vit__vit_variant.parquet")
    cross, _ = read_table(res / "cka" / "digits" / "vit__vit_variant.parquet")
    assert pb["tap"].tolist() == ["embed", "blocks.0.block", "blocks.1.block"]
    for tap, value in zip(pb["tap"], pb["cka"], strict=True):
        assert value == cross[(cross.tap_a == tap) & (cross.tap_b == tap)]["cka"].item()
    variant = read_json(res / "models" / "vit_variant" / "model.json")
    assert variant["remove_skip"]["blocks"] == [1] and variant["metrics"]["train_images"] == 128
    # every measure of cka.measures, per pair, with the CKA rule's linear CKA rows unchanged
    for a, b in (
        ("vit", "vit"),
        ("resnet", "resnet"),
        ("vit_variant", "vit_variant"),
        ("vit", "resnet"),
    ):
        sim, meta = read_table(res / "similarity" / "digits" / f"{a}__{b}.parquet")
        cka, _ = read_table(res / "cka" / "digits" / f"{a}__{b}.parquet")
        assert list(dict.fromkeys(sim["measure"])) == list(MEASURES) and set(
            meta["measures"]
        ) == set(MEASURES)
        assert sim[sim.measure == "linear_cka"]["value"].tolist() == cka["cka"].tolist()
        live = sim[~sim.constant & (sim.measure != "bures")]
        assert live["value"].notna().all() and live["se"].notna().all()
        assert sim[sim.measure == "bures"]["value"].notna().sum() > 0
    agreement = pd.read_csv(res / "similarity" / "digits" / "agreement.csv")
    assert len(agreement) == 4 * len(MEASURES) * (len(MEASURES) - 1) // 2
    claims = pd.read_csv(res / "claims" / "digits.csv")
    fig1 = claims[(claims.figure.astype(str) == "1") & claims.seen.notna()]
    assert fig1["robust"].notna().all() and fig1["measures"].str.contains("dcor").all()
    # the atlas: pairs.csv scores every measure of the one cross pair from its stored table; the page is one file
    scores = pd.read_csv(res / "atlas" / "digits" / "pairs.csv")
    assert sorted(scores["measure"]) == sorted(MEASURES) and set(
        zip(scores.a, scores.b, strict=True)
    ) == {("vit", "resnet")}
    lin = scores[scores.measure == "linear_cka"].iloc[0]
    cross, _ = read_table(res / "cka" / "digits" / "vit__resnet.parquet")
    assert lin["score"] == pytest.approx(cross[cross.kind_a.isin(["embed", "block"]) & cross.kind_b.isin(
        ["stem", "block", "out"])]["cka"].max())  # fmt: skip
    assert 0 < lin["score_p"] <= 1 and lin["score_se"] > 0 and lin["diagonal_se"] > 0
    page = (res / "atlas" / "digits" / "index.html").read_text()
    # (plotly.js inline: the page opens offline; its browser test is tests/test_atlas_page.py)
    assert "vit_tiny_patch16_224" in page and "resnet18" in page and len(page) > 1_000_000
    for fig in (
        "fig1_self_cka/vit",
        "fig1_self_cka/resnet",
        "fig1_self_cka/vit_variant",
        "fig2_cross_cka/vit__resnet",
        "fig12_per_block_cka",
        "measure_agreement",
        "atlas_overview",
    ):
        for ext in ("png", "pdf"):
            assert (res / "figures" / "digits" / f"{fig}.{ext}").stat().st_size > 5000


@pytest.mark.slow
def test_rerun_is_a_no_op_and_one_figure_reruns_alone(workflow_run):
    proc = run_snakemake(workflow_run, "-n", "--cores", "1")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    proc = run_snakemake(workflow_run, "fig2", "--forcerun", "plot_cross_cka", "-n", "--cores", "1")
    out = proc.stdout
    assert (
        "plot_cross_cka" in out
        and "train_model" not in out
        and "cache" not in out.replace("cache/", "")
    )


def test_configfile_on_the_command_line_replaces_the_default(tmp_path):
    cfg = {
        "analysis_dataset": "d",
        "datasets": {"d": {"source": "digits"}},
        "models": {"onlyone": {"source": "train", "arch": "resnet18", "train": {"dataset": "d"}}},
        # within digits' 449 test images (the schema's defaults are the paper's, checked at dry run)
        "cka": {"n_images": 64, "batch_size": 32},
        "skip": {"n_images": 64},
        "localisation": {"n_images": 64, "batch_size": 32},
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(REPO, "-n", "--cores", "1", "--configfile", str(path))
    assert "model=onlyone" in proc.stdout
    assert "model=vit" not in proc.stdout and "model=resnet" not in proc.stdout


# ----------------------------------------------------------------------------- reruns: only what changed
# Rules that run a model (GPU jobs on a real run): an edit that does not touch their computation must
# never schedule one of them.
MODEL_RULES = {
    "fetch_model",
    "train_model",
    "python_model",
    "cache",
    "attention_distance",
    "head_subset_cka",
    "receptive_field",
    "skip_stats",
    "probe_features",
    "localisation",
}


def _scheduled(workdir, cfg: dict, tmp_path, *targets: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run with `cfg` would run in the finished run `workdir`."""
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_snakemake(workdir, *targets, "-n", "--cores", "1", "--configfile", str(path))
    return _jobs(proc.stdout)


def _jobs(stdout: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job in a dry run's output, `all` left out."""
    jobs, rule = [], None
    for line in stdout.splitlines():
        s = line.strip()
        if s.startswith(("rule ", "localrule ")) and s.endswith(":"):
            rule = s.split()[1].rstrip(":")
            jobs.append((rule, ""))
        elif s.startswith("wildcards:") and rule is not None:
            jobs[-1] = (rule, s.removeprefix("wildcards:").strip())
    return [j for j in jobs if j[0] != "all"]


def _tiny():
    return yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())


def _reverse_keys(obj):
    if isinstance(obj, dict):
        return {k: _reverse_keys(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reverse_keys(v) for v in obj]
    return obj


def _edit(fn):
    cfg = _tiny()
    fn(cfg)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,edit,expected_rules",
    [
        ("cka.pairs", lambda c: c["cka"]["pairs"].append(["vit_variant", "resnet"]),
         {"cka", "plot_cross_cka", "claims", "similarity", "measure_agreement", "atlas"}),
        # a pair asked the other way round: its figure reads the stored table transposed, nothing recomputed
        ("cka.pairs (reversed)", lambda c: c["cka"].update(pairs=[["resnet", "vit"]]),
         {"plot_cross_cka", "claims"}),
        # the measures: only the tables of the measures and what reads them, never a cache or a CKA table
        ("cka.rbf_sigma", lambda c: c["cka"].update(rbf_sigma=0.5),
         {"similarity", "measure_agreement", "claims", "atlas"}),
        ("cka.measures (one fewer)", lambda c: c["cka"]["measures"].remove("bures"),
         {"similarity", "measure_agreement", "claims", "atlas"}),
        ("cka.measure_figures (on)", lambda c: c["cka"].update(measure_figures=True),
         {"plot_measures"}),
        ("probes.lambdas", lambda c: c["probes"].update(lambdas={"num": 9}),
         {"linear_probes", "plot_probes", "claims"}),
        ("probes.holdout", lambda c: c["probes"].update(holdout=0.3),
         {"linear_probes", "plot_probes", "claims"}),
        ("localisation.plot_tokens", lambda c: c["localisation"].update(plot_tokens=[[0, 0], [3, 3]]),
         {"plot_localisation"}),
        ("attention.blocks (figure only)", lambda c: c["attention"].update(blocks=[0]),
         {"plot_attention_distance"}),
        ("device and num_workers (where, not what)", lambda c: c.update(device="cpu", num_workers=1), set()),
    ],
)  # fmt: skip
def test_edits_that_do_not_touch_a_model_rerun_no_model_job(
    workflow_run, tmp_path, name, edit, expected_rules
):
    jobs = _scheduled(workflow_run, _edit(edit), tmp_path)
    rules = {r for r, _ in jobs}
    assert not rules & MODEL_RULES, f"{name} reran model jobs: {jobs}"
    assert rules == expected_rules, f"{name}: {jobs}"


@pytest.mark.slow
def test_reordered_keys_rerun_no_model_job(workflow_run, tmp_path):
    """A YAML round trip that writes keys in another order changes no result."""
    jobs = _scheduled(workflow_run, _reverse_keys(_tiny()), tmp_path)
    assert not {r for r, _ in jobs} & MODEL_RULES, jobs


@pytest.mark.slow
def test_adding_a_model_schedules_only_its_own_jobs(workflow_run, tmp_path):
    def add(c):
        c["models"]["vit2"] = {
            **c["models"]["vit"],
            "train": {**c["models"]["vit"]["train"], "seed": 1},
        }
        c["cka"]["pairs"].append(["vit2", "resnet"])
        for section in ("erf", "skip", "probes", "localisation"):
            c[section]["models"].append("vit2")

    jobs = _scheduled(workflow_run, _edit(add), tmp_path)
    model_jobs = [(r, w) for r, w in jobs if r in MODEL_RULES]
    assert model_jobs and all("vit2" in w for _, w in model_jobs), model_jobs
    assert {r for r, _ in model_jobs} == {
        "train_model", "cache", "receptive_field", "skip_stats", "probe_features", "localisation",
    }  # fmt: skip
    # comparisons: its self-CKA and the new pair, nothing of the models already there
    # (the pair is stored in config order: resnet before vit2; Fig 2 reads it transposed)
    assert sorted(w for r, w in jobs if r == "cka") == [
        "dataset=digits, a=resnet, b=vit2",
        "dataset=digits, a=vit2, b=vit2",
    ]
    others = {r for r, w in jobs if r not in MODEL_RULES and r != "cka"}
    assert others <= {
        "linear_probes", "plot_self_cka", "plot_cross_cka", "plot_erf", "plot_skip", "plot_probes",
        "plot_localisation", "plot_localisation_summary", "claims",
        "similarity", "plot_measures", "measure_agreement", "atlas",
    }, jobs  # fmt: skip
    assert sorted(w for r, w in jobs if r == "similarity") == [
        "dataset=digits, a=resnet, b=vit2",
        "dataset=digits, a=vit2, b=vit2",
    ]
    assert all(
        "vit2" in w for r, w in jobs if r in ("linear_probes", "plot_self_cka", "plot_localisation")
    )


@pytest.mark.slow
def test_atlas_adds_a_model_with_its_passes_and_m_pair_jobs(workflow_run, tmp_path):
    """cka.pairs: all on a finished run: adding model M + 1 schedules its passes, its self-similarity and exactly
    M pair jobs (plus the atlas), nothing else; removing one schedules only the atlas."""
    from collections import Counter

    run = tmp_path / "run"
    shutil.copytree(workflow_run, run, symlinks=True)
    atlas = _edit(lambda c: c["cka"].update(pairs="all", per_block=[], measures=["linear_cka"]))
    (tmp_path / "atlas.yaml").write_text(yaml.safe_dump(atlas, sort_keys=False))
    # the one pair the tiny run lacks (vit_variant × resnet), then the atlas
    run_snakemake(run, "atlas_all", "--configfile", str(tmp_path / "atlas.yaml"), *TINY_RUN_ARGS)

    def scheduled(cfg):  # the jobs, the target rule left out
        return [j for j in _scheduled(run, cfg, tmp_path, "atlas_all") if j[0] != "atlas_all"]

    assert scheduled(atlas) == []

    def add(c):
        c["models"]["resnet2"] = {
            **c["models"]["resnet"],
            "train": {**c["models"]["resnet"]["train"], "seed": 1},
        }

    jobs = scheduled({**atlas, "models": _edit(add)["models"]})
    assert Counter(r for r, _ in jobs) == {"train_model": 1, "cache": 1, "cka": 4, "atlas": 1}, jobs
    assert all("resnet2" in w for r, w in jobs if r != "atlas"), jobs
    removed = {**atlas, "models": {k: v for k, v in atlas["models"].items() if k != "vit_variant"}}
    assert scheduled(removed) == [("atlas", "dataset=digits")]
    # a second dataset: its samples, the models' caches and every pair on it, its atlas, and the shift panel
    other = {**atlas, "datasets": {**atlas["datasets"], "digits_b": {**atlas["datasets"]["digits"], "test_fraction": 0.3}},
             "atlas": {"datasets": ["digits", "digits_b"]}}  # fmt: skip
    jobs = scheduled(other)
    assert Counter(r for r, _ in jobs) == {
        "samples": 1,
        "cache": 3,
        "cka": 6,
        "atlas": 1,
        "atlas_shift": 1,
    }
    assert all("digits_b" in w for r, w in jobs if r != "atlas_shift"), jobs


@pytest.mark.slow
def test_changing_the_cka_batch_reruns_the_caches(workflow_run, tmp_path):
    jobs = _scheduled(workflow_run, _edit(lambda c: c["cka"].update(batch_size=48)), tmp_path)
    rules = [r for r, _ in jobs]
    assert rules.count("cache") == 3 and rules.count("cka") == 5
    assert not {"train_model", "attention_distance", "probe_features", "localisation"} & set(rules)


def test_probes_read_their_own_dataset(tmp_path):
    """probes.dataset: the probe jobs run on that dataset's sample list, every other analysis on the analysis
    dataset, and Figs 11 / 13 (filed under the analysis dataset) and the claims read the probe tables."""

    def edit(c):
        c["datasets"]["probe_set"] = {**c["datasets"]["digits"], "max_test": 100}
        c["probes"]["dataset"] = "probe_set"

    proc = run_snakemake(_config_with(tmp_path, edit), "-n", "--cores", "1")
    out = proc.stdout
    assert "results/probes/probe_set/vit.parquet" in out and "results/probes/digits/" not in out
    assert "results/samples/probe_set.csv" in out and "results/cache/digits/vit" in out
    assert "results/cache/probe_set" not in out


def test_attention_in_several_cls_conventions(tmp_path):
    """attention.cls as a list: the first convention keeps the main table (Figs 3-5, claims), each further one
    gets its own table from its own job."""
    root = _config_with(tmp_path, lambda c: c["attention"].update(cls=["drop_renorm", "keep"]))
    out = run_snakemake(root, "-n", "--cores", "1").stdout
    assert "results/attention/digits/cls_keep/vit.parquet" in out
    assert "results/attention/digits/vit.parquet" in out
    assert "cls_drop_renorm" not in out
    (tmp_path / "one").mkdir()
    one = run_snakemake(_config_with(tmp_path / "one", lambda c: None), "-n", "--cores", "1").stdout
    assert "attention_distance_convention" not in one and "cls_keep" not in one
