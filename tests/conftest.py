"""Shared fixtures. Tests never touch the network: the hub is forced offline for the whole session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_OFFLINE", "1")
# The dry-run decision cache (seelike.models.families) of this session only: the suite starts cold, as on a
# fresh machine, and never writes into the user's ~/.cache.
os.environ.setdefault("SEELIKE_CACHE_DIR", tempfile.mkdtemp(prefix="seelike-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def load_file_module(relpath: str):
    """A repository script or benchmark (not part of the package) imported as a module, by path."""
    from seelike.io import load_script

    path = REPO / relpath
    return load_script(path, f"seelike_{path.stem}", reuse=False)


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repo's Snakefile with `workdir` as working directory."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def prepare_workdir(workdir: Path, config: Path) -> Path:
    """A run folder with the config copied in (the Snakefile reads config/config.yaml relative to it)."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(config, workdir / "config" / "config.yaml")
    return workdir


# How the suite runs the tiny workflow: two single-threaded jobs side by side (no GPU here, so two model jobs may
# share the cores). The tiny jobs are mostly Python start-up, which one thread per job overlaps; torch's
# results depend on its thread count, so every run compared with this one (the cluster test) uses the same.
TINY_RUN_ARGS = ("--cores", "2", "--max-threads", "1", "--resources", "gpu=2")


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory) -> Path:
    """The whole workflow run once on tests/configs/tiny.yaml; returns the run folder (results/ inside)."""
    root = prepare_workdir(
        tmp_path_factory.mktemp("workflow"), REPO / "tests" / "configs" / "tiny.yaml"
    )
    run_snakemake(root, *TINY_RUN_ARGS)
    return root


# The suite runs on two pytest-xdist workers (README: `-n 2 --dist loadgroup`). A session or module fixture is
# built once per worker that uses it, so the tests sharing one are kept on one worker: everything reading the tiny
# run (workflow_run: claims, rerun and atlas dry runs, report, SLURM) is one group, every other module its own.
SHARED_FIXTURE_GROUPS = {"workflow_run": "tiny_run"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next(
            (g for fixture, g in SHARED_FIXTURE_GROUPS.items() if fixture in item.fixturenames),
            item.module.__name__,
        )
        item.add_marker(pytest.mark.xdist_group(group))
