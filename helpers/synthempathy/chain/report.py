"""runs/<profile>/report/: one static site per run, to read the chain in a browser, offline, from file://.

index.html shows the pipeline figure, the headline results (the verdict of every paired comparison, the
results figure, the tables of 05_evaluate/results.md) and the stage timings, with a card per stage; every
executed notebook (runs/<profile>/notebooks/NN_stage.ipynb) becomes NN_stage.html. Every page carries the
same bar (home, every stage, the current one marked) and previous/next links. Stages not run yet are named,
never linked.

The tool is nbconvert with its `lab` template, extended by a small template below: nbconvert is already a
dependency (papermill runs on the same Jupyter stack), is kept by the Jupyter project, works offline and
needs no Node, and its lab template renders outputs as JupyterLab does. Jupyter Book and Quarto would add a
build system (and Quarto a binary) for six pages. Figures are data URIs, so each page is one self-contained
file. The template drops the scripts the lab template loads from CDNs (require.js, MathJax, mermaid, the
widget manager): outputs here are text, HTML tables and PNGs, which need none of them. No TeX typesetter
ships offline here, so instead of MathJax the simple TeX of the notebooks' prose (sub- and superscripts,
Greek letters, relations, fractions, accents, text) is set as HTML and Unicode by math_html; a formula using
anything else is shown as its TeX source. The output depends only on the inputs (no timestamps).
"""

from __future__ import annotations

import html
import re
import shutil
from base64 import b64encode
from pathlib import Path

from .config import REPO_ROOT
from .store import PAPER_STAGES, STAGES, RunStore, read_json, write_text

CSS = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--accent:#0b5cad;--soft:#f4f6f8}
body{margin:0;color:var(--ink);font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
nav.site{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid var(--line)}
nav.site div,nav.pager,.page,body.jp-Notebook main{max-width:1080px;margin:0 auto;box-sizing:border-box}
nav.site div{display:flex;flex-wrap:wrap;align-items:center;gap:2px 4px;padding:6px 16px}
nav a,nav span{padding:3px 9px;border-radius:6px;font-size:14px;text-decoration:none;color:var(--accent)}
nav a:hover{background:var(--soft)}
nav.site .home{margin-right:auto;font-weight:600;color:var(--ink)}
nav.site .current{background:var(--accent);color:#fff}
nav.site .off{color:#9aa4ad}
nav.pager{display:flex;justify-content:space-between;padding:16px;border-top:1px solid var(--line);margin-top:24px}
.page{padding:8px 16px 24px}
h1{font-size:1.7em;margin:.6em 0 .2em} h2{margin-top:1.6em;border-bottom:1px solid var(--line)}
.lead{color:var(--muted);margin-top:0}
img{max-width:100%;height:auto}
figure{margin:12px 0}
.scroll{overflow-x:auto}
.page table{border-collapse:collapse;font-size:14px;margin:8px 0}
.page th,.page td{border:1px solid var(--line);padding:3px 8px;text-align:left;white-space:nowrap}
.page th{background:var(--soft)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:.7em;background:var(--accent);border-radius:2px;opacity:.6}
.verdict{background:var(--soft);border-left:4px solid var(--accent);padding:8px 12px;margin:8px 0}
ol.cards{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
ol.cards li{border:1px solid var(--line);border-radius:8px;padding:10px 14px}
ol.cards li.off{color:var(--muted);background:var(--soft)}
ol.cards a{font-weight:600;text-decoration:none;color:var(--accent)}
ol.cards p{margin:4px 0;font-size:14px}
details summary{cursor:pointer;color:var(--accent)}
.tex{font-family:"STIX Two Math","Cambria Math","DejaVu Serif",serif;font-style:italic;white-space:nowrap}
.tex .up{font-style:normal} .tex.raw{font:.9em monospace;color:#3b3b6d;white-space:normal}
div.tex{overflow-x:auto;padding:4px 0 4px 2em}
body.jp-Notebook{padding:0} body.jp-Notebook main{padding:8px 16px}
.jp-OutputArea-output,.jp-RenderedHTMLCommon{overflow-x:auto}
"""

# The lab template of nbconvert, less every script it would fetch from a CDN, plus the site's bar and CSS.
TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js %}{% endblock html_head_js %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block extra_css %}<style>{{ resources.site_css }}</style>{% endblock extra_css %}
{% block body_header %}<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.site_nav }}<main>{% endblock body_header %}
{% block body_footer %}</main>{{ resources.site_pager }}</body>{% endblock body_footer %}
"""


def render(store: RunStore, figures: Path) -> Path:
    """Build runs/<profile>/report/ from the executed notebooks, the manifest and 05's results; returns
    its index.html. The site is built beside the old one and then replaces it, so no stale page survives."""
    import nbformat

    notebooks = {s: nbformat.read(path, as_version=4) for s in STAGES
                 if (path := store.root / "notebooks" / f"{s}.ipynb").exists()}
    site, out, old = store.root / ".report.new", store.root / "report", store.root / ".report.old"
    for leftover in (site, old):
        shutil.rmtree(leftover, ignore_errors=True)
    site.mkdir(parents=True)
    exporter, pages = _exporter(), list(notebooks)
    for i, (stage, nb) in enumerate(notebooks.items()):
        resources = {"metadata": {"name": f"{_title(nb, stage)} · Synth-Empathy ({store.root.name})",
                                  "path": str(REPO_ROOT / "notebooks")},  # where the notebooks ran
                     "site_css": CSS, "site_nav": _nav(store.root.name, pages, stage),
                     "site_pager": _pager(pages, i)}
        write_text(site / f"{stage}.html", exporter.from_notebook_node(nb, resources=resources)[0])
    write_text(site / "index.html", _landing(store, figures, notebooks))
    if out.exists():
        out.rename(old)
    site.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out / "index.html"


def _exporter():
    """nbconvert's HTMLExporter on the lab template below, formulas set by math_html, prompts left out."""
    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class Renderer(IPythonRenderer):
        def inline_math(self, body: str) -> str:
            return math_html(body, "span")

        def block_math(self, body: str) -> str:
            return math_html(body.strip(), "div")

    class Exporter(HTMLExporter):
        @pass_context  # jinja2 hands the filter its context, as nbconvert's own does
        def markdown2html(self, context, source):
            cell, path = context.get("cell", {}), context.get("resources", {}).get("metadata", {}).get("path", "")
            renderer = Renderer(escape=False, attachments=cell.get("attachments", {}), embed_images=True,
                                path=path, anchor_link_text=self.anchor_link_text)
            return MarkdownWithMath(renderer=renderer).render(source)

    return Exporter(template_name="lab", template_file="site.html.j2", embed_images=True,
                    exclude_input_prompt=True, exclude_output_prompt=True,
                    extra_loaders=[DictLoader({"site.html.j2": TEMPLATE})])


# The TeX of the notebooks' prose, as Unicode and <sub>/<sup>; a formula using anything else stays TeX source.
TEX_SYMBOLS = {"alpha": "α", "kappa": "κ", "cdot": "·", "times": "×", "ge": "≥", "le": "≤", "ll": "≪", "in": "∈",
               "sim": "∼", "mid": "∣", "dots": "…", "sum": "\u2009∑", "lVert": "‖", "rVert": "‖", "subseteq": "⊆",
               "qquad": "\u2003\u2003", "quad": "\u2003", "{": "{", "}": "}", " ": " ", ";": " ", ",": "\u2009",
               "big": "", "Big": ""}
TEX_WORDS = {"arg": "arg\u2009", "max": "max", "min": "min", "cos": "cos", "log": "log", "exp": "exp"}
TEX_ACCENTS = {"hat": "\u0302", "bar": "\u0304"}
TEX_LETTERS = {"mathbb": {"R": "ℝ", "N": "ℕ"}, "mathcal": {"U": "𝒰"}}


def math_html(tex: str, tag: str) -> str:
    """A formula as HTML in `tag` ("span" inline, "div" displayed): simple TeX typeset with Unicode, the rest
    shown as its TeX source (no typesetter runs offline)."""
    tokens, pos = re.findall(r"\\[A-Za-z]+|\\.|[{}_^]|\s+|[^\\{}_^\s]", tex), 0

    def atom(arg: bool = False) -> str:
        nonlocal pos
        while arg and pos < len(tokens) and tokens[pos].isspace():
            pos += 1
        if pos == len(tokens) or tokens[pos] in "}_^":
            raise ValueError(tex)
        t, name = tokens[pos], tokens[pos][1:]
        pos += 1
        if t == "{":
            return seq("}")
        if not t.startswith("\\"):
            return "−" if t == "-" else html.escape(t)
        if name in TEX_SYMBOLS:
            return TEX_SYMBOLS[name]
        if name in TEX_WORDS or name == "text":
            return f'<span class="up">{TEX_WORDS.get(name) or atom(True).replace("−", "-")}</span>'
        if name in TEX_ACCENTS and len(base := atom(True)) == 1:
            return base + TEX_ACCENTS[name]
        if name in TEX_LETTERS and (letter := atom(True)) in TEX_LETTERS[name]:
            return TEX_LETTERS[name][letter]
        if name == "frac":
            parts = [atom(True), atom(True)]
            return "/".join(f"({p})" if re.search(r"[\s+−·]", re.sub("<[^>]+>", "", p)) else p for p in parts)
        raise ValueError(tex)

    def seq(until: str | None = None) -> str:
        nonlocal pos
        out = []
        while pos < len(tokens) and tokens[pos] != until:
            if tokens[pos] in "_^":
                sub = "sub" if tokens[pos] == "_" else "sup"
                pos += 1
                out.append(f"<{sub}>{atom(True)}</{sub}>")
            else:
                out.append(atom())
        if until and pos == len(tokens):
            raise ValueError(tex)
        pos += 1
        return "".join(out)

    try:
        return f'<{tag} class="tex">{seq()}</{tag}>'
    except ValueError:
        return f'<{tag} class="tex raw" title="TeX source">{html.escape(tex)}</{tag}>'


def _title(nb, stage: str) -> str:
    """The notebook's first heading ("01 · Generating synthetic ..."), else the stage's name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and (m := re.search(r"^#\s+(.+)$", cell.source, re.M)):
            return m.group(1).strip()
    return stage


def _nav(profile: str, pages: list[str], current: str | None) -> str:
    links = [f'<a class="home" href="index.html">Synth-Empathy · {html.escape(profile)}</a>']
    for s in STAGES:
        label = s.replace("_", " ")
        if s not in pages:
            links.append(f'<span class="off" title="not run yet">{label}</span>')
        else:
            here = ' class="current" aria-current="page"' if s == current else ""
            links.append(f'<a href="{s}.html"{here}>{label}</a>')
    return f'<nav class="site"><div>{"".join(links)}</div></nav>'


def _pager(pages: list[str], i: int) -> str:
    prev = f'<a rel="prev" href="{pages[i - 1]}.html">← {pages[i - 1]}</a>' if i else '<span></span>'
    nxt = f'<a rel="next" href="{pages[i + 1]}.html">{pages[i + 1]} →</a>' if i + 1 < len(pages) else '<span></span>'
    return f'<nav class="pager">{prev}<a href="index.html">Home</a>{nxt}</nav>'


def _img(path: Path, alt: str) -> str:
    data = b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></figure>'


def _pipeline_figure(figures: Path) -> str:
    """figures/pipeline.png (notebook 00 draws it), else drawn here for the page alone."""
    alt = "The chain: one box per notebook, what it does and the files it hands on"
    if (path := figures / "pipeline.png").exists():
        return _img(path, alt)
    import tempfile

    from ..plots import pipeline, plt

    with tempfile.TemporaryDirectory() as scratch:
        plt.close(pipeline(path := Path(scratch) / "pipeline.png"))
        return _img(path, alt)


def _results(store: RunStore, figures: Path) -> str:
    path = store.root / "05_evaluate" / "results.json"
    if not path.exists():
        return '<p class="lead">No results yet: stage 05_evaluate has not run.</p>'
    from ..lib.results import verdict

    results = read_json(path)
    pairs = [key.split(" - ") for key in results.get("comparisons", {})]
    parts = [f'<p class="verdict">{html.escape(verdict(results, x, y))}</p>' for x, y in pairs]
    if (fig := figures / "05_results.png").exists():
        parts.append(_img(fig, "Every figure per arm with its 95% interval"))
    md = store.root / "05_evaluate" / "results.md"
    if md.exists():
        import mistune

        tables = mistune.html(md.read_text(encoding="utf-8"))
        tables = re.sub(r"<h1>.*?</h1>\s*", "", tables, count=1).replace("<h2", "<h3").replace("</h2>", "</h3>")
        tables = tables.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")
        parts.append(f"<details><summary>Every table of results.md</summary>{tables}</details>")
    return "".join(parts)


def _figure_count(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def _landing(store: RunStore, figures: Path, notebooks: dict) -> str:
    profile, timings = store.root.name, store.manifest().get("stages", {})
    seconds = {s: timings[s]["seconds"] for s in STAGES if isinstance(timings.get(s, {}).get("seconds"), int | float)}
    cards = []
    for s in STAGES:
        desc = html.escape(PAPER_STAGES[s])
        if s in notebooks:
            n, t = _figure_count(notebooks[s]), (f"{seconds[s]:.1f} s" if s in seconds else "no timing recorded")
            cards.append(f'<li><a href="{s}.html">{html.escape(_title(notebooks[s], s))}</a><p>{desc}</p>'
                         f'<p class="lead">{t} · {n} figure{"s" * (n != 1)}</p></li>')
        else:
            status = "its executed notebook is missing" if s in seconds else "not run yet"
            cards.append(f'<li class="off"><b>{s}</b><p>{desc}</p><p>{status}</p></li>')
    longest = max(seconds.values(), default=0) or 1
    rows = "".join(f'<tr><td>{s}</td><td>{html.escape(PAPER_STAGES[s])}</td><td class="num">{seconds[s]:.1f}</td>'
                   f'<td><span class="bar" style="width:{120 * seconds[s] / longest:.0f}px"></span></td></tr>'
                   for s in STAGES if s in seconds)
    timing = (f'<div class="scroll"><table><tr><th>stage</th><th>paper stage</th><th>seconds</th><th></th></tr>{rows}'
              f'<tr><th colspan="2">total</th><th class="num">{sum(seconds.values()):.1f}</th><th></th></tr></table>'
              '</div>') if seconds else '<p class="lead">No stage has run yet.</p>'
    body = f"""<h1>Synth-Empathy reproduction</h1>
<p class="lead">Profile <code>{html.escape(profile)}</code>: {len(notebooks)} of {len(STAGES)} stages executed.
Every stage is a notebook; its executed copy is a page of this site.</p>
<h2>The chain</h2>{_pipeline_figure(figures)}
<h2>Headline results</h2>{_results(store, figures)}
<h2>Stages</h2><ol class="cards">{"".join(cards)}</ol>
<h2>Stage timings</h2>{timing}"""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Synth-Empathy · {html.escape(profile)}</title><style>{CSS}</style></head>
<body>{_nav(profile, list(notebooks), None)}<main class="page">{body}</main></body></html>
"""
