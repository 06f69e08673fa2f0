"""Static checks of the profiles against the workflow's rules (no cluster needed): every rule that runs a model
(`resources: gpu=1`) has its SLURM settings in profiles/slurm (else a cluster puts it on the CPU partition)."""

from __future__ import annotations

import re

import yaml
from conftest import REPO


def _gpu_rules() -> set[str]:
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        # a rule's body runs to the next top-level statement
        for m in re.finditer(
            r"^rule (\w+):\n(.*?)(?=^\S)", smk.read_text() + "\nEND", re.DOTALL | re.MULTILINE
        ):
            if re.search(r"^\s+gpu\s*=\s*1\b", m.group(2), re.MULTILINE):
                rules.add(m.group(1))
    return rules


def test_every_gpu_rule_has_slurm_settings():
    rules = _gpu_rules()
    assert {"cache", "train_model", "attention_distance_convention"} <= rules, rules
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    per_rule = profile.get("set-resources") or {}
    missing = sorted(r for r in rules if r not in per_rule)
    assert not missing, (
        f"GPU rules without SLURM settings in profiles/slurm set-resources: {missing}"
    )
    assert all(per_rule[r].get("slurm_partition") == "gpu" for r in rules)
