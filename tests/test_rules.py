"""The rule-entry layer (seelike.rules): one function per rule named after it, in the module named after its
.smk file, thin scripts that name it, one metadata builder, one progress log."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from seelike.rules import Progress, build_metadata, run

REPO = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def _script_rules() -> dict[str, tuple[str, str]]:
    """rule name → (its .smk file's stem, its script under scripts/) for every rule of workflow/rules/*.smk that
    runs a script."""
    out = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name, body in RULE.findall(smk.read_text()):
            m = re.search(r"script:\s*\n\s*\"([^\"]+)\"", body)
            if m:
                out[name] = (smk.stem, Path(m.group(1)).name)
    return out


def test_every_rule_script_is_a_docstring_and_run_of_the_function_named_after_the_rule():
    rules = _script_rules()
    assert len(rules) >= 24
    for rule, (stage, script) in rules.items():
        assert script == f"{rule}.py", rule  # one script per rule, named after it
        fn = getattr(importlib.import_module(f"seelike.rules.{stage}"), rule, None)
        assert callable(fn) and fn.__name__ == rule, f"no function {rule} in seelike.rules.{stage}"
        body = ast.parse((REPO / "scripts" / script).read_text()).body
        assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), script
        assert ast.unparse(body[1]) == "from seelike.rules import run", script
        assert ast.unparse(body[2]) == f"from seelike.rules.{stage} import {rule}", script
        assert ast.unparse(body[3]) == f"run(snakemake, {rule})" and len(body) == 4, script
    # the other way round: a stage module's public functions are exactly its rules (helpers start with _)
    for stage in {stage for stage, _ in rules.values()}:
        module = importlib.import_module(f"seelike.rules.{stage}")
        public = {
            name
            for name, fn in inspect.getmembers(module, inspect.isfunction)
            if fn.__module__ == module.__name__ and not name.startswith("_")
        }
        assert public == {r for r, (s, _) in rules.items() if s == stage}, stage


def test_run_refuses_a_function_not_named_after_the_rule():
    from seelike.rules.comparisons import cka

    with pytest.raises(ValueError, match="rule 'similarity' runs seelike.rules.comparisons.cka"):
        run(SimpleNamespace(rule="similarity"), cka)


def test_metadata_builder_records_model_sample_list_and_versions(tmp_path):
    import timm
    import torch

    from seelike.data.samples import build_samples, samples_hash, write_samples

    path = tmp_path / "s.csv"
    write_samples(build_samples({"source": "digits", "test_fraction": 0.25}, seed=3), path)
    info = {"name": "m", "arch": "resnet18", "family": "resnet"}
    meta = build_metadata(
        "skip", info=info, samples=path, split="test", n_images=8, device="cpu", extra=1
    )
    assert meta == {
        "analysis": "skip", "model": "m", "arch": "resnet18", "family": "resnet",
        "samples_hash": samples_hash(path), "samples_order": "shuffled", "samples_seed": 3,
        "split": "test", "n_images": 8, "device": "cpu", "torch_version": torch.__version__,
        "timm_version": timm.__version__, "extra": 1,
    }  # fmt: skip
    # another output's metadata passes its sample-list keys on; fields win over the common keys
    again = build_metadata("cka", samples=meta, family="x")
    assert again["samples_seed"] == 3 and again["family"] == "x" and "model" not in again


def test_progress_logs_first_every_tenth_and_last(caplog):
    log = logging.getLogger("test.progress")
    p = Progress(log, "cache m")
    with caplog.at_level(logging.INFO):
        for b in range(12):
            p(1, b, 12)
        Progress(log, "probes", unit="fit")(0, 0, -1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cache m: repeat 1, batch 1/12",
        "cache m: repeat 1, batch 11/12",
        "cache m: repeat 1, batch 12/12",
        "probes: repeat 0, fit 1/?",
    ]


def test_setup_rule_caps_torch_threads_without_importing_torch(tmp_path):
    """A figure job never pays torch's import: setup_rule caps the threads through the environment torch reads
    when it is imported, and sets an already imported torch directly."""
    code = f"""
import sys
from types import SimpleNamespace
from seelike.rules.context import setup_rule
setup_rule(SimpleNamespace(log=[{str(tmp_path / "job.log")!r}], threads=1))
assert "torch" not in sys.modules, "setup_rule imported torch"
import torch
print(torch.get_num_threads())
torch.set_num_threads(2)
setup_rule(SimpleNamespace(log=[], threads=1))
print(torch.get_num_threads())
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert out == ["1", "1"], out


def test_atlas_with_a_missing_pair_table_writes_nothing_and_names_the_file(tmp_path):
    """The atlas page is never written half: a pair's table missing fails the rule with its path, before any
    output exists."""
    from snakemake.iocontainers import Namedlist

    from seelike.rules.context import RuleContext
    from seelike.rules.figures import atlas

    missing = tmp_path / "results" / "cka" / "digits" / "vit__resnet.parquet"
    inputs = Namedlist(fromdict={"cka": [str(missing)], "similarity": []})
    outputs = Namedlist(
        fromdict={k: str(tmp_path / f"out.{k}") for k in ("html", "pairs", "png", "pdf")}
    )
    smk = SimpleNamespace(
        rule="atlas", input=inputs, output=outputs, log=[], threads=1,
        wildcards=Namedlist(fromdict={"dataset": "digits"}),
        params=Namedlist(fromdict={"pairs": [["vit", "resnet"]], "measures": ["linear_cka"], "models": []}),
    )  # fmt: skip
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        atlas(RuleContext(smk))
    assert not list(tmp_path.glob("out.*"))
