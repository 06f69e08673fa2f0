"""Activation cache: Grams equal XXᵀ of the real activations, resume after interruption, refusal of
mismatched caches, CKA from caches equal to CKA from activations, short last batch handling."""

from __future__ import annotations

import gc
import logging
import re
import warnings

import numpy as np
import pytest
import tiny_models
import torch
from test_localisation import ref_hsic1

from seelike.analyses.cache import (
    CacheDamagedError,
    CacheFormatError,
    CacheMismatchError,
    build_cache,
    load_grams,
    load_packed_grams,
    read_cache_meta,
    repeat_rows,
)
from seelike.analyses.cka_tables import (
    bures_cells,
    cka_from_caches,
    measures_from_caches,
    with_linear_cka,
)
from seelike.cka import cka_matrix
from seelike.data.loader import make_loader, read_samples
from seelike.data.samples import build_samples, write_samples
from seelike.io import read_json, write_json
from seelike.models.load import disable_fused_attention
from seelike.models.taps import discover_taps, record_taps
from seelike.similarity import MEASURES, similarity_matrix
from seelike.tables import cka_frame

DS = {"source": "digits", "image_size": 16, "test_fraction": 0.25, "max_train": 8, "max_test": 60}
DC = {
    "input_size": [3, 16, 16],
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "crop_pct": 1.0,
    "interpolation": "bilinear",
}


def tiny_vit():
    m = tiny_models.tiny_vit(img_size=16, patch_size=4, embed_dim=16, num_heads=2, num_classes=10)
    return disable_fused_attention(m).eval()


def tiny_resnet():
    return tiny_models.tiny_resnet(1, num_classes=10, channels=[4, 8, 8, 8], zero_init_last=False)


@pytest.fixture
def samples(tmp_path):
    path = tmp_path / "samples.csv"
    write_samples(build_samples(DS, 0), path)
    return path


def info(name, model):
    return {"name": name, "arch": "x", "source": "train", "data_config": DC}


def activations(model, samples, n, batch):
    """Independent path: capture each tap's full activations batch by batch."""
    taps = discover_taps(model)
    out = {t.name: [] for t in taps}
    loader = make_loader(samples, DS, DC, split="test", n_images=n, batch_size=batch)
    with (
        record_taps(model, taps, lambda t, x: out[t.name].append(x.detach().double().clone())),
        torch.no_grad(),
    ):
        for x, _ in loader:
            model(x)
    return out


def test_packed_grams_match_activations(tmp_path, samples):
    model = tiny_vit()
    meta = build_cache(
        model, info("vit", model), samples, DS, tmp_path / "c", n_images=40, batch_size=16
    )
    acts = activations(model, samples, 40, 16)
    assert meta["batch_sizes"] == [16, 16, 8]
    assert [t["name"] for t in meta["taps"]] == list(acts)
    packed = np.load(tmp_path / "c" / "grams" / "r00_b0001.npy")
    n_taps = len(acts)
    assert packed.shape == (n_taps, 16 * 17 // 2) and packed.dtype == np.float32
    iu = np.triu_indices(16)  # row-major upper triangle with the diagonal
    for i, name in enumerate(acts):
        x = acts[name][1].reshape(16, -1).numpy()
        x = x - x.mean(0)  # the cache stores batch-centred Grams (seelike.cka.gram)
        k = x @ x.T
        np.testing.assert_allclose(packed[i], k[iu], rtol=1e-4, atol=1e-5 * np.abs(k).max())
        full = load_grams(tmp_path / "c", 0, 1, taps=[i])[0].numpy()
        np.testing.assert_allclose(full, k, rtol=1e-4, atol=1e-5 * np.abs(k).max())
    # the storage formula of the README: taps × repeats × Σ n(n+1)/2 × 4 bytes, and that is what is on disk
    assert meta["gram_bytes"] == n_taps * (2 * 136 + 36) * 4
    on_disk = sum(np.load(f).nbytes for f in (tmp_path / "c" / "grams").iterdir())
    assert on_disk == meta["gram_bytes"]
    assert not (tmp_path / "c" / "pooled").exists() and "pooled_modes" not in meta


def test_no_activation_outlives_its_hook(tmp_path, samples):
    """The cache reduces each tap to its Gram inside the hook; no activation — nor a view of one, which keeps
    the whole activation's storage alive — survives to the end of the forward pass."""
    model = tiny_vit()
    produced: set[int] = (
        set()
    )  # storages of every module output (addresses, so nothing is kept alive here)

    def watch(module, args, out):
        if isinstance(out, torch.Tensor):
            produced.add(out.untyped_storage().data_ptr())

    handles = [m.register_forward_hook(watch) for m in model.modules() if m is not model]
    kept_per_batch = []
    orig_forward = model.forward

    def forward(x):
        produced.clear()
        y = orig_forward(x)
        gc.collect()
        with warnings.catch_warnings():  # isinstance on torch's deprecated module aliases warns
            warnings.simplefilter("ignore")
            live = {
                o.untyped_storage().data_ptr()
                for o in gc.get_objects()
                if isinstance(o, torch.Tensor) and o.device.type == "cpu"
            }
        kept_per_batch.append(len((produced & live) - {y.untyped_storage().data_ptr()}))
        return y

    model.forward = forward
    build_cache(model, info("vit", model), samples, DS, tmp_path / "c", n_images=32, batch_size=16)
    for h in handles:
        h.remove()
    # the tap probe pass (one forward of blank images before the batches), then the two batches
    assert kept_per_batch == [0, 0, 0], kept_per_batch


def test_old_format_cache_is_refused(tmp_path, samples):
    model = tiny_vit()
    build_cache(model, info("vit", model), samples, DS, tmp_path / "a", n_images=32, batch_size=16)
    meta = read_json(tmp_path / "a" / "meta.json")
    meta["format"] = 1
    write_json(tmp_path / "a" / "meta.json", meta)
    with pytest.raises(CacheFormatError, match="rebuild it"):
        cka_from_caches(tmp_path / "a", tmp_path / "a")


def test_cka_from_caches_equals_cka_from_activations(tmp_path, samples):
    vit, res = tiny_vit(), tiny_resnet()
    build_cache(vit, info("vit", vit), samples, DS, tmp_path / "a", n_images=48, batch_size=16)
    build_cache(res, info("res", res), samples, DS, tmp_path / "b", n_images=48, batch_size=16)
    df, meta = cka_from_caches(tmp_path / "a", tmp_path / "b")
    ref = cka_matrix(activations(vit, samples, 48, 16), activations(res, samples, 48, 16))
    np.testing.assert_allclose(cka_frame(df).to_numpy(), ref.to_numpy(), atol=1e-5)
    self_df, _ = cka_from_caches(tmp_path / "a", tmp_path / "a")
    m = cka_frame(self_df).to_numpy()
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-6)
    np.testing.assert_allclose(m, m.T, atol=1e-9)
    assert meta["samples_hash"] == read_cache_meta(tmp_path / "a")["plan"]["samples_hash"]


def test_repeats_use_fresh_samples_and_give_a_spread(tmp_path, samples):
    rows = read_samples(samples)
    r0, r1 = repeat_rows(rows, "test", 20, 0, 0), repeat_rows(rows, "test", 20, 1, 0)
    assert r0["id"].tolist() == rows[rows.split == "test"]["id"].tolist()[:20]
    assert r0["id"].tolist() != r1["id"].tolist() and r1["id"].is_unique
    vit, res = tiny_vit(), tiny_resnet()
    build_cache(
        vit, info("vit", vit), samples, DS, tmp_path / "a", n_images=32, batch_size=16, repeats=3
    )
    build_cache(
        res, info("res", res), samples, DS, tmp_path / "b", n_images=32, batch_size=16, repeats=3
    )
    df, meta = cka_from_caches(tmp_path / "a", tmp_path / "b")
    assert meta["plan"]["repeats"] == 3
    assert (df["cka_std"] > 0).mean() > 0.9
    assert ((df["cka_min"] <= df["cka"]) & (df["cka"] <= df["cka_max"])).all()


def test_interrupted_cache_resumes(tmp_path, samples, caplog):
    model = tiny_vit()

    class Stop(Exception):
        pass

    def stop_after_first(repeat, batch, n):
        if repeat == 1 and batch == 0:
            raise Stop

    with pytest.raises(Stop):
        build_cache(
            model,
            info("vit", model),
            samples,
            DS,
            tmp_path / "c",
            n_images=32,
            batch_size=16,
            repeats=2,
            progress=stop_after_first,
        )
    assert (tmp_path / "c.partial" / "grams" / "r01_b0000.npy").exists()
    assert not (tmp_path / "c").exists()
    calls = []
    with caplog.at_level(logging.INFO):
        build_cache(
            model,
            info("vit", model),
            samples,
            DS,
            tmp_path / "c",
            n_images=32,
            batch_size=16,
            repeats=2,
            progress=lambda r, b, n: calls.append((r, b)),
        )
    assert calls == [(1, 1)]  # only the missing minibatch ran
    fresh = tmp_path / "fresh"
    build_cache(
        model, info("vit", model), samples, DS, fresh, n_images=32, batch_size=16, repeats=2
    )
    for f in ("r00_b0000.npy", "r01_b0000.npy", "r01_b0001.npy"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "c" / "grams" / f), np.load(fresh / "grams" / f)
        )
    assert not (tmp_path / "c.partial").exists()


def test_mismatched_caches_are_refused(tmp_path, samples):
    model = tiny_vit()
    build_cache(model, info("vit", model), samples, DS, tmp_path / "a", n_images=32, batch_size=16)
    build_cache(model, info("vit", model), samples, DS, tmp_path / "b", n_images=32, batch_size=8)
    other = tmp_path / "other.csv"
    write_samples(build_samples(DS, 1), other)
    build_cache(model, info("vit", model), other, DS, tmp_path / "c", n_images=32, batch_size=16)
    with pytest.raises(CacheMismatchError, match="different CKA plans"):
        cka_from_caches(tmp_path / "a", tmp_path / "b")
    with pytest.raises(CacheMismatchError, match="different sample lists"):
        cka_from_caches(tmp_path / "a", tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a finished activation cache"):
        cka_from_caches(tmp_path / "a", tmp_path / "nope")


def test_damaged_cache_files_name_the_file_and_the_fix(tmp_path, samples):
    """A truncated or missing Gram file and a missing or corrupt meta.json: errors that name the file, its
    expected and actual size, and how to rebuild the cache (not numpy's bare `mmap length is greater than
    file size`)."""
    model = tiny_vit()
    cache = tmp_path / "a"
    build_cache(model, info("vit", model), samples, DS, cache, n_images=16, batch_size=8)
    path = cache / "grams" / "r00_b0001.npy"
    full = path.stat().st_size
    expected_data = len(read_cache_meta(cache)["taps"]) * (8 * 9 // 2) * 4
    with open(path, "r+b") as fh:
        fh.truncate(full - 100)
    for call in (lambda: load_packed_grams(cache, 0, 1), lambda: cka_from_caches(cache, cache)):
        with pytest.raises(CacheDamagedError) as err:
            call()
        msg = str(err.value)
        assert str(path) in msg and "truncated" in msg
        assert f"{full - 100} bytes, expected {full}" in msg and full > expected_data
        assert f"snakemake --forcerun {cache}" in msg and f"delete {cache}" in msg
    load_packed_grams(cache, 0, 0)  # the other minibatch still reads
    with open(path, "wb") as fh:
        fh.write(b"\x93NUMPY")  # a header cut short
    with pytest.raises(CacheDamagedError, match="no readable .npy header"):
        load_packed_grams(cache, 0, 1)
    path.unlink()
    with pytest.raises(
        CacheDamagedError, match=f"{re.escape(str(path))} is missing.*snakemake --forcerun"
    ):
        load_packed_grams(cache, 0, 1)

    meta = cache / "meta.json"
    meta.write_text(meta.read_text()[:50])
    with pytest.raises(CacheDamagedError) as err:
        read_cache_meta(cache)
    assert str(meta) in str(err.value) and f"snakemake --forcerun {cache}" in str(err.value)
    meta.write_text("[1, 2]")
    with pytest.raises(CacheDamagedError, match="not the cache's metadata"):
        read_cache_meta(cache)
    meta.unlink()
    with pytest.raises(
        FileNotFoundError, match=f"not a finished activation cache.*delete {re.escape(str(cache))}"
    ):
        read_cache_meta(cache)


def test_short_last_batch_is_dropped_and_said(tmp_path, samples, caplog):
    model = tiny_vit()
    build_cache(model, info("vit", model), samples, DS, tmp_path / "a", n_images=35, batch_size=16)
    with caplog.at_level(logging.WARNING):
        df, meta = cka_from_caches(tmp_path / "a", tmp_path / "a")
    assert meta["dropped_batches"] == [{"repeat": 0, "batches": [2]}]
    assert "dropped minibatch" in caplog.text
    assert not df["cka"].isna().any()


def test_cka_tables_carry_standard_errors_and_a_permutation_null(tmp_path, samples):
    vit, res = tiny_vit(), tiny_resnet()
    build_cache(
        vit, info("vit", vit), samples, DS, tmp_path / "a", n_images=48, batch_size=16, repeats=2
    )
    build_cache(
        res, info("res", res), samples, DS, tmp_path / "b", n_images=48, batch_size=16, repeats=2
    )
    df, meta = cka_from_caches(tmp_path / "a", tmp_path / "b", permutations=8)
    live = df[~df.constant]
    assert (live["cka_se"] > 0).all() and live["cka_se"].notna().all()
    assert live["null_sd"].gt(0).all() and live["p_value"].between(1 / 9, 1).all()
    # the null is the same statistic on permuted images: centred near 0 where the real cells are not
    assert live["null_mean"].abs().mean() < 0.5 * live["cka"].abs().mean()
    assert meta["uncertainty"]["permutations"] == 8 and meta["uncertainty"]["null_floor"] > 0
    self_df, _ = cka_from_caches(tmp_path / "a", tmp_path / "a", permutations=4)
    diag = self_df[self_df.index_a == self_df.index_b]
    assert diag["null_z"].isna().all() and diag["p_value"].isna().all()
    off = self_df[(self_df.index_a != self_df.index_b) & ~self_df.constant]
    assert off["null_z"].notna().all()
    plain, _ = cka_from_caches(
        tmp_path / "a", tmp_path / "b"
    )  # no permutations: same values, no null
    np.testing.assert_allclose(plain["cka"], df["cka"], rtol=1e-12)
    assert plain["null_mean"].isna().all() and (plain.loc[~plain.constant, "cka_se"] > 0).all()


def test_measures_from_caches_equal_measures_from_activations(tmp_path, samples):
    """Every measure from the packed cached Grams equals the same measure from the real activations; linear CKA
    equals the CKA table; bures only on block-output cells; RSA has a null, bures none."""
    vit, res = tiny_vit(), tiny_resnet()
    build_cache(vit, info("vit", vit), samples, DS, tmp_path / "a", n_images=48, batch_size=16)
    build_cache(res, info("res", res), samples, DS, tmp_path / "b", n_images=48, batch_size=16)
    df, meta = measures_from_caches(tmp_path / "a", tmp_path / "b", MEASURES, permutations=4)
    acts_a, acts_b = activations(vit, samples, 48, 16), activations(res, samples, 48, 16)
    cells = bures_cells(
        read_cache_meta(tmp_path / "a")["taps"], read_cache_meta(tmp_path / "b")["taps"]
    )
    assert 0 < cells.sum() < cells.size
    for m in MEASURES:
        got = cka_frame(df[df.measure == m], "value").reindex(
            index=list(acts_a), columns=list(acts_b)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = similarity_matrix(acts_a, acts_b, m).to_numpy()
        if m == "bures":
            assert np.isnan(got.to_numpy()[~cells]).all()
            ref = np.where(cells, ref, np.nan)
        np.testing.assert_allclose(got.to_numpy(), ref, atol=2e-5, err_msg=m)
    linear, _ = cka_from_caches(tmp_path / "a", tmp_path / "b", permutations=4)
    np.testing.assert_array_equal(df[df.measure == "linear_cka"]["value"], linear["cka"])
    live = df[~df.constant]
    # mutual_knn counts shared neighbours (k/n steps): a cell may score the same in every minibatch, SE exactly 0
    continuous = live[live.measure != "mutual_knn"]
    assert continuous.groupby("measure")["se"].apply(lambda s: (s.dropna() > 0).all()).all()
    knn = live[live.measure == "mutual_knn"]["se"]
    assert (knn >= 0).all() and (knn > 0).mean() > 0.5
    assert live[live.measure == "rsa"]["null_sd"].gt(0).all()
    assert live[live.measure == "bures"]["null_sd"].isna().all()
    assert set(meta["measures"]) == set(MEASURES)
    # the similarity rule's merge keeps the CKA rule's numbers as the linear rows, exactly
    merged, merged_meta = with_linear_cka(
        linear, {"uncertainty": {"null_floor": 0.1}}, df[df.measure != "linear_cka"], meta
    )
    assert merged["measure"].iloc[0] == "linear_cka" and list(merged.columns) == list(df.columns)
    np.testing.assert_array_equal(merged[merged.measure == "linear_cka"]["value"], linear["cka"])
    assert merged_meta["uncertainty"]["null_floor_by_measure"]["linear_cka"] == 0.1
    with pytest.raises(ValueError, match="cka.bures_taps lists"):
        measures_from_caches(tmp_path / "a", tmp_path / "b", ["bures"], bures_taps=["nope"])


# ---------------------------------------------------------------- model-pair scores (the atlas)
def _reference_cells(acts_a, acts_b, perms=None, drop=None):
    """Minibatch CKA (ratio of means over minibatches) of every tap pair in float64, optionally with the second
    model's images of minibatch b permuted by perms[b] and minibatch `drop` left out."""
    grams = lambda acts, b: [
        (x := v[b].reshape(len(v[b]), -1).numpy()) @ x.T for v in acts.values()
    ]
    n_batches = len(next(iter(acts_a.values())))
    cross = np.zeros((len(acts_a), len(acts_b)))
    sa, sb = np.zeros(len(acts_a)), np.zeros(len(acts_b))
    for b in range(n_batches):
        if b == drop:
            continue
        ka, kb = grams(acts_a, b), grams(acts_b, b)
        if perms is not None:
            kb = [k[np.ix_(perms[b], perms[b])] for k in kb]
        sa += [ref_hsic1(k, k) for k in ka]
        sb += [ref_hsic1(k, k) for k in kb]
        cross += [[ref_hsic1(k, l) for l in kb] for k in ka]
    with np.errstate(invalid="ignore", divide="ignore"):
        return cross / np.sqrt(np.outer(sa, sb))


def test_pair_scores_equal_a_float64_reference(tmp_path, samples):
    """The pair's family-wise null (max over block cells of each permutation draw), its diagonal mean's jackknife
    SE and the scores built on them equal a float64 computation from the activations, written from the
    definitions (pair_scores module docstring)."""
    from seelike.analyses.pair_scores import pair_scores

    vit, res = tiny_vit(), tiny_resnet()
    for name, m, d in (("vit", vit, "a"), ("res", res, "b")):
        build_cache(m, info(name, m), samples, DS, tmp_path / d, n_images=48, batch_size=16)
    df, meta = cka_from_caches(tmp_path / "a", tmp_path / "b", permutations=6)
    pair = meta["uncertainty"]["pair"]["linear_cka"]
    acts_a, acts_b = activations(vit, samples, 48, 16), activations(res, samples, 48, 16)
    names_a, names_b = list(acts_a), list(acts_b)
    kinds_a = df.drop_duplicates("tap_a").set_index("tap_a")["kind_a"].reindex(names_a)
    kinds_b = df.drop_duplicates("tap_b").set_index("tap_b")["kind_b"].reindex(names_b)
    ia = [i for i, k in enumerate(kinds_a) if k in ("embed", "stem", "block", "out")]
    ib = [j for j, k in enumerate(kinds_b) if k in ("embed", "stem", "block", "out")]
    assert pair["blocks_a"] == [names_a[i] for i in ia] and len(ia) > 2 and len(ib) > 2
    assert pair["blocks_b"] == [names_b[j] for j in ib]
    # the depth-aligned cells, brute force: each block of the shorter model, the other's nearest in depth
    short, long_ = sorted((len(ia), len(ib)))
    near = [
        min(range(long_), key=lambda j: (abs(i / (short - 1) - j / (long_ - 1)), j))
        for i in range(short)
    ]
    diag = (
        list(zip(range(short), near, strict=True))
        if len(ia) <= len(ib)
        else [(j, i) for i, j in enumerate(near)]
    )
    seed = read_cache_meta(tmp_path / "a")["plan"]["seed"]
    null_max, null_diag = [], []
    rngs = [np.random.default_rng([seed, b]) for b in range(3)]
    draws = [[r.permutation(16) for _ in range(6)] for r in rngs]
    for p in range(6):
        cells = _reference_cells(acts_a, acts_b, perms=[draws[b][p] for b in range(3)])[
            np.ix_(ia, ib)
        ]
        null_max.append(np.nanmax(cells))
        null_diag.append(np.mean([cells[i, j] for i, j in diag]))
    np.testing.assert_allclose(pair["null_max"], null_max, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pair["null_diagonal"], null_diag, rtol=1e-5, atol=1e-7)
    loo = np.array(
        [np.mean([c[np.ix_(ia, ib)][i, j] for i, j in diag])
         for c in (_reference_cells(acts_a, acts_b, drop=b) for b in range(3))]
    )  # fmt: skip
    np.testing.assert_allclose(
        pair["diagonal_se"], np.sqrt(2 / 3 * ((loo - loo.mean()) ** 2).sum()), rtol=1e-6
    )
    full = _reference_cells(acts_a, acts_b)[np.ix_(ia, ib)]
    scores = pair_scores(df.rename(columns={"cka": "value", "cka_se": "se"}), pair)
    assert scores["score"] == pytest.approx(full.max(), rel=1e-6)
    i, j = np.unravel_index(full.argmax(), full.shape)
    assert (scores["score_tap_a"], scores["score_tap_b"]) == (names_a[ia[i]], names_b[ib[j]])
    assert scores["score_p"] == pytest.approx((1 + sum(v >= full.max() for v in null_max)) / 7)
    assert scores["diagonal"] == pytest.approx(np.mean([full[i, j] for i, j in diag]), rel=1e-6)
    tau = np.sort(null_max + [full.max()])[int(np.ceil(0.95 * 7)) - 1]
    assert scores["score_calibrated"] == pytest.approx(
        np.clip((full.max() - tau) / (1 - tau), 0, 1), abs=1e-9
    )
    # a self pair has no null to test against: nothing stored
    _, self_meta = cka_from_caches(tmp_path / "a", tmp_path / "a", permutations=2)
    assert self_meta["uncertainty"]["pair"] == {}


def test_pair_score_matches_calibrated_similarity(tmp_path, samples):
    """Cross-check with Gröger et al.'s package (`calibrated-similarity`, Algorithm 2, agg max): one minibatch,
    their permutations fed ours, their similarity our minibatch CKA estimator: the same corrected p-value and
    calibrated score."""
    cs = pytest.importorskip("calibrated_similarity")
    from seelike.analyses.pair_scores import pair_scores

    vit, res = tiny_vit(), tiny_resnet()
    for name, m, d in (("vit", vit, "a"), ("res", res, "b")):
        build_cache(m, info(name, m), samples, DS, tmp_path / d, n_images=32, batch_size=32)
    df, meta = cka_from_caches(tmp_path / "a", tmp_path / "b", permutations=19)
    pair = meta["uncertainty"]["pair"]["linear_cka"]
    scores = pair_scores(df.rename(columns={"cka": "value", "cka_se": "se"}), pair)
    acts_a, acts_b = activations(vit, samples, 32, 32), activations(res, samples, 32, 32)
    xs = [acts_a[t][0].reshape(32, -1) for t in pair["blocks_a"]]
    ys = [acts_b[t][0].reshape(32, -1) for t in pair["blocks_b"]]
    rng = np.random.default_rng([read_cache_meta(tmp_path / "a")["plan"]["seed"], 0])
    perms = iter([torch.as_tensor(rng.permutation(32)) for _ in range(19)])

    def cka(x, y):
        x, y = x - x.mean(0), y - y.mean(0)
        kx, ky = (x @ x.T).numpy(), (y @ y.T).numpy()
        return ref_hsic1(kx, ky) / np.sqrt(ref_hsic1(kx, kx) * ref_hsic1(ky, ky))

    calibrated, p, tau = cs.calibrate_layers(
        xs, ys, cka, agg="max", K=19, perm_fn=lambda n, dev: next(perms)
    )
    assert scores["score_p"] == pytest.approx(float(p), abs=1e-6)
    assert scores["score_tau"] == pytest.approx(float(tau), abs=1e-5)
    assert scores["score_calibrated"] == pytest.approx(float(calibrated), abs=1e-5)
