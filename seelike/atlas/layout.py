"""The numbers the atlas page and its overview figure are arranged by, from the atlas `data` dict alone (numpy and
scipy, no plotting): the model × model matrix of a pair statistic, the clustered model order with its
dendrogram, a 2-D embedding of every block output of every model, and each block's best match in the other
models.

`data` is the atlas contract (`seelike.atlas.data`): `models` (name, arch, family, class, blocks with tap, kind,
relative depth) and `pairs` (every unordered pair a before b in model order and every model with itself; per
pair the Bₐ × B_b matrices `cka`, `se`, `p`, `distinct` and the scores). Undefined values may be None or NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Clustering",
    "best_matches",
    "block_embedding",
    "classical_mds",
    "cluster_order",
    "family_colors",
    "pair_lookup",
    "pair_matrix",
]


def _float_array(rows: Any) -> np.ndarray:
    """A (nested) list with None for undefined values → float array with NaN there."""
    return np.array(
        [[math.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64
    ).reshape(len(rows), -1)


def _value(v: Any) -> float:
    return math.nan if v is None else float(v)


def pair_lookup(data: dict, a: str, b: str) -> tuple[dict, bool] | None:
    """The stored pair of models a and b and whether it is stored as (b, a) (its matrices then need a
    transpose to read a's blocks along rows); None when the atlas lacks the pair."""
    for pair in data["pairs"]:
        if pair["a"] == a and pair["b"] == b:
            return pair, False
        if pair["a"] == b and pair["b"] == a:
            return pair, True
    return None


def _pair_index(data: dict) -> dict[tuple[str, str], dict]:
    return {(p["a"], p["b"]): p for p in data["pairs"]}


def pair_matrix(data: dict, key: str = "score") -> tuple[list[str], np.ndarray]:
    """Model names (in `data` order) and the symmetric M × M matrix of the pairs' `key` (self pairs on the
    diagonal; NaN where the pair or its value is missing)."""
    names = [m["name"] for m in data["models"]]
    pos = {n: i for i, n in enumerate(names)}
    mat = np.full((len(names), len(names)), np.nan)
    for pair in data["pairs"]:
        i, j = pos[pair["a"]], pos[pair["b"]]
        mat[i, j] = mat[j, i] = _value(pair.get(key))
    return names, mat


def _fill_missing(dist: np.ndarray) -> np.ndarray:
    """Undefined off-diagonal dissimilarities → the mean of the defined ones (1 when none is), diagonal 0."""
    dist = dist.copy()
    off = ~np.eye(len(dist), dtype=bool)
    known = dist[off & np.isfinite(dist)]
    dist[~np.isfinite(dist)] = float(known.mean()) if known.size else 1.0
    np.fill_diagonal(dist, 0.0)
    return dist


@dataclass
class Clustering:
    """The models in clustered order and the dendrogram that orders them.

    `icoord`/`dcoord` are scipy's dendrogram segments (one 4-point ∩ per merge) with the leaf axis rescaled
    so that the k-th model of `order` sits at k (scipy puts it at 10k + 5); `dcoord` holds merge heights
    (average 1 − score)."""

    order: list[str]
    icoord: list[list[float]] = field(default_factory=list)
    dcoord: list[list[float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"order": self.order, "icoord": self.icoord, "dcoord": self.dcoord}


def cluster_order(data: dict) -> Clustering:
    """Average-linkage hierarchical clustering of the models on 1 − score (scipy, optimal leaf ordering).

    The dissimilarity is symmetrised and clipped at 0; a missing pair score counts as the mean of the known
    dissimilarities (`_fill_missing`). One model gives no merge and an empty dendrogram."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    names, score = pair_matrix(data, "score")
    if len(names) < 2:
        return Clustering(order=names)
    dist = _fill_missing(np.clip(1.0 - score, 0.0, None))
    z = linkage(squareform(dist, checks=False), method="average", optimal_ordering=True)
    tree = dendrogram(z, no_plot=True, labels=names)
    return Clustering(
        order=list(tree["ivl"]),
        icoord=[[(x - 5.0) / 10.0 for x in seg] for seg in tree["icoord"]],
        dcoord=[[float(h) for h in seg] for seg in tree["dcoord"]],
    )


def classical_mds(dist: np.ndarray, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: double-centre −½D², coordinates = top eigenvectors × √eigenvalue
    (negative eigenvalues count as 0, missing dimensions are 0). Each axis's sign puts its largest-|loading|
    point on the positive side (the first such point on a tie), so the result is deterministic."""
    n = len(dist)
    d2 = np.asarray(dist, np.float64) ** 2
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    gram = -0.5 * centre @ d2 @ centre
    vals, vecs = np.linalg.eigh((gram + gram.T) / 2)
    top = np.argsort(vals)[::-1][:dims]
    coords = np.zeros((n, dims))
    coords[:, : len(top)] = vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))
    for k in range(dims):
        if n and coords[np.argmax(np.abs(coords[:, k])), k] < 0:
            coords[:, k] *= -1
    return coords


def _block_dissimilarity(data: dict) -> np.ndarray:
    """N × N matrix of 1 − CKA over every block output of every model (models in `data` order, blocks in
    forward order), assembled from all pairs: a cross pair fills its block and the transposed block, a self
    pair its model's diagonal block. Symmetrised by averaging (i, j) with (j, i) where both are defined,
    otherwise taking the defined one; entries still undefined (a None cell, a missing pair) are filled with
    the mean of the defined off-diagonal entries; the diagonal is 0."""
    starts = np.cumsum([0] + [len(m["blocks"]) for m in data["models"]])
    pos = {m["name"]: k for k, m in enumerate(data["models"])}
    n = int(starts[-1])
    dist = np.full((n, n), np.nan)
    for pair in data["pairs"]:
        ia, ib = pos[pair["a"]], pos[pair["b"]]
        d = 1.0 - _float_array(pair["cka"])
        dist[starts[ia] : starts[ia + 1], starts[ib] : starts[ib + 1]] = d
        if ia != ib:
            dist[starts[ib] : starts[ib + 1], starts[ia] : starts[ia + 1]] = d.T
    with np.errstate(invalid="ignore"):
        sym = np.where(np.isfinite(dist) & np.isfinite(dist.T), (dist + dist.T) / 2, dist)
    sym = np.where(np.isfinite(sym), sym, sym.T)
    return _fill_missing(sym)


def block_embedding(data: dict) -> list[dict[str, Any]]:
    """A 2-D classical MDS (`classical_mds`) of every block output of every model on 1 − CKA
    (`_block_dissimilarity`): one row per block, in model then forward order, with model, tap, depth,
    family, class, x, y."""
    dist = _block_dissimilarity(data)
    xy = classical_mds(dist, 2)
    rows = []
    k = 0
    for m in data["models"]:
        for b in m["blocks"]:
            rows.append(
                {"model": m["name"], "tap": b["tap"], "depth": float(b["depth"]),
                 "family": m["family"], "class": m["class"],
                 "x": float(xy[k, 0]), "y": float(xy[k, 1])}
            )  # fmt: skip
            k += 1
    return rows


def best_matches(data: dict, model: str, block_index: int) -> list[dict[str, Any]]:
    """For every other model (in `data` order), the block with the highest CKA to block `block_index` of
    `model` (the shallower on a tie; undefined cells ignored): its index, tap, relative depth, CKA and SE.
    Where `model` is the pair's b its matrices are read transposed. A model whose cells with this block are
    all undefined, or whose pair is missing, has index/tap/depth/cka/se None."""
    rows = []
    for other in data["models"]:
        if other["name"] == model:
            continue
        row: dict[str, Any] = {"model": other["name"], "family": other["family"], "index": None,
                               "tap": None, "depth": None, "cka": None, "se": None}  # fmt: skip
        found = pair_lookup(data, model, other["name"])
        if found is not None:
            pair, flipped = found
            cka, se = _float_array(pair["cka"]), _float_array(pair["se"])
            if flipped:
                cka, se = cka.T, se.T
            line = cka[block_index]
            if np.isfinite(line).any():
                j = int(np.nanargmax(line))
                row |= {"index": j, "tap": other["blocks"][j]["tap"],
                        "depth": float(other["blocks"][j]["depth"]), "cka": float(line[j]),
                        "se": None if math.isnan(se[block_index, j]) else float(se[block_index, j])}  # fmt: skip
        rows.append(row)
    return rows


# matplotlib's tab10, so the page and the overview figure colour each family alike
FAMILY_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def family_colors(data: dict) -> dict[str, str]:
    """Family → hex colour, families in order of first appearance (the palette repeats past ten)."""
    families = list(dict.fromkeys(m["family"] for m in data["models"]))
    return {f: FAMILY_PALETTE[k % len(FAMILY_PALETTE)] for k, f in enumerate(families)}
