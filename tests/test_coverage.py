"""The CI subset of the measured support matrix (benchmarks/coverage.py --subset ci): about ten architectures that
cover every activation layout (NCHW maps, NHWC maps, tokens with and without prefix tokens) and the family
records a timm model reaches. Every analysis must work or be refused at dry run, never crash or give a number
that fails its invariant, and every architecture has block outputs and a self-CKA matrix."""

from __future__ import annotations

import re

import pytest
from conftest import load_file_module


@pytest.fixture(scope="module")
def coverage():
    return load_file_module("benchmarks/coverage.py")


@pytest.fixture(scope="module")
def ci_results(coverage):
    results, source = coverage.sweep(coverage.select("ci"), n_images=8, log=lambda *a, **k: None)
    return results, source


def test_ci_subset_covers_every_layout_and_family(ci_results):
    from seelike.models.families import FAMILIES

    results, _ = ci_results
    layouts = {lay.strip() for r in results for lay in r.layouts.split(",") if lay.strip()}
    assert {"nchw", "nhwc"} <= layouts, layouts
    assert "tokens" in layouts, layouts  # tokens without prefix tokens
    assert any(lay.startswith("tokens+") for lay in layouts), layouts  # with (CLS, registers)
    # every record a timm model reaches (no architecture of the list falls back to `generic`)
    records = {f.name for f in FAMILIES} - {"generic"}
    missing = records - {r.family for r in results}
    assert not missing, f"family records without a CI architecture: {missing}"


def test_ci_subset_no_crash_no_wrong(coverage, ci_results):
    results, _ = ci_results
    bad = coverage.failures(results)
    assert not bad, "\n".join(bad)
    for r in results:
        assert r.cells["block_outputs"].status == "works", r.arch.arch
        assert r.cells["cka"].status == "works", r.arch.arch
        for k in coverage.ANALYSES:
            assert r.cells[k].status in ("works", "refused"), (r.arch.arch, k, str(r.cells[k]))
            if r.cells[k].status == "refused":
                assert r.cells[k].detail, (r.arch.arch, k)  # a refusal says why


def test_report_lists_every_cell(coverage, ci_results, tmp_path):
    results, source = ci_results
    md = coverage.to_markdown(results, source, 8, "ci")
    for r in results:
        assert f"`{r.arch.arch}`" in md
    assert "## Family record × analysis" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(results)
    # cells escape their own pipes (`\\|`): a row has one column per analysis plus seven
    assert all(len(re.findall(r"(?<!\\)\|", line)) == len(coverage.ANALYSES) + 7 for line in rows)


def _tap(layout, grid_hw, shape, kind="block"):
    from seelike.models.taps import Tap

    return Tap(
        "t", kind, "m", "output", 0, layout=layout, grid_hw=grid_hw, shape=shape, probe_hw=(64, 64)
    )


def test_tap_geometry(coverage):
    """C and the grid of a tap come from its layout: a channels-last map's C is its last axis."""
    nhwc = _tap("nhwc", (4, 4), (4, 4, 32))
    assert coverage._channels(nhwc) == 32
    assert coverage._grid_at(nhwc, (64, 64)) == (4, 4)
    assert coverage._grid_at(nhwc, (128, 128)) == (8, 8)
    nchw = _tap("nchw", (2, 2), (48, 2, 2))
    assert coverage._channels(nchw) == 48
    tokens = _tap("tokens", (4, 4), (17, 192))
    assert coverage._channels(tokens) == 192 and coverage._grid_at(tokens, (64, 64)) == (4, 4)
    vec = _tap("vector", None, (10,), kind="norm")
    assert coverage._grid_at(vec, (64, 64)) is None
    with pytest.raises(coverage.Wrong):
        coverage.check_block_outputs([vec])
    assert coverage.check_block_outputs([nhwc, nchw]) == "2"


def test_erf_check(coverage):
    """A map centred on the tap's centre position passes; one off by more than a stride, a negative or an
    empty one, or one over the wrong image size is caught."""
    import numpy as np

    tap = _tap(
        "nchw", (4, 4), (8, 4, 4)
    )  # stride 16 px; centre position (2, 2) → pixel centre (40, 40)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    good = np.exp(-((yy - 40) ** 2 + (xx - 40) ** 2) / 50.0)
    assert coverage.erf_problem(tap, good, (64, 64)) is None
    assert (
        coverage.erf_problem(tap, np.roll(good, -14, axis=1), (64, 64)) is None
    )  # within a stride
    assert "centroid" in coverage.erf_problem(tap, np.roll(good, -30, axis=0), (64, 64))
    assert coverage.erf_problem(tap, np.zeros((64, 64)), (64, 64))
    assert coverage.erf_problem(tap, -good, (64, 64))
    assert coverage.erf_problem(tap, good[:32], (64, 64))
    assert "no grid" in coverage.erf_problem(_tap("vector", None, (8,)), good, (64, 64))


def test_cka_check(coverage):
    """Symmetric with a unit diagonal passes (0 on a constant tap's diagonal is the documented policy);
    asymmetry, a diagonal ≠ 1 and |CKA| > 1 are caught."""
    import numpy as np
    import pandas as pd

    names = ["a", "b", "c"]
    m = np.array([[1.0, 0.5, -0.1], [0.5, 1.0, 0.2], [-0.1, 0.2, 1.0]])
    assert coverage.cka_problem(pd.DataFrame(m, index=names, columns=names)) is None
    const = m.copy()
    const[2, :] = const[:, 2] = 0.0
    df = pd.DataFrame(const, index=names, columns=names)
    assert "diagonal" in coverage.cka_problem(df)
    df.attrs["constant_rows"] = ["c"]
    assert coverage.cka_problem(df) is None
    asym = m.copy()
    asym[0, 1] = 0.6
    assert "symmetric" in coverage.cka_problem(pd.DataFrame(asym, index=names, columns=names))
    diag = m.copy()
    diag[1, 1] = 0.9
    assert "diagonal" in coverage.cka_problem(pd.DataFrame(diag, index=names, columns=names))
    big = m.copy()
    big[0, 2] = big[2, 0] = 1.2
    assert "outside" in coverage.cka_problem(pd.DataFrame(big, index=names, columns=names))
    nan = m.copy()
    nan[0, 1] = nan[1, 0] = np.nan
    assert "non-finite" in coverage.cka_problem(pd.DataFrame(nan, index=names, columns=names))
