"""`snakemake --report` on the tiny run: every figure bundled with a rendered caption, and the report
opened in headless Chromium with the figures drawn (screenshots checked for content).

Needs Debian's `chromium` (`.ci/install_cluster_deps.sh`) for the rendering half; skips it otherwise.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_snakemake
from PIL import Image

pytestmark = pytest.mark.slow

CAPTIONS = REPO / "workflow" / "report"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
WINDOW = (1400, 1000)
# Opens one figure in the report's own viewer with its caption in the side bar (what a click on a
# result's eye and info buttons does), then
# checks in the page that every bundled PNG decodes; the verdict lands in <body data-figures=...>.
VIEW_SCRIPT = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const target = %s;
  if (target) {
    // One setView: React batches state, so a second call would undo the first one's navbar mode.
    const category = Object.keys(categories).find(
      c => Object.values(categories[c]).some(l => l.includes(target)));
    const subcategory = Object.keys(categories[category]).find(
      s => categories[category][s].includes(target));
    app.setView({navbarMode: "resultinfo", category: category, subcategory: subcategory,
                 resultPath: target, content: "img", contentPath: results[target].data_uri});
  }
  const pngs = Object.keys(results).filter(p => p.endsWith(".png"));
  let ok = 0, bad = [];
  pngs.forEach(p => {
    const im = new Image();
    im.onload = () => { if (im.naturalWidth > 0) ok++; else bad.push(p); done(); };
    im.onerror = () => { bad.push(p); done(); };
    im.src = results[p].data_uri;
  });
  function done() {
    if (ok + bad.length === pngs.length)
      document.body.setAttribute("data-figures", JSON.stringify({ok: ok, bad: bad}));
  }
}, 300));
</script>
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _embedded(report: str, var: str) -> dict:
    """The `var <name> = {...};` JSON object the report embeds (bundled libraries declare
    variables of the same name too: take the largest object literal that parses as JSON)."""
    found: list[dict] = []
    for m in re.finditer(rf"\bvar {var} = (?=\{{)", report):
        try:
            obj, _ = json.JSONDecoder().raw_decode(report, m.end())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    assert found, f"no `var {var} = {{...}}` data in the report"
    return max(found, key=len)


def _caption_title(rst: str) -> str:
    """The bold lead sentence every caption starts with (``**Fig N — ...**``)."""
    m = re.search(r"\*\*(.+?)\*\*", rst, re.DOTALL)
    assert m, "caption has no bold lead sentence"
    return " ".join(m.group(1).split())


def _plain(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@pytest.fixture(scope="module")
def report(workflow_run: Path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = run_snakemake(workflow_run, "--report", str(out))
    text = out.read_text()
    return {
        "path": out,
        "html": text,
        "log": proc.stdout + proc.stderr,
        "results": _embedded(text, "results"),
        "categories": _embedded(text, "categories"),
    }


def test_report_bundles_every_figure_with_its_caption(report, workflow_run: Path):
    results = report["results"]
    figures = {
        str(p.relative_to(workflow_run))
        for p in (workflow_run / "results" / "figures").rglob("*.png")
    }
    assert figures, "the tiny run drew no figures"
    bundled = {p for p in results if p.endswith(".png")}
    assert figures == bundled, (
        f"figures not in the report: {sorted(figures - bundled)}; "
        f"in the report but not drawn: {sorted(bundled - figures)}"
    )
    for path, entry in results.items():
        if path.endswith(".png"):
            uri = entry["data_uri"]
            assert uri.startswith("data:image/png") and ";base64," in uri, f"{path}: {uri[:80]}"
        caption = entry.get("caption") or ""
        assert _plain(caption), f"{path} has no caption"
        # Captions are Jinja templates over the config: none may reach the report unrendered.
        assert "{{" not in caption and "snakemake.config" not in caption, f"{path}: {caption[:200]}"
    # Each caption file's lead sentence is in the report, on at least one figure.
    captions = {_plain(e.get("caption") or "") for e in results.values()}
    rst_files = sorted(CAPTIONS.glob("fig*.rst"))
    assert rst_files, f"no figure captions under {CAPTIONS}"
    for rst in rst_files:
        title = _caption_title(rst.read_text())
        assert any(title in c for c in captions), f"{rst.name}: {title!r} not in the report"


def test_captions_render_without_docutils_errors(report):
    """A caption with broken reStructuredText still builds a report, only with an error inside."""
    errors = [ln for ln in report["log"].splitlines() if re.search(r"\((ERROR|SEVERE)/\d\)", ln)]
    assert not errors, "caption markup errors:\n" + "\n".join(errors)
    assert "System Message" not in report["html"], "docutils error message rendered into the report"


def _shoot(chromium: str, page: Path, png: Path, profile: Path) -> None:
    cmd = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=8000",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    # Headless Chromium now and then hangs on a page it renders in 2 s elsewhere (seen once in ~100 shots on a
    # loaded 2-core machine): one retry with a fresh profile; a page that never renders still fails below.
    for attempt in range(2):
        try:
            subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
            return
        except subprocess.TimeoutExpired:
            if attempt:
                raise
            cmd[cmd.index(f"--user-data-dir={profile}")] = f"--user-data-dir={profile}-retry"


def _dump_dom(chromium: str, page: Path, profile: Path) -> str:
    cmd = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    return proc.stdout


def _pixels(png: Path) -> np.ndarray:
    assert png.exists() and png.stat().st_size > 0, f"no screenshot written at {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    return np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("L"), dtype=np.float64)


def test_report_renders_figures_in_chromium(report, tmp_path: Path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "chromium not installed (Debian: `apt-get install chromium`, see .ci/install_cluster_deps.sh)"
        )
    results, categories = report["results"], report["categories"]
    shots = tmp_path / "shots"
    shots.mkdir()
    base = report["html"]

    def page_for(target: str | None, name: str) -> Path:
        page = tmp_path / f"{name}.html"
        # The last </body>: an earlier one sits inside a bundled script's string.
        head, sep, tail = base.rpartition("</body>")
        assert sep, "report has no </body>"
        page.write_text(head + VIEW_SCRIPT % json.dumps(target) + sep + tail)
        return page

    # The landing page as a user first sees it.
    landing = shots / "landing.png"
    _shoot(chromium, report["path"], landing, tmp_path / "profile-landing")
    land = _pixels(landing)
    assert land.std() > 5, "the report's landing page rendered blank"

    # Every bundled PNG decodes inside Chromium.
    dom = _dump_dom(chromium, page_for(None, "decode"), tmp_path / "profile-dom")
    m = re.search(r'data-figures="([^"]*)"', dom)
    assert m, "the page script did not finish: the report's app did not load in Chromium"
    verdict = json.loads(html.unescape(m.group(1)))
    n_png = sum(p.endswith(".png") for p in results)
    assert verdict == {"ok": n_png, "bad": []}, verdict

    # One screenshot per figure category, with that category's first figure open in the viewer.
    for i, (category, subcats) in enumerate(sorted(categories.items())):
        target = next(p for paths in subcats.values() for p in paths if p.endswith(".png"))
        png = shots / f"category{i}.png"
        _shoot(chromium, page_for(target, f"view{i}"), png, tmp_path / f"profile-{i}")
        pix = _pixels(png)
        assert pix.shape == (WINDOW[1], WINDOW[0]), f"{category}: screenshot size {pix.shape}"
        assert pix.std() > 5, f"{category}: screenshot is blank"
        # The figure replaces the landing page's workflow graph: a large part of the page changes.
        changed = np.mean(np.abs(pix - land) > 10)
        assert changed > 0.05, (
            f"{category}: figure view looks like the landing page ({changed:.1%})"
        )
    print(f"report screenshots in {shots}")
