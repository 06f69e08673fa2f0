"""The model-zoo atlas as one self-contained, offline HTML page.

`write_page(data, path)` writes a single file that opens from `file://` with no network and no server: the
atlas `data` (the contract of `seelike.atlas.data`) and the arrangement computed from it (`seelike.atlas.layout`:
clustered order and dendrogram, block-output embedding, best matches, family colours) inline as JSON in
`<script type="application/json">` elements (`#atlas-data`, `#atlas-view`; `<`, `>` and `&` escaped so no
string can close the element), plotly.js inline from the `plotly` Python package, and a small plain-JS script.

The page shows the clustered model × model matrix of pair scores with its dendrogram (`#pair-matrix`; a click on
a cell shows that pair), the layer × layer CKA heatmap of one pair (`#pair-heatmap`, whose `data-pair` attribute
names the pair shown as `<row model>__<column model>`; cells the permutation null cannot tell apart carry a
grey ×, the pair score's cell a green square), a picker of one block output (`#layer-picker`) and its best match in every other model
(`#best-matches`), and the 2-D embedding of every block output (`#embedding`; a click on a point picks it).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

from seelike.atlas import layout
from seelike.io import atomic_write

__all__ = ["build_view", "page_html", "write_page"]

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; }
header h1 { font-size: 1.4em; margin: 0.6em 0 0.2em; }
header .meta { color: #555; margin: 0 0 0.4em; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1em 0.8em; margin: 0.4em 0;
            font-size: 0.92em; }
header dt { font-weight: 600; }
header dd { margin: 0; }
details table { border-collapse: collapse; font-size: 0.9em; margin: 0.3em 0; }
details td, details th { border-bottom: 1px solid #ddd; padding: 0.1em 0.8em 0.1em 0; text-align: left; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(600px, 1fr)); gap: 1em; }
section { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em; }
section h2 { font-size: 1.05em; margin: 0 0 0.3em; }
section p.hint { color: #666; font-size: 0.88em; margin: 0 0 0.3em; }
.plot { width: 100%; height: 560px; }
#layer-picker { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin-bottom: 0.3em; }
"""

_JS = r"""
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("atlas-data").textContent);
  const VIEW = JSON.parse(document.getElementById("atlas-view").textContent);
  const CONFIG = {displaylogo: false, responsive: true};
  const ORDER = VIEW.clustering.order;
  const MODELS = Object.fromEntries(DATA.models.map(m => [m.name, m]));
  const SYMBOL = {vit: "circle", cnn: "square", other: "diamond"};
  const $ = id => document.getElementById(id);

  const known = v => v !== null && v !== undefined;
  const fmt = (v, d = 3) => known(v) ? Number(v).toFixed(d) : "n/a";
  const pm = (v, se) => fmt(v) + (known(se) ? " ± " + fmt(se) : "");
  const transpose = m => m.length ? m[0].map((_, j) => m.map(row => row[j])) : m;

  // The stored pair of models a and b, its matrices (`get`) and cells (`cell`) turned so that a's blocks
  // run along the rows.
  function findPair(a, b) {
    for (const p of DATA.pairs) {
      if (p.a === a && p.b === b) return {pair: p, get: key => p[key], cell: ij => ij};
      if (p.a === b && p.b === a) {
        return {pair: p, get: key => transpose(p[key]), cell: ij => ij && [ij[1], ij[0]]};
      }
    }
    return null;
  }

  function pairText(a, b, found) {
    const p = found.pair, at = found.cell(p.score_cell);
    const lines = [a + " × " + b, "score " + pm(p.score, p.score_se)
      + (known(p.score_p) ? " (corrected p " + fmt(p.score_p) + ")" : "")];
    if (at) lines.push("at " + MODELS[a].blocks[at[0]].tap + " × " + MODELS[b].blocks[at[1]].tap);
    if (known(p.score_calibrated)) lines.push("calibrated " + fmt(p.score_calibrated)
      + (known(p.score_tau) ? " (τ " + fmt(p.score_tau) + ")" : ""));
    lines.push("diagonal mean " + pm(p.diagonal, p.diagonal_se));
    return lines.join("<br>");
  }

  function drawMatrix() {
    const idx = ORDER.map((_, i) => i);
    const cells = ORDER.map(a => ORDER.map(b => findPair(a, b)));
    const z = cells.map(row => row.map(f => f ? f.pair.score : null));
    const text = cells.map((row, i) => row.map((f, j) =>
      f ? pairText(ORDER[i], ORDER[j], f) : ORDER[i] + " × " + ORDER[j] + ": not in the atlas"));
    const heat = {type: "heatmap", x: idx, y: idx, z: z, text: text, zmin: 0, zmax: 1,
      colorscale: "Viridis", colorbar: {title: {text: "pair score"}, len: 0.78, y: 0, yanchor: "bottom"},
      hovertemplate: "%{text}<extra></extra>", xgap: 1, ygap: 1};
    const tree = VIEW.clustering.icoord.map((ic, k) => ({type: "scatter", mode: "lines",
      x: ic, y: VIEW.clustering.dcoord[k], yaxis: "y2", hoverinfo: "skip", showlegend: false,
      line: {color: "#555", width: 1.2}}));
    const ticks = {tickvals: idx, ticktext: ORDER, range: [-0.5, ORDER.length - 0.5],
      showgrid: false, zeroline: false};
    Plotly.newPlot("pair-matrix", [heat].concat(tree), {
      margin: {l: 110, r: 20, t: 10, b: 110},
      xaxis: Object.assign({tickangle: -45}, ticks),
      yaxis: Object.assign({domain: [0, 0.78]}, ticks, {range: [ORDER.length - 0.5, -0.5]}),
      yaxis2: {domain: [0.8, 1], title: {text: "1 − score"}, rangemode: "tozero", zeroline: false,
        showgrid: false},
    }, CONFIG);
    $("pair-matrix").on("plotly_click", ev => {
      const pt = ev.points[0];
      if (pt.data.type === "heatmap") showPair(ORDER[pt.y], ORDER[pt.x]);
    });
  }

  function blockAxis(m, title) {
    return {title: {text: title}, tickvals: m.blocks.map((_, i) => i), showgrid: false,
      ticktext: m.blocks.map(b => b.tap + " (" + fmt(b.depth, 2) + ")"), tickfont: {size: 9}};
  }

  function showPair(a, b) {
    const box = $("pair-heatmap"), found = findPair(a, b);
    box.dataset.pair = a + "__" + b;
    $("pair-title").textContent = a === b ? a + ": self-similarity" : a + " (rows) vs " + b + " (columns)";
    if (!found) { Plotly.purge(box); box.textContent = "this pair is not in the atlas"; return; }
    const ma = MODELS[a], mb = MODELS[b];
    const [cka, se, p, distinct] = ["cka", "se", "p", "distinct"].map(found.get);
    const text = cka.map((row, i) => row.map((v, j) =>
      a + " " + ma.blocks[i].tap + " (depth " + fmt(ma.blocks[i].depth, 2) + ")<br>"
      + b + " " + mb.blocks[j].tap + " (depth " + fmt(mb.blocks[j].depth, 2) + ")<br>"
      + "CKA " + pm(v, se[i][j]) + ", p " + fmt(p[i][j])
      + (known(v) && !distinct[i][j] ? "<br>the null cannot tell this cell apart" : "")));
    const nx = [], ny = [], nt = [];
    distinct.forEach((row, i) => row.forEach((d, j) => {
      if (!d && known(cka[i][j])) { nx.push(j); ny.push(i); nt.push(text[i][j]); }
    }));
    const traces = [
      {type: "heatmap", z: cka, text: text, zmin: 0, zmax: 1, colorscale: VIEW.cka_colorscale,
        colorbar: {title: {text: DATA.measure}}, hovertemplate: "%{text}<extra></extra>"},
      {type: "scatter", mode: "markers", x: nx, y: ny, text: nt, hovertemplate: "%{text}<extra></extra>",
        name: "null cannot tell apart", marker: {symbol: "x-thin", size: 7, color: "#bbb",
        line: {width: 1.5, color: "#bbb"}}, showlegend: nx.length > 0}];
    const at = found.cell(found.pair.score_cell);
    if (at) {
      traces.push({type: "scatter", mode: "markers", x: [at[1]], y: [at[0]], name: "pair score (max)",
        text: [text[at[0]][at[1]]], hovertemplate: "%{text}<extra></extra>",
        marker: {symbol: "square-open", size: 14, color: "#2ca02c", line: {width: 2}}});
    }
    Plotly.react(box, traces, {
      margin: {l: 140, r: 20, t: 10, b: 130},
      xaxis: blockAxis(mb, b + " block output (relative depth)"),
      yaxis: blockAxis(ma, a + " block output (relative depth)"),
      legend: {orientation: "h", x: 0, y: 1.02, yanchor: "bottom"},
    }, CONFIG);
  }

  function fillBlocks() {
    const select = $("block-select");
    select.replaceChildren(...MODELS[$("model-select").value].blocks.map((b, i) =>
      new Option(b.tap + " (depth " + fmt(b.depth, 2) + ")", i)));
  }

  // For every other model, its block of highest CKA with `block` of `model` (the first on a tie), as
  // seelike.atlas.layout.best_matches; models without a defined cell are left out.
  function bestMatches(model, block) {
    return DATA.models.filter(o => o.name !== model).map(o => {
      const f = findPair(model, o.name);
      const cka = f ? f.get("cka")[block] : [], se = f ? f.get("se")[block] : [];
      let j = -1;
      cka.forEach((v, k) => { if (known(v) && (j < 0 || v > cka[j])) j = k; });
      return j < 0 ? null : {model: o.name, family: o.family, tap: o.blocks[j].tap,
        depth: o.blocks[j].depth, cka: cka[j], se: se[j]};
    }).filter(r => r);
  }

  function showMatches() {
    const model = $("model-select").value, block = Number($("block-select").value);
    const box = $("best-matches"), picked = MODELS[model].blocks[block];
    box.dataset.model = model;
    box.dataset.block = block;
    const rows = bestMatches(model, block);
    const trace = {type: "scatter", mode: "markers+text", x: rows.map(r => r.depth),
      y: rows.map(r => r.cka), text: rows.map(r => r.model), textposition: "middle right",
      error_y: {type: "data", array: rows.map(r => known(r.se) ? r.se : 0), visible: true,
        color: "#555"},
      marker: {size: 10, color: rows.map(r => VIEW.colors[r.family]),
        symbol: rows.map(r => SYMBOL[MODELS[r.model].class] || "circle")},
      hovertext: rows.map(r => r.model + " " + r.tap + " (depth " + fmt(r.depth, 2) + ")<br>CKA "
        + pm(r.cka, r.se)), hoverinfo: "text"};
    Plotly.react(box, [trace], {
      margin: {l: 60, r: 20, t: 30, b: 50},
      title: {text: model + " " + picked.tap + " (depth " + fmt(picked.depth, 2) + ")", font: {size: 13}},
      xaxis: {title: {text: "relative depth of the best-matching block"}, range: [-0.05, 1.15]},
      yaxis: {title: {text: DATA.measure + " ± SE"}, range: [0, 1.05]},
      shapes: [{type: "line", x0: picked.depth, x1: picked.depth, y0: 0, y1: 1, yref: "paper",
        line: {dash: "dot", color: "#888"}}],
    }, CONFIG);
  }

  function pick(model, block) {
    $("model-select").value = model;
    fillBlocks();
    $("block-select").value = String(block);
    showMatches();
  }

  function drawEmbedding() {
    const seen = new Set();
    const traces = DATA.models.map(m => {
      const rows = VIEW.embedding.filter(r => r.model === m.name);
      const first = !seen.has(m.family);
      seen.add(m.family);
      return {type: "scatter", mode: "lines+markers", name: m.family, legendgroup: m.family,
        showlegend: first, x: rows.map(r => r.x), y: rows.map(r => r.y),
        customdata: rows.map((_, i) => [m.name, i]), line: {color: VIEW.colors[m.family], width: 1},
        marker: {color: VIEW.colors[m.family], size: rows.map(r => 5 + 12 * r.depth),
          symbol: SYMBOL[m.class] || "circle", line: {color: "#fff", width: 0.5}},
        hovertext: rows.map(r => m.name + " " + r.tap + "<br>depth " + fmt(r.depth, 2)
          + ", family " + m.family), hoverinfo: "text"};
    });
    Plotly.newPlot("embedding", traces, {
      margin: {l: 50, r: 20, t: 10, b: 50}, legend: {title: {text: "family"}},
      xaxis: {title: {text: "MDS 1"}, zeroline: false},
      yaxis: {title: {text: "MDS 2"}, zeroline: false, scaleanchor: "x"},
    }, CONFIG);
    $("embedding").on("plotly_click", ev => pick(...ev.points[0].customdata));
  }

  drawMatrix();
  showPair(ORDER[0], ORDER[Math.min(1, ORDER.length - 1)]);
  $("model-select").replaceChildren(...DATA.models.map(m => new Option(m.name, m.name)));
  $("model-select").addEventListener("change", () => { fillBlocks(); showMatches(); });
  $("block-select").addEventListener("change", showMatches);
  pick(DATA.models[0].name, Math.floor(DATA.models[0].blocks.length / 2));
  drawEmbedding();
  document.body.dataset.ready = "true";
})();
"""

_LEGEND = """
<dl>
  <dt>score</dt><dd>the highest {measure} over all block-output cells of a pair (± its jackknife SE).</dd>
  <dt>corrected p</dt><dd>the permutation p-value of that maximum against the maxima of {permutations} null
    draws over the same cells: corrected for the search over cells (family-wise).</dd>
  <dt>calibrated</dt><dd>(score − τ) / (1 − τ) clipped to [0, 1] (Gröger et al. 2026), τ a
    (1 − α) quantile of the pair's null maxima: 0 for a pair the null explains.</dd>
  <dt>diagonal</dt><dd>the mean {measure} over the depth-aligned cells (± jackknife SE).</dd>
</dl>
"""


def _clean(obj: Any) -> Any:
    """JSON-ready copy: numpy arrays and scalars to Python, NaN and ±inf to None."""
    if hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: `<`, `>` and `&` (only ever inside strings) as \\u escapes."""
    text = json.dumps(_clean(obj), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plotlyjs() -> str:
    """plotly.js as shipped in the `plotly` package, `</script` (if any) written so it cannot end the element."""
    from plotly.offline import get_plotlyjs

    return re.sub(r"</(script)", r"<\\/\1", get_plotlyjs(), flags=re.IGNORECASE)


def _colorscale(name: str, stops: int = 11) -> list[list]:
    """A matplotlib colour map as a plotly colorscale (plotly.js has no magma)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[name]
    return [[k / (stops - 1), to_hex(cmap(k / (stops - 1)))] for k in range(stops)]


def build_view(data: dict) -> dict[str, Any]:
    """What the page arranges by: clustering, embedding, family colours, and the colour scale of the
    layer × layer heatmap (magma, as the workflow's CKA figures). Best matches are not stored (they would
    grow as blocks × models): the page finds them in the pair matrices as `layout.best_matches` does."""
    return {
        "clustering": layout.cluster_order(data).as_dict(),
        "embedding": layout.block_embedding(data),
        "colors": layout.family_colors(data),
        "cka_colorscale": _colorscale("magma"),
    }


def _model_table(data: dict) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (m["name"], m["arch"], m["family"], m["class"], len(m["blocks"]))
        )
        + "</tr>"
        for m in data["models"]
    )
    head = "".join(f"<th>{h}</th>" for h in ("model", "arch", "family", "class", "block outputs"))
    return f"<details><summary>models</summary><table><tr>{head}</tr>{rows}</table></details>"


def _header(data: dict) -> str:
    esc = {k: html.escape(str(data.get(k))) for k in ("dataset", "measure", "permutations")}
    n_blocks = sum(len(m["blocks"]) for m in data["models"])
    return (
        f"<header><h1>Model-zoo atlas — {esc['dataset']}</h1>"
        f'<p class="meta">dataset <b>{esc["dataset"]}</b> · measure <b>{esc["measure"]}</b> · '
        f"<b>{len(data['models'])}</b> models, {n_blocks} block outputs · "
        f"<b>{esc['permutations']}</b> permutations per null</p>"
        + _LEGEND.format(measure=esc["measure"], permutations=esc["permutations"])
        + _model_table(data)
        + "</header>"
    )


_BODY = """
<main>
<section><h2>Pair scores, clustered</h2>
  <p class="hint">Models in average-linkage order of 1 − score. Hover a cell for its scores; click it to see
  the pair layer by layer.</p>
  <div id="pair-matrix" class="plot"></div></section>
<section><h2 id="pair-title"></h2>
  <p class="hint">{measure} between every block output of the two models. Grey ×: the permutation null cannot
  tell the cell apart; blank: undefined.</p>
  <div id="pair-heatmap" class="plot"></div></section>
<section><h2>Best match of one block output in every other model</h2>
  <div id="layer-picker"><label>model <select id="model-select"></select></label>
    <label>block output <select id="block-select"></select></label></div>
  <p class="hint">Dotted line: the picked block's relative depth. Bars: ± SE.</p>
  <div id="best-matches" class="plot"></div></section>
<section><h2>Every block output of every model (classical MDS of 1 − {measure})</h2>
  <p class="hint">Colour: family; marker: ViT ●, CNN ■, other ◆, larger = deeper; lines join a model's blocks
  in forward order. Click a point to pick it above.</p>
  <div id="embedding" class="plot"></div></section>
</main>
"""


def page_html(data: dict) -> str:
    """The whole page as one string."""
    if data.get("version") != 1:
        raise ValueError(f"atlas data version {data.get('version')!r}: this page reads version 1")
    measure = html.escape(str(data.get("measure")))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Model-zoo atlas — {html.escape(str(data.get('dataset')))}</title>",
            f"<style>{_CSS}</style>",
            f"<script>{_plotlyjs()}</script>",
            "</head><body>",
            _header(data),
            _BODY.format(measure=measure),
            f'<script type="application/json" id="atlas-data">{_script_json(data)}</script>',
            f'<script type="application/json" id="atlas-view">{_script_json(build_view(data))}</script>',
            f"<script>{_JS}</script>",
            "</body></html>",
        ]
    )


def write_page(data: dict, path: str | Path) -> None:
    """Write the atlas page to `path` atomically (a temporary sibling renamed into place)."""
    text = page_html(data)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
