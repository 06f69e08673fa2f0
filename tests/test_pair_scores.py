"""The atlas's pair scores (seelike.analyses.pair_scores) on hand-made tables: alignment, best matches, the
family-wise p-value and the calibrated score; the end-to-end float64 reference is in test_cache.py."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from seelike.analyses.pair_scores import aligned_diagonal, best_matches, block_indices, pair_scores


@pytest.mark.parametrize(("n_a", "n_b"), [(1, 1), (1, 4), (4, 4), (5, 13), (13, 5), (7, 8)])
def test_aligned_diagonal_is_nearest_depth_of_the_shorter_model(n_a, n_b):
    ia, ib = aligned_diagonal(n_a, n_b)
    assert len(ia) == min(n_a, n_b)
    depth = lambda n: [i / max(n - 1, 1) for i in range(n)]
    for i, j in zip(ia, ib, strict=True):
        d_i, d_j = depth(n_a)[i], depth(n_b)[j]
        other = depth(n_b) if n_a <= n_b else depth(n_a)
        mine = d_i if n_a <= n_b else d_j
        assert abs(d_i - d_j) == pytest.approx(min(abs(mine - o) for o in other))
    # symmetric: the transposed pair aligns the same cells
    ja, jb = aligned_diagonal(n_b, n_a)
    assert sorted(zip(ia, ib, strict=True)) == sorted(zip(jb, ja, strict=True))


def _table(values: np.ndarray, se: np.ndarray) -> pd.DataFrame:
    rows = [
        {
            "tap_a": f"a{i}",
            "tap_b": f"b{j}",
            "value": values[i, j],
            "se": se[i, j],
            "constant": False,
        }
        for i, j in itertools.product(range(values.shape[0]), range(values.shape[1]))
    ]
    return pd.DataFrame(rows)


def test_scores_and_best_matches_read_the_block_cells():
    rng = np.random.default_rng(0)
    v, se = rng.uniform(0, 0.9, (4, 6)), rng.uniform(0.01, 0.02, (4, 6))
    v[2, 5] = 0.97
    unc = {
        "blocks_a": [f"a{i}" for i in range(4)],
        "blocks_b": [f"b{j}" for j in range(6)],
        "null_max": [0.5, 0.97, 0.99, 0.2],  # two draws reach the score: p = 3/5
        "null_diagonal": [0.1, 0.2, 0.3, 0.4],
        "diagonal_se": 0.01,
    }
    s = pair_scores(_table(v, se), unc)
    assert (s["score"], s["score_se"], s["score_tap_a"], s["score_tap_b"]) == (
        0.97,
        se[2, 5],
        "a2",
        "b5",
    )
    assert s["score_p"] == pytest.approx(3 / 5) and s["score_depth_a"] == pytest.approx(2 / 3)
    # τ: the ⌈0.95·5⌉ = 5th smallest of {0.97, 0.5, 0.97, 0.99, 0.2} = 0.99 > score → calibrated 0
    assert s["score_tau"] == 0.99 and s["score_calibrated"] == 0.0
    ia, ib = aligned_diagonal(4, 6)
    assert s["diagonal"] == pytest.approx(v[ia, ib].mean())
    best = best_matches(_table(v, se), unc["blocks_a"], unc["blocks_b"])
    assert best["tap_b"].tolist() == [f"b{j}" for j in v.argmax(1)]
    np.testing.assert_allclose(best["value"], v.max(1))
    np.testing.assert_allclose(best["se"], se[np.arange(4), v.argmax(1)])


def test_block_indices_follow_forward_order_and_kinds():
    taps = [
        {"name": "b1", "kind": "block", "index": 3},
        {"name": "attn", "kind": "attn_res", "index": 1},
        {"name": "emb", "kind": "embed", "index": 0},
        {"name": "b0", "kind": "block", "index": 2},
    ]
    assert block_indices(taps).tolist() == [2, 3, 0]


def test_a_pair_asked_the_other_way_round_reads_the_transpose():
    from seelike.tables import cka_array, oriented

    rng = np.random.default_rng(1)
    v = rng.uniform(size=(3, 5))
    df = pd.DataFrame(
        [
            {"tap_a": f"a{i}", "kind_a": "block", "index_a": i, "tap_b": f"b{j}", "kind_b": "out",
             "index_b": j, "cka": v[i, j], "constant": False}
            for i, j in itertools.product(range(3), range(5))
        ]
    )  # fmt: skip
    meta = {"model_a": "x", "model_b": "y", "n_taps_a": 3, "n_taps_b": 5,
            "uncertainty": {"pair": {"linear_cka": {"blocks_a": ["a0"], "blocks_b": ["b0", "b1"]}}}}  # fmt: skip
    same, same_meta = oriented(df, meta, "x")
    assert same is df and same_meta is meta
    t, tm = oriented(df, meta, "y")
    m, names_a, names_b = cka_array(t)
    np.testing.assert_array_equal(m, v.T)
    assert names_a == [f"b{j}" for j in range(5)] and names_b == [f"a{i}" for i in range(3)]
    assert (tm["model_a"], tm["model_b"], tm["n_taps_a"]) == ("y", "x", 5)
    assert tm["uncertainty"]["pair"]["linear_cka"] == {"blocks_a": ["b0", "b1"], "blocks_b": ["a0"]}
    with pytest.raises(ValueError, match="not 'z'"):
        oriented(df, meta, "z")
