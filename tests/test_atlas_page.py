"""The model-zoo atlas page and its overview figure, on the synthetic atlas of `atlas_fixture`.

Layout numbers against straightforward recomputations; the page as one offline file (no external resource, the
data and plotly.js inline, no way for a string to close its script element); the overview figure's files; and
the page in headless Chromium (Debian's `chromium`, driven by Playwright): no console error or warning, every
plot rendered, a click on the score matrix switching the layer × layer heatmap's pair, the layer picker showing
the best matches Python computes, no request leaving the file.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from atlas_fixture import make_atlas_data

from seelike.atlas import layout
from seelike.atlas.page import page_html, write_page

PLOTS = ("pair-matrix", "pair-heatmap", "best-matches", "embedding")


@pytest.fixture(scope="module")
def data() -> dict:
    return make_atlas_data(5)


def _cka(data: dict, a: str, b: str) -> np.ndarray:
    """Pair (a, b)'s CKA with a's blocks along rows, read the plain way."""
    for p in data["pairs"]:
        if (p["a"], p["b"]) == (a, b):
            rows = p["cka"]
            break
        if (p["a"], p["b"]) == (b, a):
            rows = [list(col) for col in zip(*p["cka"], strict=True)]
            break
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


# -- layout ---------------------------------------------------------------------------------------------------


def test_pair_matrix_is_symmetric_with_self_pairs_on_the_diagonal(data):
    names, mat = layout.pair_matrix(data, "score")
    assert names == [m["name"] for m in data["models"]]
    np.testing.assert_array_equal(mat, mat.T)
    for p in data["pairs"]:
        assert mat[names.index(p["a"]), names.index(p["b"])] == p["score"]
    np.testing.assert_allclose(np.diag(mat), 1.0)  # the fixture's self pairs peak at 1
    _, diag = layout.pair_matrix(data, "diagonal_se")
    assert np.isfinite(diag).all()


def test_cluster_order_groups_the_classes_and_its_dendrogram_is_the_linkage(data):
    clustering = layout.cluster_order(data)
    order = clustering.order
    assert sorted(order) == sorted(m["name"] for m in data["models"])
    pos = {n: i for i, n in enumerate(order)}
    assert abs(pos["vit"] - pos["deit"]) == 1, order  # the two ViT-like models side by side
    assert abs(pos["resnet"] - pos["convnext"]) == 1, order  # and the two CNN-like ones
    m = len(order)
    assert len(clustering.icoord) == len(clustering.dcoord) == m - 1
    leaves = {
        x
        for xs, hs in zip(clustering.icoord, clustering.dcoord, strict=True)
        for x, h in ((xs[0], hs[0]), (xs[3], hs[3]))
        if h == 0
    }
    assert leaves == set(range(m))  # leaf k of the order at k: under column / row k of the matrix
    # the lowest merge joins the closest pair at its dissimilarity; the root at the average over the split
    names, score = layout.pair_matrix(data, "score")
    dist = 1 - score
    np.fill_diagonal(dist, np.inf)
    assert min(seg[1] for seg in clustering.dcoord) == pytest.approx(dist.min())
    assert dist.min() == pytest.approx(1 - score[names.index("vit"), names.index("deit")])
    root = max(seg[1] for seg in clustering.dcoord)
    left = [names.index(n) for n in order[:2]]  # the CNN-like pair splits off first in this fixture
    right = [names.index(n) for n in order[2:]]
    assert {order[0], order[1]} == {"resnet", "convnext"}
    assert root == pytest.approx(np.mean(1 - score[np.ix_(left, right)]))


@pytest.mark.parametrize("n_models", [1, 2])
def test_cluster_order_of_one_and_two_models(n_models):
    data = make_atlas_data(n_models)
    clustering = layout.cluster_order(data)
    assert sorted(clustering.order) == sorted(m["name"] for m in data["models"])
    assert len(clustering.icoord) == n_models - 1
    if n_models == 2:
        assert clustering.icoord[0] == [0.0, 0.0, 1.0, 1.0]
        assert clustering.dcoord[0][1] == pytest.approx(1 - data["pairs"][1]["score"])
    assert json.loads(json.dumps(clustering.as_dict())) == clustering.as_dict()


def _pairwise(xy: np.ndarray) -> np.ndarray:
    return np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)


def test_classical_mds_recovers_euclidean_distances_and_fixes_the_sign():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(12, 2)) @ np.array([[2.0, 0.3], [0.0, 0.7]])
    coords = layout.classical_mds(_pairwise(points))
    np.testing.assert_allclose(_pairwise(coords), _pairwise(points), atol=1e-9)
    for k in range(2):  # the point farthest along each axis sits on its positive side
        assert coords[np.argmax(np.abs(coords[:, k])), k] > 0
    # a rotated and reflected copy of the points embeds to the very same coordinates
    rot = np.array([[0.0, -1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(layout.classical_mds(_pairwise(points @ rot)), coords, atol=1e-9)
    # fewer than two dimensions of spread: the missing one is 0, nothing fails
    assert np.allclose(layout.classical_mds(np.zeros((1, 1))), 0.0)
    line = layout.classical_mds(_pairwise(np.c_[np.arange(4.0), np.zeros(4)]))
    np.testing.assert_allclose(np.abs(line[:, 0]), [1.5, 0.5, 0.5, 1.5], atol=1e-9)
    np.testing.assert_allclose(line[:, 1], 0.0, atol=1e-6)


def _geometric_atlas(points: dict[str, np.ndarray]) -> dict:
    """An atlas whose CKA is 1 − the Euclidean distance between fixed 2-D points, one per block."""
    models = [
        {"name": n, "arch": n, "family": n, "class": "other",
         "blocks": [{"tap": f"b{i}", "kind": "block", "depth": i / (len(p) - 1)} for i in range(len(p))]}
        for n, p in points.items()
    ]  # fmt: skip
    pairs = []
    for a, b in itertools.combinations_with_replacement(points, 2):
        d = np.linalg.norm(points[a][:, None] - points[b][None, :], axis=-1)
        pairs.append({"a": a, "b": b, "cka": (1 - d).tolist(), "se": np.zeros_like(d).tolist()})
    return {"version": 1, "models": models, "pairs": pairs}


def test_block_embedding_recovers_the_geometry_behind_the_atlas():
    rng = np.random.default_rng(5)
    points = {"a": rng.uniform(0, 0.5, (4, 2)), "b": rng.uniform(0, 0.5, (3, 2))}
    points["c"] = rng.uniform(0, 0.5, (5, 2))
    rows = layout.block_embedding(_geometric_atlas(points))
    assert [(r["model"], r["tap"]) for r in rows] == [
        (n, f"b{i}") for n, p in points.items() for i in range(len(p))
    ]
    assert set(rows[0]) == {"model", "tap", "depth", "family", "class", "x", "y"}
    coords = np.array([[r["x"], r["y"]] for r in rows])
    truth = np.concatenate(list(points.values()))
    np.testing.assert_allclose(_pairwise(coords), _pairwise(truth), atol=1e-9)


def test_block_embedding_fills_undefined_cells_with_the_mean_dissimilarity():
    points = {"a": np.array([[0.0, 0.0], [0.3, 0.0]]), "b": np.array([[0.0, 0.4], [0.3, 0.4]])}
    data = _geometric_atlas(points)
    data["pairs"][1]["cka"][0][1] = None  # a × b, cell (a0, b1): undefined
    dist = layout._block_dissimilarity(data)
    np.testing.assert_array_equal(dist, dist.T)
    known = _pairwise(np.concatenate(list(points.values())))
    known[0, 3] = known[3, 0] = np.nan
    off = ~np.eye(4, dtype=bool) & np.isfinite(known)
    assert dist[0, 3] == pytest.approx(known[off].mean())
    np.testing.assert_allclose(dist[off], known[off], atol=1e-12)


def test_block_embedding_of_the_fixture_is_finite_and_deterministic(data):
    rows = layout.block_embedding(data)
    assert len(rows) == sum(len(m["blocks"]) for m in data["models"])
    xy = np.array([[r["x"], r["y"]] for r in rows])
    assert np.isfinite(xy).all() and xy.std() > 0
    assert layout.block_embedding(data) == rows


def test_best_matches_against_a_plain_search(data):
    for model in data["models"]:
        for i in range(len(model["blocks"])):
            got = layout.best_matches(data, model["name"], i)
            assert [r["model"] for r in got] == [
                m["name"] for m in data["models"] if m["name"] != model["name"]
            ]
            for row in got:
                line = _cka(data, model["name"], row["model"])[i]
                best = max((v, -j) for j, v in enumerate(line) if not math.isnan(v))
                j = -best[1]
                other = next(m for m in data["models"] if m["name"] == row["model"])
                assert row["index"] == j
                assert row["cka"] == best[0]
                assert row["tap"] == other["blocks"][j]["tap"]
                assert row["depth"] == other["blocks"][j]["depth"]
    # deit is the b of (vit, deit): its rows are vit's columns
    row = next(r for r in layout.best_matches(data, "deit", 3) if r["model"] == "vit")
    pair = next(p for p in data["pairs"] if (p["a"], p["b"]) == ("vit", "deit"))
    column = [r[3] for r in pair["cka"]]
    assert row["index"] == int(np.argmax(column)) and row["se"] == pair["se"][row["index"]][3]


# -- the page as a file ---------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <script type=application/json> by id."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.json: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script" and attrs.get("type") == "application/json":
            self._in = attrs["id"]
            self.json[self._in] = ""

    def handle_data(self, text):
        if self._in:
            self.json[self._in] += text

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None


@pytest.fixture(scope="module")
def atlas_page(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("atlas") / "atlas.html"
    write_page(data, path)
    return path


def test_page_is_one_offline_file_with_the_data_and_plotly(atlas_page, data):
    from plotly.offline import get_plotlyjs

    assert [p.name for p in atlas_page.parent.iterdir()] == ["atlas.html"]  # no temporary file left
    text = atlas_page.read_text(encoding="utf-8")
    tags = _Tags()
    tags.feed(text)
    names = {t for t, _ in tags.tags}
    assert not names & {"link", "img", "iframe", "object", "embed", "base", "source"}, names
    for tag, attrs in tags.tags:
        assert not {"src", "href", "srcset", "data", "action"} & set(attrs), (tag, attrs)
    style = re.search(r"<style>(.*?)</style>", text, re.DOTALL).group(1)
    assert "url(" not in style and "@import" not in style
    assert not re.search(r"<(script|link|img)[^>]+(src|href)\s*=", text, re.IGNORECASE)
    assert get_plotlyjs()[:2000] in text  # plotly.js inline, from the Python package
    # the data as given (the fixture's undefined cells are None already)
    assert json.loads(tags.json["atlas-data"]) == data
    view = json.loads(tags.json["atlas-view"])
    assert view["clustering"]["order"] == layout.cluster_order(data).order
    for key in ("digits", "linear_cka", "20 permutations", "calibrated", "corrected p"):
        assert key in re.sub(r"<[^>]+>", "", text), key
    for pid in (*PLOTS, "layer-picker"):
        assert f'id="{pid}"' in text


def test_page_strings_cannot_close_the_script_element(tmp_path):
    data = make_atlas_data(2)
    evil = "</script><script>document.title='pwned'</script><!--"
    data["dataset"] = evil
    data["models"][0]["arch"] = evil
    data["pairs"][0]["score"] = float("nan")  # NaN travels as null
    path = tmp_path / "atlas.html"
    write_page(data, path)
    text = path.read_text(encoding="utf-8")
    assert text.lower().count("</script") == text.lower().count("<script") == 4
    tags = _Tags()
    tags.feed(text)
    back = json.loads(tags.json["atlas-data"])
    assert back["dataset"] == evil and back["models"][0]["arch"] == evil
    assert back["pairs"][0]["score"] is None


def test_page_refuses_an_unknown_data_version():
    with pytest.raises(ValueError, match="version"):
        page_html({**make_atlas_data(1), "version": 2})


# -- the overview figure --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_models", [1, 2, 5])
def test_overview_writes_png_and_pdf(tmp_path, n_models, monkeypatch):
    import seelike.figures.atlas as fig_atlas

    figs = []
    save = fig_atlas.save_figure

    def keep(fig, png, pdf=None):
        figs.append(fig)
        save(fig, png, pdf)

    monkeypatch.setattr(fig_atlas, "save_figure", keep)
    data = make_atlas_data(n_models)
    data["pairs"][0]["score_p"] = 0.4
    png, pdf = tmp_path / "atlas.png", tmp_path / "atlas.pdf"
    fig_atlas.plot_atlas_overview(data, png, pdf)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    titles = [ax.get_title() for ax in figs[0].axes if ax.get_title()]
    assert len(titles) == 2 and all("[digits]" in t for t in titles), titles
    cbars = [ax.get_ylabel() for ax in figs[0].axes if ax.get_label() == "<colorbar>"]
    assert cbars and "pair score" in cbars[0]


# -- the page in a real browser -------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "chromium not installed (Debian: `apt-get install chromium`, see .ci/install_cluster_deps.sh)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def _cell_centre(page, n: int, row: int, col: int) -> tuple[float, float]:
    """Screen position of cell (row, col) of the n × n score matrix (x range −½..n−½, rows top down)."""
    box = page.locator("#pair-matrix .draglayer .xy .nsewdrag").bounding_box()
    return box["x"] + (col + 0.5) / n * box["width"], box["y"] + (row + 0.5) / n * box["height"]


def _click_cell(page, n: int, row: int, col: int, expect: str) -> None:
    x, y = _cell_centre(page, n, row, col)
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    page.wait_for_function(
        f"document.getElementById('pair-heatmap').dataset.pair === {json.dumps(expect)}",
        timeout=5000,
    )


def _plotted(page, pid: str):
    return page.evaluate(f"document.getElementById('{pid}').data")


def test_page_in_chromium(browser, atlas_page, data, tmp_path):
    start = time.monotonic()
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    messages, external = [], []
    tab.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    tab.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))

    def guard(route):
        if not route.request.url.startswith(("file:", "data:", "blob:")):
            external.append(route.request.url)
            return route.abort()
        return route.continue_()

    tab.route("**/*", guard)
    tab.goto(atlas_page.as_uri())
    tab.wait_for_selector("body[data-ready]", timeout=20_000)

    for pid in PLOTS:  # every plot drawn by plotly
        assert tab.locator(f"#{pid}.js-plotly-plot .main-svg").count() > 0, pid
    order = layout.cluster_order(data).order
    n = len(order)
    # the scores and the dendrogram's n − 1 merges
    assert len(_plotted(tab, "pair-matrix")) == 1 + (n - 1)
    assert tab.get_attribute("#pair-heatmap", "data-pair") == f"{order[0]}__{order[1]}"

    # a click on a cell shows that pair, rows = the clicked row's model
    row, col = order.index("vit"), order.index("mixer")
    _click_cell(tab, n, row, col, "vit__mixer")
    heat, marks, best = _plotted(tab, "pair-heatmap")
    np.testing.assert_allclose(np.array(heat["z"], dtype=float), _cka(data, "vit", "mixer"))
    pair = next(p for p in data["pairs"] if (p["a"], p["b"]) == ("vit", "mixer"))
    assert [best["y"][0], best["x"][0]] == pair["score_cell"]
    assert f"CKA {pair['cka'][1][2]:.3f} ± {pair['se'][1][2]:.3f}, p " in heat["text"][1][2]
    scores = _plotted(tab, "pair-matrix")[0]["text"][row][col]
    for part in (
        f"score {pair['score']:.3f} ± {pair['score_se']:.3f}",
        "corrected p",
        "calibrated",
    ):
        assert part in scores, scores
    assert f"diagonal mean {pair['diagonal']:.3f} ± {pair['diagonal_se']:.3f}" in scores
    flagged = sum(not d for r, dr in zip(pair["cka"], pair["distinct"], strict=True)
                  for v, d in zip(r, dr, strict=True) if v is not None)  # fmt: skip
    assert flagged and len(marks["x"]) == flagged  # cells the null cannot tell apart are marked
    _click_cell(tab, n, col, row, "mixer__vit")  # the same pair turned: mixer's blocks on the rows
    turned, _, best = _plotted(tab, "pair-heatmap")
    np.testing.assert_allclose(np.array(turned["z"], dtype=float), _cka(data, "mixer", "vit"))
    assert [best["y"][0], best["x"][0]] == pair["score_cell"][::-1]
    _click_cell(tab, n, row, row, "vit__vit")  # the diagonal: the model's self-similarity
    assert "self-similarity" in tab.inner_text("#pair-title")

    # the layer picker: the best matches layout.best_matches computes, one point per other model
    tab.select_option("#model-select", "resnet")
    tab.select_option("#block-select", "2")
    tab.wait_for_function("document.getElementById('best-matches').dataset.block === '2'")
    assert tab.get_attribute("#best-matches", "data-model") == "resnet"
    (matches,) = _plotted(tab, "best-matches")
    want = [r for r in layout.best_matches(data, "resnet", 2) if r["cka"] is not None]
    assert matches["text"] == [r["model"] for r in want]
    assert matches["y"] == [r["cka"] for r in want] and matches["x"] == [r["depth"] for r in want]
    assert len(_plotted(tab, "embedding")) == len(data["models"])

    shot = tmp_path / "atlas.png"
    tab.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[1] == 1400 and pixels.std() > 20
    bad = [m for m in messages if re.match(r"(error|warning|pageerror)|\w+: (WARN|ERROR)", m)]
    assert not bad, bad
    assert not external, f"the page asked the network for {external}"
    tab.close()
    print(f"atlas page in chromium: {time.monotonic() - start:.1f} s, screenshot {shot}")


# -- across datasets ------------------------------------------------------------------------------------------


def test_score_shift_between_datasets_and_its_figure(tmp_path):
    """Each pair's scores on every dataset, the change from the first with √(SE₁² + SE₂²), the rank agreement
    of the pairs' diagonals, and the figure's files."""
    import pandas as pd

    from seelike.atlas.data import rank_agreement, score_shift
    from seelike.figures.atlas import plot_atlas_shift

    def table(diagonals, scale=1.0):
        return pd.DataFrame(
            [
                {"measure": m, "a": a, "b": b, "score": 0.9 * scale, "score_se": 0.01, "score_p": 0.05,
                 "diagonal": d * scale, "diagonal_se": 0.02}
                for m in ("linear_cka", "rsa")
                for (a, b), d in diagonals.items()
            ]
        )  # fmt: skip

    one = {("vit", "cnn"): 0.3, ("vit", "deit"): 0.8, ("deit", "cnn"): 0.4}
    two = {
        ("vit", "cnn"): 0.6,
        ("vit", "deit"): 0.5,
        ("deit", "cnn"): 0.4,
    }  # the ViT-CNN pair moves up
    shift = score_shift({"imagenet": table(one), "cifar": table(two)})
    assert len(shift) == 6 and set(shift["dataset"]) == {"imagenet", "cifar"}
    moved = shift[(shift.pair == "vit × cnn") & (shift.dataset == "cifar")].iloc[0]
    assert moved["diagonal_change"] == pytest.approx(0.3)
    assert moved["diagonal_change_se"] == pytest.approx(math.sqrt(2) * 0.02)
    assert moved["diagonal_rank"] == 1.0
    first = shift[shift.dataset == "imagenet"]
    assert (first["diagonal_change"] == 0).all()
    rho = rank_agreement(shift)
    # ranks of the diagonals (1, 3, 2) vs (3, 2, 1): Spearman 1 − 6Σd²/(n(n² − 1)) with d = (−2, 1, 1)
    assert rho.loc["imagenet", "cifar"] == pytest.approx(1 - 6 * 6 / (3 * 8))
    plot_atlas_shift(shift, tmp_path / "s.png", tmp_path / "s.pdf")
    assert (tmp_path / "s.png").stat().st_size > 5000 and (tmp_path / "s.pdf").stat().st_size > 1000
