"""The rule-entry layer (seelike.rules): one entry per rule, thin scripts, one metadata builder, one progress log."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

from seelike.rules import Progress, build_metadata
from seelike.rules.entries import ENTRIES

REPO = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)


def _script_rules() -> dict[str, str]:
    """rule name → its script (scripts/…) for every rule of workflow/rules/*.smk that runs a script."""
    out = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name, body in RULE.findall(smk.read_text()):
            m = re.search(r"script:\s*\n\s*\"([^\"]+)\"", body)
            if m:
                out[name] = Path(m.group(1)).name
    return out


def test_every_rule_script_is_a_docstring_and_run():
    rules = _script_rules()
    assert len(rules) >= 24 and set(rules) <= set(ENTRIES), sorted(set(rules) - set(ENTRIES))
    for script in rules.values():
        tree = ast.parse((REPO / "scripts" / script).read_text())
        body = tree.body
        assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), script
        assert ast.unparse(body[1]) == "from seelike.rules import run", script
        assert ast.unparse(body[2]) == "run(snakemake)" and len(body) == 3, script


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
