"""The workflow as users run it: config validation errors, dry runs, and one real end-to-end run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, prepare_workdir, run_snakemake

from seelike.io import read_json, read_table


def _config_with(tmp_path, edit):
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    edit(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return prepare_workdir(tmp_path / "run", path)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c["cka"].update(batch_size=2), "batch_size"),
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c["models"]["vit"].update(source="hub"), "hub"),
        (lambda c: c.update(analysis_dataset="imagenet"), "analysis_dataset 'imagenet'"),
        (lambda c: c["cka"].update(pairs=[["vit", "convnext"]]), "convnext"),
        (lambda c: c["models"].update({"a__b": c["models"]["vit"]}), "a__b"),
        (
            lambda c: c["cka"].update(per_block=[["vit", "resnet"]]),
            "compares different architectures",
        ),
        (
            lambda c: c["models"]["vit"].update(remove_skip={"blocks": [0], "branches": ["ffn"]}),
            "ffn",
        ),
    ],
)
def test_bad_config_stops_with_a_message_naming_the_key(tmp_path, edit, message):
    proc = run_snakemake(_config_with(tmp_path, edit), "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_schema_defaults_fill_missing_sections(tmp_path):
    def drop(c):
        del c["cka"]

    root = _config_with(tmp_path, drop)
    proc = run_snakemake(root, "-n", "--cores", "1", "--printshellcmds", check=False)
    # defaults are the paper's protocol: 10,240 images > the tiny dataset, caught when the cache runs;
    # the dry run itself must succeed with the defaults filled in
    assert proc.returncode == 0, proc.stderr[-3000:]


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
    for tap, value in zip(pb["tap"], pb["cka"]):
        assert value == cross[(cross.tap_a == tap) & (cross.tap_b == tap)]["cka"].item()
    variant = read_json(res / "models" / "vit_variant" / "model.json")
    assert variant["remove_skip"]["blocks"] == [1] and variant["metrics"]["train_images"] == 128
    for fig in (
        "fig1_self_cka/vit",
        "fig1_self_cka/resnet",
        "fig1_self_cka/vit_variant",
        "fig2_cross_cka/vit__resnet",
        "fig12_per_block_cka",
    ):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{fig}.{ext}").stat().st_size > 5000


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
    "cache",
    "attention_distance",
    "head_subset_cka",
    "receptive_field",
    "skip_stats",
    "probe_features",
    "localisation",
}


def _scheduled(workdir, cfg: dict, tmp_path) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run with `cfg` would run in the finished run `workdir`."""
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_snakemake(workdir, "-n", "--cores", "1", "--configfile", str(path))
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
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
         {"cka", "plot_cross_cka", "claims"}),
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
    assert sorted(w for r, w in jobs if r == "cka") == [
        "dataset=digits, a=vit2, b=resnet",
        "dataset=digits, a=vit2, b=vit2",
    ]
    others = {r for r, w in jobs if r not in MODEL_RULES and r != "cka"}
    assert others <= {
        "linear_probes", "plot_self_cka", "plot_cross_cka", "plot_erf", "plot_skip", "plot_probes",
        "plot_localisation", "plot_localisation_summary", "claims",
    }, jobs  # fmt: skip
    assert all(
        "vit2" in w for r, w in jobs if r in ("linear_probes", "plot_self_cka", "plot_localisation")
    )


@pytest.mark.slow
def test_changing_the_cka_batch_reruns_the_caches(workflow_run, tmp_path):
    jobs = _scheduled(workflow_run, _edit(lambda c: c["cka"].update(batch_size=48)), tmp_path)
    rules = [r for r, _ in jobs]
    assert rules.count("cache") == 3 and rules.count("cka") == 5
    assert not {"train_model", "attention_distance", "probe_features", "localisation"} & set(rules)
