"""The pure functions of benchmarks/atlas_scale.py: pair counts, the page's block cells, the fits and the cost
extrapolation (no workflow run; the benchmark itself is BENCHMARKS.md "Atlas at scale")."""

from __future__ import annotations

import pytest
from conftest import load_file_module


@pytest.fixture(scope="module")
def bench():
    return load_file_module("benchmarks/atlas_scale.py")


def test_pair_jobs_are_every_unordered_pair_and_each_self_pair(bench):
    taps = [86, 37, 59]
    assert bench.pair_terms(taps) == [(86, 86), (86, 37), (86, 59), (37, 37), (37, 59), (59, 59)]
    for m in (1, 2, 8, 24, 80):
        assert bench.pair_count(m) == len(bench.pair_terms(list(range(m)))) == m * (m + 1) // 2


def test_block_cells_of_the_page(bench):
    blocks = [13, 9, 17, 6]
    total, squares = sum(blocks), sum(b * b for b in blocks)
    assert bench.block_cells(blocks) == (total * total + squares) // 2


def test_fit_linear_recovers_exact_coefficients(bench):
    x1 = [1.0, 2.0, 3.0, 5.0, 8.0]
    x2 = [4.0, 1.0, 9.0, 2.0, 7.0]
    y = [3.0 + 0.5 * a - 2.0 * b for a, b in zip(x1, x2, strict=True)]
    coef, r2 = bench.fit_linear([x1, x2], y)
    assert coef == pytest.approx([3.0, 0.5, -2.0])
    assert r2 == pytest.approx(1.0)
    coef, _ = bench.fit_linear([x1], [2.5 * a for a in x1], intercept=False)
    assert coef == pytest.approx([0.0, 2.5])


def test_pair_seconds_scales_only_the_work(bench):
    coef = [10.0, 0.02, 0.001]  # start-up, per tap, per cell at the measured protocol
    at = bench.pair_seconds(coef, 86, 37)
    assert at == pytest.approx(10.0 + 0.02 * 123 + 0.001 * 86 * 37)
    # no split known: every tap term scales (an upper bound); the start-up never does
    assert bench.pair_seconds(coef, 86, 37, scale=3.0) == pytest.approx(10.0 + 3 * (at - 10.0))
    # with the split: the measured time at scale 1, plus (scale − 1) × the work-scaled part
    work = [0.0, 0.0004]
    assert bench.pair_seconds(coef, 86, 37, 1.0, work) == pytest.approx(at)
    assert bench.pair_seconds(coef, 86, 37, 201.0, work) == pytest.approx(
        at + 200 * 0.0004 * 86 * 37
    )


def test_fit_kernel_separates_work_from_bookkeeping(bench):
    work, fixed, ratio = (0.010, 0.0001), (0.002, 0.00003), 8.0
    taps = {"a": 86, "b": 37, "c": 59, "d": 21}
    names = list(taps)

    def rows(label, scale):
        return [
            {"protocol": label, "a": a, "b": b, "taps_a": taps[a], "taps_b": taps[b],
             "cpu_s": 0.05 + (fixed[0] + scale * work[0]) * (taps[a] + taps[b])
             + (fixed[1] + scale * work[1]) * taps[a] * taps[b]}
            for i, a in enumerate(names) for b in names[i:]
        ]  # fmt: skip

    fit = bench.fit_kernel(rows("main", 1.0) + rows("probe", 1.0 / ratio), ratio)
    assert fit["work"] == pytest.approx(list(work))
    assert fit["fixed"] == pytest.approx(list(fixed))
    assert fit["main"]["coef"] == pytest.approx([0.05, work[0] + fixed[0], work[1] + fixed[1]])


def test_work_and_disk_of_the_paper_protocols(bench):
    measured = {"n_images": 1024, "repeats": 1, "batch_size": 128}
    paper, exact = bench.PAPER_PROTOCOLS.values()
    assert bench.work_scale(paper, measured) == pytest.approx(200.0)  # 10,240 × 20 repeats, same n
    assert bench.work_scale(exact, measured) == pytest.approx(1600.0)  # and 8× the n per cell
    # config/paper.yaml's count: taps × 80 minibatches × 128·129/2 × 4 B per repeat (0.2 GiB for ViT-B's 86)
    assert bench.cache_bytes(86, paper) == 20 * 86 * 80 * (128 * 129 // 2) * 4
    assert bench.cache_bytes(86, {**paper, "repeats": 1}) / 2**30 == pytest.approx(0.21, abs=0.01)
    assert bench.cache_bytes(86, exact) == 20 * 86 * 10 * (1024 * 1025 // 2) * 4


def test_gpu_seconds_from_the_measured_rates(bench):
    rates = {100: {"cache_img_s": 500.0, "step_s_per_cell_image": 2e-9, "step_fixed_s": 0.05}}
    proto = {"n_images": 1000, "repeats": 2, "batch_size": 100}
    assert bench.cache_gpu_seconds(proto, rates) == pytest.approx(2000 / 500.0)
    assert bench.gpu_step_seconds(86, 37, proto, rates) == pytest.approx(
        0.05 + 2e-9 * 86 * 37 * 2000
    )
    with pytest.raises(KeyError):  # no rate measured at this minibatch size: no silent guess
        bench.cache_gpu_seconds({**proto, "batch_size": 64}, rates)
    # every protocol of the extrapolation has rates measured at its minibatch size
    assert {p["batch_size"] for p in bench.PAPER_PROTOCOLS.values()} <= set(bench.GPU_RATES)


def _growth(bench):
    return bench.Growth(
        cache_s=30.0, fetch_s=5.0, cache_mb=2.0, pair_coef=[10.0, 0.0, 0.001],
        table_coef=[1000.0, 60.0], atlas_coef=[5.0, 0.002], page_coef=[4.8e6, 40.0],
        load_coef=[2.0, 0.0001], fixed_s=3.0, pair_work=[0.0, 0.0005],
    )  # fmt: skip


def test_growth_prediction_is_linear_in_models_and_quadratic_in_pairs(bench):
    g = _growth(bench)
    small = g.predict([50] * 8, [12] * 8)
    big = g.predict([50] * 24, [12] * 24)
    assert big["cache_s"] == pytest.approx(3 * small["cache_s"])
    assert big["pair_s"] / small["pair_s"] == pytest.approx(
        bench.pair_count(24) / bench.pair_count(8)
    )
    assert big["cells"] == bench.block_cells([12] * 24)
    assert big["page_mb"] == pytest.approx((4.8e6 + 40.0 * big["cells"]) / 1e6)
    assert big["total_s"] == pytest.approx(3.0 + big["cache_s"] + big["pair_s"] + big["atlas_s"])


def test_paper_extrapolation(bench):
    g = _growth(bench)
    measured = {"n_images": 1024, "repeats": 1, "batch_size": 128}
    rows = {r["protocol"]: r for r in bench.paper_extrapolation(g, measured, m=80)}
    paper, exact = (rows[k] for k in bench.PAPER_PROTOCOLS)
    assert paper["pairs"] == exact["pairs"] == 3240
    t = bench.PAPER_MODEL["taps"]
    per_pair = 10.0 + 0.001 * t * t + 199 * 0.0005 * t * t
    assert paper["pair_s_mean"] == pytest.approx(per_pair)
    assert paper["cpu_pair_core_h"] == pytest.approx(3240 * per_pair / 3600)  # CPU seconds: core-s
    assert exact["cache_disk_gb"] == pytest.approx(paper["cache_disk_gb"] * 1025 / 129)
    assert exact["gpu_cache_h"] > paper["gpu_cache_h"]  # the Grams grow with n
    for row, proto in zip((paper, exact), bench.PAPER_PROTOCOLS.values(), strict=True):
        rate = bench.GPU_RATES[proto["batch_size"]]
        images = proto["n_images"] * proto["repeats"]
        assert row["gpu_cache_h"] == pytest.approx(80 * images / rate["cache_img_s"] / 3600)
        step = rate["step_fixed_s"] + rate["step_s_per_cell_image"] * t * t * images
        assert row["gpu_pair_h"] == pytest.approx(
            3240 * (10.0 + step) / 3600
        )  # start-up + GPU step
