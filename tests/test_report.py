"""The run's site (report.py): a landing page and a page per executed notebook, linked both ways, offline.

The browser tests open index.html from file:// in headless Chromium, click through to every stage, check that
each page's images loaded and that its bar leads home, and that no request left the machine."""

import re
import shutil
from base64 import b64decode
from pathlib import Path

import nbformat
import pytest

from synthempathy.chain import report
from synthempathy.chain.config import load_config
from synthempathy.chain.store import STAGES, RunStore, write_json

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def fake_run(root: Path, stages: dict[str, float | None]) -> RunStore:
    """A run folder whose notebooks/ holds `stages` (one figure each), timed as given (None: not recorded)."""
    store = RunStore(root)
    (root / "notebooks").mkdir(parents=True)
    for stage in stages:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {stage[:2]} · The {stage[3:]} stage\n\nKeeps $S \\ge T$."),
                    nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
                        "display_data", data={"image/png": PNG, "text/plain": "<Figure>"})])]
        nbformat.write(nb, root / "notebooks" / f"{stage}.ipynb")
    write_json(root / "manifest.json", {"stages": {s: {"seconds": t} for s, t in stages.items() if t is not None}})
    return store


def hrefs(page: Path) -> list[str]:
    """The links of a page, less those to an anchor of the page itself."""
    return [h for h in re.findall(r'href="([^"]*)"', page.read_text(encoding="utf-8")) if not h.startswith("#")]


def test_a_partial_run_links_only_the_stages_it_ran_and_renders_the_same_twice(tmp_path):
    store = fake_run(tmp_path / "tiny", {"00_data": 1.5, "02_quality": None})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "pipeline.png").write_bytes(b64decode(PNG))
    (store.root / "report" / "figures").mkdir(parents=True)  # what an older report left: replaced, not kept
    index = report.render(store, tmp_path / "figures")
    site = index.parent
    assert sorted(p.name for p in site.iterdir()) == ["00_data.html", "02_quality.html", "index.html"]
    for page in site.iterdir():
        for href in hrefs(page):
            assert (site / href).is_file(), f"{page.name} links to {href}, which is not there"
    landing = index.read_text(encoding="utf-8")
    assert landing.count("<p>not run yet</p>") == 4 and "No results yet" in landing and "no timing recorded" in landing
    assert '<span class="off" title="not run yet">01 generate</span>' in landing
    quality = (site / "02_quality.html").read_text(encoding="utf-8")
    pager = re.findall(r'<a [^>]*rel="(prev|next)"[^>]*>', quality)
    assert pager == ["prev"] and 'href="00_data.html"' in re.search(r'<a [^>]*rel="prev"[^>]*>', quality)[0]
    assert '<span class="tex">S ≥ T</span>' in quality and "<script" not in quality  # nothing to fetch
    first = {p.name: p.read_bytes() for p in site.iterdir()}
    report.render(store, tmp_path / "figures")
    assert {p.name: p.read_bytes() for p in site.iterdir()} == first  # deterministic
    (store.root / "notebooks" / "02_quality.ipynb").unlink()
    report.render(store, tmp_path / "figures")
    assert sorted(p.name for p in site.iterdir()) == ["00_data.html", "index.html"]  # no stale page


@pytest.mark.parametrize("tex, html", [
    ("M_D", '<span class="tex">M<sub>D</sub></span>'),
    (r"A \in \mathbb{R}^{r \times d}", '<span class="tex">A ∈ ℝ<sup>r × d</sup></span>'),
    (r"\frac{\bar P - 1}{n}", '<span class="tex">(P̄ − 1)/n</span>'),
    (r"x < \text{top-}p", '<span class="tex">x &lt; <span class="up">top-</span>p</span>'),
    (r"\underbrace{u}_{x} < 1", '<span class="tex raw" title="TeX source">\\underbrace{u}_{x} &lt; 1</span>'),
    ("u_{1", '<span class="tex raw" title="TeX source">u_{1</span>'),
])
def test_simple_tex_is_typeset_and_the_rest_stays_source(tex, html):
    assert report.math_html(tex, "span") == html


def walk(index: Path, stages: list[str], figures: dict[str, int]) -> None:
    """Open the landing page, click to every stage and back home; every image loads, nothing leaves the machine,
    and at 1366x768 no page scrolls sideways."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: the site cannot be tried in a browser here")
    from playwright.sync_api import sync_playwright

    requests = []
    images = "() => Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(index.as_uri())
            assert all(loaded := page.evaluate(images)) and loaded and page.evaluate(fits)  # the pipeline figure
            for i, stage in enumerate(stages):
                page.click(f'ol.cards a[href="{stage}.html"]')
                page.wait_for_load_state("load")
                assert page.url == (index.parent / f"{stage}.html").as_uri()
                assert page.get_attribute("nav.site a.current", "href") == f"{stage}.html"
                loaded = page.evaluate(images)
                assert all(loaded) and len(loaded) >= figures[stage], f"{stage}: {loaded}"
                assert page.evaluate(fits), f"{stage} scrolls sideways on a laptop screen"
                following = page.locator('nav.pager a[rel="next"]')
                assert following.count() == (i + 1 < len(stages))
                assert i + 1 == len(stages) or following.get_attribute("href") == f"{stages[i + 1]}.html"
                page.click("nav.site a.home")
                page.wait_for_load_state("load")
                assert page.url == index.as_uri()
        finally:
            browser.close()
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), sorted(set(requests))


def test_a_partial_site_reads_in_a_browser_offline(tmp_path):
    store = fake_run(tmp_path / "tiny", {"00_data": 1.5, "03_diversity": 2.0})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "pipeline.png").write_bytes(b64decode(PNG))
    walk(report.render(store, tmp_path / "figures"), ["00_data", "03_diversity"], {"00_data": 1, "03_diversity": 1})


@pytest.mark.slow
def test_the_site_of_a_finished_run_reads_in_a_browser_offline(reference, tmp_path):
    overrides, store, _, _ = reference
    copy = tmp_path / store.root.name  # the reference run is shared: the site is built in a copy
    shutil.copytree(store.root / "notebooks", copy / "notebooks")
    shutil.copy2(store.manifest_path, copy / "manifest.json")
    (copy / "05_evaluate").mkdir()
    for name in ("results.json", "results.md"):
        shutil.copy2(store.path("05_evaluate", name), copy / "05_evaluate" / name)
    index = report.render(RunStore(copy), load_config("tiny", overrides).figures)
    landing = index.read_text(encoding="utf-8")
    assert "not run yet" not in landing and 'class="verdict"' in landing
    figures = {s: report._figure_count(nbformat.read(copy / "notebooks" / f"{s}.ipynb", as_version=4))
               for s in STAGES}
    assert all(figures.values()), f"every stage's notebook shows a figure: {figures}"
    walk(index, list(STAGES), figures)
