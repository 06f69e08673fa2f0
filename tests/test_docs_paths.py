"""Every repository path the docs and configs name exists (a renamed module or a dropped page breaks this)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

TOP = r"(?:seelike|scripts|benchmarks|config|docs|tests|workflow|profiles|envs|\.ci)"
# backticked in markdown; any token in a config's comments
IN_MD = re.compile(rf"`({TOP}/[\w./-]+)`")
IN_YAML = re.compile(rf"(?<![\w/.])({TOP}/[\w./-]+\w)")
GENERATED = ("benchmarks/out/", "results/", "resources/")


def _docs():
    return [
        REPO / "README.md",
        REPO / "VALIDATION.md",
        REPO / "BENCHMARKS.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "config").glob("*.yaml")),
    ]


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: p.name)
def test_named_paths_exist(doc):
    pattern = IN_YAML if doc.suffix == ".yaml" else IN_MD
    named = {m.group(1).rstrip(".") for m in pattern.finditer(doc.read_text())}
    missing = sorted(p for p in named if not p.startswith(GENERATED) and not (REPO / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_the_check_finds_a_missing_path(tmp_path):
    text = "see `seelike/no_such_module.py` and `seelike/cka.py`"
    named = {m.group(1) for m in IN_MD.finditer(text)}
    assert named == {"seelike/no_such_module.py", "seelike/cka.py"}
    assert [p for p in named if not (REPO / p).exists()] == ["seelike/no_such_module.py"]
