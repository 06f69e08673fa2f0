"""The dry run's model decisions are cached on disk (seelike.models.families): a second process reads them back
equal, without building the model; another version of the code or of timm reads nothing of the first."""

from __future__ import annotations

import pytest

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
        families._structure.cache_clear()
        families._residual_sums.cache_clear()

    clear()
    yield clear
    clear()


def test_a_second_process_reads_the_decisions_without_building(fresh, monkeypatch, tmp_path):
    first = families.model_structure(SPEC)
    refusal = families.residual_sums_refusal({**SPEC, "arch": "convnext_atto", "kwargs": {}})
    assert list((tmp_path / "structure").glob("structure-*.json"))
    fresh()

    def no_build(_spec):
        raise AssertionError("built a model although its decisions are on disk")

    monkeypatch.setattr(families, "_build_skeleton", no_build)
    again = families.model_structure(SPEC)
    assert again == first  # every Tap field, tuples included
    assert (
        families.residual_sums_refusal({**SPEC, "arch": "convnext_atto", "kwargs": {}}) == refusal
    )


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
