"""Per-block CKA between checkpoints of one architecture (Fig 12, App. G) from a cross-CKA long table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seelike.analyses.cka_tables import TapMismatchError, per_block_cka

TAPS = pd.DataFrame(
    {
        "name": [
            "embed",
            "blocks.0.attn",
            "blocks.0.block",
            "blocks.1.attn",
            "blocks.1.block",
            "norm",
        ],
        "kind": ["embed", "attn", "block", "attn", "block", "norm"],
        "block": [None, 0, 0, 1, 1, None],
    }
)


def _long(
    matrix: np.ndarray, names_a: list[str], names_b: list[str], kinds: dict[str, str]
) -> pd.DataFrame:
    """A table in `cka_from_caches`' layout for a known matrix (rows a, columns b), rows shuffled."""
    rows = [
        {
            "tap_a": a,
            "kind_a": kinds[a],
            "index_a": i,
            "tap_b": b,
            "kind_b": kinds[b],
            "index_b": j,
            "cka": matrix[i, j],
            "cka_std": matrix[i, j] / 10,
        }
        for i, a in enumerate(names_a)
        for j, b in enumerate(names_b)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


def test_diagonal_of_block_outputs_in_forward_order():
    names = TAPS["name"].tolist()
    kinds = dict(zip(TAPS["name"], TAPS["kind"], strict=True))
    m = np.random.default_rng(0).uniform(size=(6, 6))
    out = per_block_cka(_long(m, names, names, kinds), TAPS)
    assert out["tap"].tolist() == ["embed", "blocks.0.block", "blocks.1.block"]
    np.testing.assert_allclose(out["cka"], [m[0, 0], m[2, 2], m[4, 4]])
    np.testing.assert_allclose(out["std"], [m[0, 0] / 10, m[2, 2] / 10, m[4, 4] / 10])
    np.testing.assert_allclose(out["depth"], [0.0, 0.5, 1.0])
    assert out["block"].tolist()[1:] == [0, 1] and pd.isna(out["block"].iloc[0])


def test_different_taps_are_refused_with_the_difference_named():
    kinds = dict(zip(TAPS["name"], TAPS["kind"], strict=True)) | {"layer1.0.out": "out"}
    names = TAPS["name"].tolist()
    other = names[:-1] + ["layer1.0.out"]
    with pytest.raises(TapMismatchError, match=r"only in the reference: \['norm'\].*cka.pairs"):
        per_block_cka(_long(np.eye(6), names, other, kinds), TAPS)
