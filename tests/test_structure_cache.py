"""The dry run's model decisions are cached on disk (seelike.models.families): a second process reads them back
equal, without building the model; another version of the code or of timm reads nothing of the first; a dry run
whose decisions are all on disk imports neither torch nor timm."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, prepare_workdir

from seelike.models import families

SPEC = {
    "source": "timm",
    "arch": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 3},
}


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("SEELIKE_CACHE_DIR", str(tmp_path))

    def clear():  # a new process: nothing in memory
        for cached in (
            families._structure,
            families._residual_sums,
            families._refusal,
            families._timm_knows,
        ):
            cached.cache_clear()

    clear()
    yield clear
    clear()


def test_a_second_process_reads_the_decisions_without_building(fresh, monkeypatch, tmp_path):
    first = families.model_structure(SPEC)
    refusal = families.residual_sums_refusal({**SPEC, "arch": "convnext_atto", "kwargs": {}})
    analyses = ("attention", "head_subsets", "skip", "erf", "localisation", "probes")
    refusals = {a: families.model_refusal(SPEC, a) for a in analyses}
    assert families.timm_knows("vit_tiny_patch16_224.augreg_in21k")
    assert list((tmp_path / "structure").glob("structure-*.json"))
    fresh()

    def no_build(_spec):
        raise AssertionError("built a model although its decisions are on disk")

    def no_decision(*_args):
        raise AssertionError("decided an analysis although its refusal is on disk")

    monkeypatch.setattr(families, "_build_skeleton", no_build)
    monkeypatch.setattr(families, "analysis_support", no_decision)
    monkeypatch.setitem(sys.modules, "timm", None)  # importing timm fails
    again = families.model_structure(SPEC)
    assert again == first  # every Tap field, tuples included
    assert (
        families.residual_sums_refusal({**SPEC, "arch": "convnext_atto", "kwargs": {}}) == refusal
    )
    assert {a: families.model_refusal(SPEC, a) for a in analyses} == refusals
    assert families.timm_knows("vit_tiny_patch16_224")  # the tag plays no part


def test_refusals_are_keyed_on_the_settings_they_read(fresh, monkeypatch):
    """erf.residual decides the ERF refusal (it is in the key); n_images does not (a cached refusal serves)."""
    seen = []
    real = families.analysis_support
    monkeypatch.setattr(families, "analysis_support", lambda *a: seen.append(a[4]) or real(*a))
    families.model_refusal(SPEC, "erf", None, {"residual": ["post", "pre"], "n_images": 8})
    families.model_refusal(SPEC, "erf", None, {"residual": ["post", "pre"], "n_images": 16})
    families.model_refusal(SPEC, "erf", None, {"residual": ["post"], "n_images": 8})
    assert seen == [{"residual": ["post", "pre"]}, {"residual": ["post"]}]


def test_an_unknown_architecture_is_not_cached(fresh, tmp_path):
    assert not families.timm_knows("vit_tinyy_patch16_224")
    assert not list((tmp_path / "structure").glob("arch-*.json"))
    assert families.timm_knows("resnet18")
    assert len(list((tmp_path / "structure").glob("arch-*.json"))) == 1


def test_another_code_version_reads_nothing(fresh, monkeypatch):
    families.model_structure(SPEC)
    fresh()
    monkeypatch.setattr(families, "_code_version", lambda: "another version")
    built = []
    real = families._build_skeleton
    monkeypatch.setattr(families, "_build_skeleton", lambda spec: built.append(1) or real(spec))
    families.model_structure(SPEC)
    assert built


def test_off_disables_the_cache(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("SEELIKE_CACHE_DIR", "off")
    families.model_structure(SPEC)
    assert not any(tmp_path.iterdir())


# Runs `snakemake` in this interpreter and prints, as it exits, which of torch and timm it imported.
_IMPORTS_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('IMPORTED', sorted(m for m in ('timm', 'torch') if m in sys.modules)))\n"
    "from snakemake.cli import main\n"
    "main()\n"
)


def _dry_run_imports(workdir, cache) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE, "--snakefile", str(REPO / "Snakefile")]
        + ["--directory", str(workdir), "-n", "--cores", "1"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SEELIKE_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(line for line in proc.stdout.splitlines() if line.startswith("IMPORTED"))


def test_a_warm_dry_run_imports_neither_torch_nor_timm(tmp_path):
    """The first dry run of a config decides its models (weightless builds: torch and timm) and keeps the
    decisions; the next one reads them all from disk, so parsing the workflow (schema, config checks, every
    model list and params function) imports neither torch nor timm."""
    root = prepare_workdir(tmp_path / "run", REPO / "config" / "config.yaml")
    assert _dry_run_imports(root, tmp_path / "cache") == "IMPORTED ['timm', 'torch']"
    assert _dry_run_imports(root, tmp_path / "cache") == "IMPORTED []"
