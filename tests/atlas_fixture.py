"""A synthetic model-zoo atlas `data` dict (the contract of seelike.atlas.data) for the atlas page and figure
tests: plausible CKA structure, deterministic.

CKA between block i of model a and block j of model b is `level · exp(−c·|depth_i − depth_j|)` plus a little
noise, where `level` is high within a class (ViT-like with ViT-like, CNN-like with CNN-like) and lower across
classes; self pairs are symmetric with 1 on the diagonal and carry the fixed scores `seelike.atlas.data` gives
them (score 1, no p-value, no score cell). Cells far apart in depth fall to near zero and are marked
indistinguishable from the null; a few cells of one cross pair are undefined (None).
"""

from __future__ import annotations

import itertools

import numpy as np

TAU = 0.3  # the calibration baseline of score_calibrated in this fixture

# name, arch, family, class, number of block outputs after the embedding
MODELS = [
    ("vit", "vit_tiny_patch16_224", "vit", "vit", 12),
    ("deit", "deit_tiny_patch16_224", "deit", "vit", 8),
    ("resnet", "resnet18", "resnet", "cnn", 4),
    ("convnext", "convnext_atto", "convnext", "cnn", 6),
    ("mixer", "mixer_b16_224", "mlp_mixer", "other", 7),
]
LEVEL = {frozenset({"vit"}): 0.95, frozenset({"cnn"}): 0.9, frozenset({"other"}): 1.0}
CROSS = {frozenset({"vit", "cnn"}): 0.55, frozenset({"vit", "other"}): 0.72}
CROSS[frozenset({"cnn", "other"})] = 0.62
SELF_SCORES = {"score": 1.0, "score_se": 0.0, "score_p": None, "score_calibrated": None,
               "diagonal": 1.0, "diagonal_se": 0.0, "score_cell": None}  # fmt: skip


def _blocks(family: str, n: int) -> list[dict]:
    embed = "stem" if family in ("resnet", "convnext") else "patch_embed"
    layer = (
        "layer{}" if family == "resnet" else "stages.{}" if family == "convnext" else "blocks.{}"
    )
    taps = [embed] + [layer.format(i + 1 if family == "resnet" else i) for i in range(n)]
    first = "stem" if embed == "stem" else "embed"
    return [
        {"tap": tap, "kind": first if k == 0 else "block", "depth": k / n}  # n + 1 taps: depth 0..1
        for k, tap in enumerate(taps)
    ]


def _cell_stats(cka: np.ndarray, rng: np.random.Generator, permutations: int, self_pair: bool):
    se = 0.005 + 0.04 * rng.random(cka.shape)
    weak = cka < 0.12
    p = np.where(weak, rng.uniform(0.08, 1.0, cka.shape), 1.0 / (permutations + 1))
    p = np.where(weak & (rng.random(cka.shape) < 0.3), 0.03, p)  # a few weak cells still distinct
    distinct = p <= 0.05
    if self_pair:
        np.fill_diagonal(p, np.nan)
        np.fill_diagonal(se, 0.0)
        np.fill_diagonal(distinct, True)
    return se, p, distinct


def _pair(ma: dict, mb: dict, rng: np.random.Generator, permutations: int, hole: bool) -> dict:
    da = np.array([b["depth"] for b in ma["blocks"]])
    db = np.array([b["depth"] for b in mb["blocks"]])
    self_pair = ma["name"] == mb["name"]
    classes = frozenset({ma["class"], mb["class"]})
    level = LEVEL[classes] if self_pair or len(classes) == 1 else CROSS[classes]
    cka = level * np.exp(-3.5 * np.abs(da[:, None] - db[None, :]))
    cka = np.clip(cka + rng.normal(0.0, 0.02, cka.shape), 0.0, 1.0)
    if self_pair:
        cka = (cka + cka.T) / 2
        np.fill_diagonal(cka, 1.0)
    se, p, distinct = _cell_stats(cka, rng, permutations, self_pair)
    if hole:  # undefined cells (e.g. a constant feature map on the whole batch)
        for i, j in ((0, len(db) - 1), (1, len(db) - 2)):
            cka[i, j] = se[i, j] = p[i, j] = np.nan
            distinct[i, j] = False
    matrices = {
        "a": ma["name"],
        "b": mb["name"],
        "cka": _nan_to_none(cka),
        "se": _nan_to_none(se),
        "p": _nan_to_none(p),
        "distinct": distinct.tolist(),
    }
    if self_pair:  # as seelike.atlas.data writes them: nothing to test against a null
        return matrices | SELF_SCORES
    score_cell = np.unravel_index(np.nanargmax(cka), cka.shape)
    score = float(cka[score_cell])
    k = min(len(da), len(db))
    ia = np.round(np.linspace(0, len(da) - 1, k)).astype(int)
    ib = np.round(np.linspace(0, len(db) - 1, k)).astype(int)
    return matrices | {
        "score": score,
        "score_se": float(se[score_cell]),
        "score_cell": [int(score_cell[0]), int(score_cell[1])],
        "score_p": 1.0 / (permutations + 1) if score > 0.3 else 0.4,
        "score_calibrated": float(np.clip((score - TAU) / (1 - TAU), 0.0, 1.0)),
        "diagonal": float(np.nanmean(cka[ia, ib])),
        "diagonal_se": float(np.nanmean(se[ia, ib]) / np.sqrt(k)),
    }


def _nan_to_none(a: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in a]


def make_atlas_data(
    n_models: int = 5, seed: int = 0, permutations: int = 20, dataset: str = "digits"
) -> dict:
    """The atlas of the first `n_models` of MODELS (1–5): every unordered pair plus every self pair."""
    rng = np.random.default_rng(seed)
    models = [
        {"name": n, "arch": arch, "family": fam, "class": cls, "blocks": _blocks(fam, nb)}
        for n, arch, fam, cls, nb in MODELS[:n_models]
    ]
    pairs = []
    for ia, ib in itertools.combinations_with_replacement(range(len(models)), 2):
        hole = (models[ia]["name"], models[ib]["name"]) == ("vit", "convnext")
        pairs.append(_pair(models[ia], models[ib], rng, permutations, hole))
    return {
        "version": 1,
        "dataset": dataset,
        "measure": "linear_cka",
        "permutations": permutations,
        "models": models,
        "pairs": pairs,
    }
