"""The human rating kit: blinded A/B sheets for people to fill, and the scoring of the filled sheets.

The paper's human evaluation shows annotators two systems' replies to the same history and asks which is
better (win / tie / lose) on naturalness, coherence and empathy; the authors' group reports the shares and
Fleiss' kappa across annotators (three categories: lose, tie, win). `export` writes that study for a run:

- sheet.csv: one row per (history, pair of arms), the two replies as Reply A and Reply B. Which arm is A is
  drawn per item from a seeded generator, balanced so that each arm is A on half of a pair's items, and the
  rows of all pairs are shuffled together; item ids are opaque. Nothing in the sheet names an arm.
- sheet.html: the same sheet as one offline page (no external files) with radio buttons and a "Save CSV"
  button that downloads the filled sheet in exactly sheet.csv's format.
- key.json: which arm was A and B for every item; kept away from the annotators.
- README.txt: what the annotators do and what the criteria mean.

`score` reads any number of filled sheets (one per annotator), checks them (a bad cell is a SheetError naming
the file, the data row and the column), unblinds them with the key and reports, per pair and criterion, the
shares of x winning, tying and losing against y with 95% bootstrap intervals over the items, and Fleiss'
kappa. `judge_sheets` fills sheets with the LLM A/B judge's verdicts (each of the two orders it judges is one
annotator): the same scoring then shows the judge's results, and kappa between the orders its position bias.

(Over 300 lines on purpose: the offline form's page and script live here, beside the CSV format they write.)
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..chain.store import JsonlCache, atomic_path, hash_obj, read_json, read_jsonl, write_json, write_text
from ..lib.arms import BASE, prediction_name
from ..lib.backends import derived_seed
from ..lib.dialogue import transcript
from ..lib.judging import CRITERIA
from ..lib.pairwise import judge_pairs, percent, share_ci
from ..lib.stage import Stage

SCALE = ("a", "b", "tie")
TEXT_COLUMNS = ("history", "response_a", "response_b")
COLUMNS = ("item", *TEXT_COLUMNS, "annotator", *CRITERIA)
REQUIRED = ("item", "annotator", *CRITERIA)  # the text columns are for reading; a sheet may drop them
DEFAULT_ITEMS = 20  # histories per pair when the profile sets no ab_records
OUTCOMES = {"win": 1, "tie": 0, "lose": -1}  # x's outcome against y; Fleiss' categories in this order
JUDGE_ORDERS = ("judge (x as Reply A)", "judge (y as Reply A)")  # the annotators of judge_sheets, by order

# What each criterion asks, in the annotators' words (README.txt and the form); the rubric the LLM judges
# read is lib/prompts.yaml's, these say the same in plain terms.
CRITERIA_HELP = {
    "naturalness": "Does the reply read like something a person would say: fluent, not repetitive, not odd?",
    "coherence": "Does the reply follow from the conversation: on topic, answering what the Speaker said?",
    "empathy": "Does the reply show that the Listener understood how the Speaker feels, and respond to it?",
}
assert set(CRITERIA_HELP) == set(CRITERIA)


class SheetError(ValueError):
    """A filled sheet that cannot be scored; the message names the file, the data row and the column."""

    def __init__(self, path: str | os.PathLike, row: int | None, column: str | None, problem: str):
        self.path, self.row, self.column, self.problem = str(path), row, column, problem
        at = [f"data row {row} (counted from 1 below the header)" if row else "",
              "header row" if row == 0 else "", f"column '{column}'" if column else ""]
        where = ", ".join(a for a in at if a)
        super().__init__(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


# -- Fleiss' kappa -------------------------------------------------------------------------------------------

def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa of an (items x categories) table of counts: row i says how many of the n raters put
    item i in each category, and every row sums to the same n >= 2.

    With p_j the share of all ratings in category j, P_i = (sum_j n_ij^2 - n) / (n (n - 1)) the agreement
    on item i, P = mean_i P_i and P_e = sum_j p_j^2 the agreement expected by chance:
    kappa = (P - P_e) / (1 - P_e) (Fleiss 1971). 1 is perfect agreement, 0 chance level, below 0 worse than
    chance. None when undefined: every rating in one category (P_e = 1).
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("fleiss_kappa needs a non-empty (items x categories) table of counts")
    n = x.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings per item, "
                         f"got {sorted(set(n.tolist()))}")
    n = n[0]
    agreement = ((x ** 2).sum(axis=1) - n) / (n * (n - 1))
    p = x.sum(axis=0) / x.sum()
    chance = float((p ** 2).sum())
    if np.isclose(chance, 1.0):
        return None
    return float((agreement.mean() - chance) / (1 - chance))


# -- export --------------------------------------------------------------------------------------------------

def _predictions(store, arm: str, seed: int | None) -> list[dict]:
    """One arm's evaluation replies (the base model has no training seed)."""
    name = prediction_name(arm, None if arm == BASE else seed)
    path = store.require("05_evaluate", f"predictions/{name}.jsonl")
    return read_jsonl(path, ("id", "history", "prediction"))


def _fingerprint(text: str) -> str:
    """A reply's identity that survives a spreadsheet's re-wrapping of whitespace."""
    return hash_obj(" ".join(text.split()))[:12]


def _pair_items(store, x: str, y: str, n: int, seed: int, rng: random.Random) -> list[dict]:
    """The first n histories of one pair, each with its replies as A and B; each arm is A on half of them."""
    rows_x, rows_y = _predictions(store, x, seed)[:n], _predictions(store, y, seed)[:n]
    if [r["id"] for r in rows_x] != [r["id"] for r in rows_y]:
        raise ValueError(f"the predictions of {x} and {y} answer different evaluation records; "
                         "rerun 05_evaluate")
    x_first = [True] * (len(rows_x) - len(rows_x) // 2) + [False] * (len(rows_x) // 2)
    rng.shuffle(x_first)  # balanced, so a rater's taste for position A cannot favour one arm
    items = []
    for rx, ry, xa in zip(rows_x, rows_y, x_first):
        (a, ra), (b, rb) = ((x, rx), (y, ry)) if xa else ((y, ry), (x, rx))
        texts = {"response_a": ra["prediction"], "response_b": rb["prediction"]}
        key = {"pair": f"{x} vs {y}", "x": x, "y": y, "a": a, "b": b, "id": rx["id"], "train_seed": seed,
               "texts": {c: _fingerprint(t) for c, t in texts.items()}}
        items.append({"history": transcript(rx["history"]), **texts, "key": key})
    return items


def csv_text(rows: Sequence[dict]) -> str:
    """Sheet rows as CSV: every field quoted and CRLF line ends, which is what sheet.html writes too, byte
    for byte."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows([[row.get(c, "") for c in COLUMNS] for row in rows])
    return buf.getvalue()


def write_sheet(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Sheet rows ({column: value}, missing columns empty) as a CSV file; bytes, so no newline rewriting."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(csv_text(rows).encode("utf-8"))
    return Path(path)


def _write_new_key(path: Path, key: dict) -> None:
    """Refuse to replace a different key: sheets already handed out would be unblinded with the wrong one."""
    if path.exists() and read_json(path) != key:
        raise FileExistsError(f"{path} holds the key of another export (other seed, items or pairs); sheets "
                              "filled from it need it. Export to another folder, or delete it if none went "
                              "out.")
    write_json(path, key)


EVALUATION = Stage("05_evaluate")  # the sheets are written from, and into, the evaluation's run folder


@EVALUATION.step
def export(cfg, store, out_dir: str | os.PathLike, n: int | None = None, seed: int | None = None,
           pairs: Sequence[tuple[str, str]] | None = None) -> dict:
    """Write sheet.csv, sheet.html, README.txt and key.json for n evaluation histories (default
    cfg.ab_records, else 20; at most as many as were evaluated) of every (x, y) pair (default
    cfg.ab_comparisons), with the replies of the first training seed. `seed` (default cfg.seed) fixes the
    arm order and the row order: same seed, same bytes. Returns the paths written and the counts."""
    out, seed = Path(out_dir), cfg.seed if seed is None else seed
    pairs = [tuple(p) for p in (cfg.ab_comparisons if pairs is None else pairs)]
    if not pairs:
        raise ValueError("no pairs of arms to compare: the profile's ab_pairs is empty; give pairs=[(x, y)]")
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1 (histories per pair), got {n}")
    n = n or cfg.ab_records or DEFAULT_ITEMS
    rng = random.Random(derived_seed("annotate", seed))
    items = [it for x, y in pairs for it in _pair_items(store, x, y, n, cfg.train_seeds[0], rng)]
    if not items:
        raise ValueError(f"{store.root}: the evaluation predictions are empty; rerun 05_evaluate")
    rng.shuffle(items)  # the pairs interleaved: a row's place says nothing of its pair
    width = len(str(len(items)))
    for i, it in enumerate(items, 1):
        it["item"] = f"item-{i:0{width}d}"
    key = {"about": "The unblinding key of sheet.csv: keep it away from the annotators.",
           "profile": cfg.profile, "seed": seed, "train_seed": cfg.train_seeds[0], "criteria": list(CRITERIA),
           "scale": list(SCALE), "pairs": [f"{x} vs {y}" for x, y in pairs],
           "items": {it["item"]: it["key"] for it in items}}
    rows = [{c: it[c] for c in ("item", *TEXT_COLUMNS)} for it in items]
    _write_new_key(out / "key.json", key)
    paths = {"key": out / "key.json", "sheet": write_sheet(out / "sheet.csv", rows),
             "html": write_text(out / "sheet.html", sheet_html(rows)),
             "readme": write_text(out / "README.txt", README)}
    return {**paths, "items": len(rows), "per_pair": len(rows) // len(pairs), "pairs": key["pairs"]}


README = f"""Rating sheet: which of two replies is better?

Each item is the start of a conversation between a Speaker, who tells about something that happened to
them, and a Listener. The last turn is the Speaker's. Two listeners answer it: Reply A and Reply B. For every
item and every criterion below, choose which reply is better: a (Reply A), b (Reply B) or tie (equally good,
or equally bad). The replies come from different systems in a random order: which one is A says nothing about
its system. Rate each criterion on its own; a reply can be more natural and less empathetic. If the two
replies are the same text, choose tie. Replies may stop in mid-sentence (they were cut at a fixed length):
judge what is there.

Criteria
{chr(10).join(f"  {c:<12} {text}" for c, text in CRITERIA_HELP.items())}

Fill the sheet in one of two ways
  1. Open sheet.html in a web browser (it works offline and sends nothing anywhere). Write your name,
     choose a, tie or b for every criterion of every item, and press "Save CSV". The browser downloads
     sheet-<your name>.csv: hand that file in. (The page keeps your choices if you reload it in the same
     browser.)
  2. Or open sheet.csv in a spreadsheet. Write your name in the annotator column of every row, and a, b or
     tie in the {", ".join(CRITERIA)} columns. Leave the item, history and reply columns as they
     are. Save as CSV (comma-separated, UTF-8) under a name of your own, and hand that file in.

Please rate on your own, and talk about the items with the other annotators only after everyone has handed
in.
"""


# -- the offline form ----------------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
.item { border: 1px solid #ccc; border-radius: 6px; padding: .6rem 1rem; margin: 1rem 0; }
.item.done { border-color: #6a6; }
pre { white-space: pre-wrap; font: inherit; background: #f6f6f6; padding: .5rem; margin: .3rem 0; }
.replies { display: flex; gap: 1rem; } .replies > div { flex: 1; background: #eef3fb; padding: .5rem; }
.replies p { white-space: pre-wrap; }
td, th { padding: .15rem .6rem; text-align: left; } dt { font-weight: bold; }
.bar { position: sticky; bottom: 0; background: #fff; padding: .6rem 0; border-top: 1px solid #ccc; }
"""

# Builds the CSV from the embedded rows (not from the page text) so the texts are exactly the sheet's.
SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("sheet-data").textContent);
  var rows = data.rows, name = document.getElementById("annotator");
  var saved = "synthempathy-annotate-" + data.id;
  function picked(item, c) {
    var r = document.querySelector('input[name="' + item + '|' + c + '"]:checked');
    return r ? r.value : "";
  }
  function quote(s) { return '"' + String(s).replace(/"/g, '""') + '"'; }
  function rated(row) { return data.criteria.every(function (c) { return picked(row.item, c) !== ""; }); }
  function cell(row, col, who) {
    if (col === "annotator") { return who; }
    return data.criteria.indexOf(col) >= 0 ? picked(row.item, col) : row[col];
  }
  function sheet(who) {
    var lines = [data.columns.map(quote).join(",")];
    rows.filter(rated).forEach(function (row) {
      lines.push(data.columns.map(function (col) { return quote(cell(row, col, who)); }).join(","));
    });
    return lines.join("\\r\\n") + "\\r\\n";
  }
  function remember() {
    var done = rows.filter(rated).length, state = {name: name.value, picks: {}};
    rows.forEach(function (row) {
      document.getElementById(row.item).classList.toggle("done", rated(row));
      data.criteria.forEach(function (c) { state.picks[row.item + "|" + c] = picked(row.item, c); });
    });
    document.getElementById("progress").textContent = done + " of " + rows.length + " items rated";
    try { localStorage.setItem(saved, JSON.stringify(state)); } catch (e) { /* storage off: not kept */ }
  }
  function restore() {
    var state = null;
    try { state = JSON.parse(localStorage.getItem(saved) || "null"); } catch (e) { state = null; }
    if (!state) { return; }
    name.value = state.name || "";
    Object.keys(state.picks || {}).forEach(function (k) {
      var r = document.querySelector('input[name="' + k + '"][value="' + state.picks[k] + '"]');
      if (r) { r.checked = true; }
    });
  }
  function save() {
    var who = name.value.trim(), left = rows.length - rows.filter(rated).length;
    if (!who) { alert("Please write your name first."); name.focus(); return; }
    if (left === rows.length) { alert("Nothing is rated yet."); return; }
    var ask = left + " item(s) are not fully rated and will be left out of the file. Save anyway?";
    if (left && !confirm(ask)) { return; }
    var url = URL.createObjectURL(new Blob([sheet(who)], {type: "text/csv;charset=utf-8"}));
    var link = document.createElement("a");
    link.href = url;
    link.download = "sheet-" + who.replace(/[^A-Za-z0-9_-]+/g, "_") + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 5000);
  }
  restore();
  remember();
  document.addEventListener("change", remember);
  name.addEventListener("input", remember);
  document.getElementById("save").addEventListener("click", save);
})();
"""


def _item_html(row: dict) -> str:
    item, esc = row["item"], html.escape
    choices = "".join(
        f"<tr><th>{c}</th>" + "".join(
            f'<td><label><input type="radio" name="{item}|{c}" value="{v}"> {label}</label></td>'
            for v, label in (("a", "A better"), ("tie", "tie"), ("b", "B better"))) + "</tr>"
        for c in CRITERIA)
    return (f'<div class="item" id="{item}"><h2>{item}</h2><pre>{esc(row["history"])}</pre>'
            f'<div class="replies"><div><b>Reply A</b><p>{esc(row["response_a"])}</p></div>'
            f'<div><b>Reply B</b><p>{esc(row["response_b"])}</p></div></div><table>{choices}</table></div>')


def sheet_html(rows: Sequence[dict]) -> str:
    """The sheet as one self-contained page: every item with a/tie/b per criterion, and "Save CSV"."""
    data = {"id": hash_obj(rows)[:12], "columns": list(COLUMNS), "criteria": list(CRITERIA),
            "rows": [{c: r[c] for c in ("item", *TEXT_COLUMNS)} for r in rows]}
    # "<" only occurs inside JSON strings: as \u003c no reply can end the script element or open a comment
    payload = json.dumps(data, ensure_ascii=True).replace("<", "\\u003c")
    help_ = "".join(f"<dt>{c}</dt><dd>{html.escape(t)}</dd>" for c, t in CRITERIA_HELP.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Which reply is better?</title><style>{STYLE}</style></head>
<body>
<h1>Which reply is better?</h1>
<p>Each item is the start of a conversation; the last turn is the Speaker's. Two listeners answer it. For
every criterion choose the better reply, or tie (equally good, or equally bad; always tie when the texts are
the same). Which reply is A is random. Replies may stop in mid-sentence: judge what is there.</p>
<dl>{help_}</dl>
<p><label>Your name: <input id="annotator" autocomplete="name"></label></p>
{chr(10).join(_item_html(r) for r in rows)}
<div class="bar"><button id="save" type="button">Save CSV</button> <span id="progress"></span></div>
<script type="application/json" id="sheet-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""


# -- reading filled sheets -----------------------------------------------------------------------------------

def _records(path: Path) -> list[list[str]]:
    """The CSV records of a sheet (a record may span lines); a spreadsheet's BOM is dropped."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SheetError(path, None, None, f"not UTF-8 text (byte {raw[e.start]:#x} on line {line} of the "
                                           "file); save the sheet as 'CSV UTF-8'") from None
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise SheetError(path, None, None, f"not a readable CSV file ({e})") from None


def _header(path: Path, header: list[str]) -> dict[str, int]:
    """{column name: position}, names compared without case and surrounding spaces."""
    names = [h.strip().lower() for h in header]
    for i, h in enumerate(names):
        if h and h in names[:i]:
            raise SheetError(path, 0, h, "appears twice in the header")
    semicolons = len(names) == 1 and ";" in names[0]
    hint = " (the file is separated by ';': save it comma-separated)" if semicolons else ""
    for c in REQUIRED:
        if c not in names:
            raise SheetError(path, 0, c, f"is missing; a sheet needs the columns {', '.join(REQUIRED)}{hint}")
    return {h: i for i, h in enumerate(names) if h}


def _rating(path: Path, row: int, column: str, value: str) -> str:
    v = value.strip().lower()
    if v not in SCALE:
        shown = "is empty" if not v else f"holds {value.strip()!r}, which is not a rating"
        raise SheetError(path, row, column, f"{shown}: write a (Reply A is better), b (Reply B is better) "
                                            "or tie")
    return v


def _check_texts(path: Path, row: int, cells: dict, key_item: dict) -> None:
    """The replies in the row must be the key's (catches a sheet scored with the key of another export)."""
    for c, fp in key_item.get("texts", {}).items():
        if c in cells and _fingerprint(cells[c]) != fp:
            raise SheetError(path, row, c, f"is not the reply of {cells['item'].strip()} that the key was "
                                           "made for: a sheet from another export, or a reply changed (by "
                                           "hand, or by a spreadsheet reading it as a formula)? Copy it back "
                                           "from sheet.csv")


def read_sheet(path: str | os.PathLike, key: dict) -> dict:
    """A filled sheet checked against the key: {path, annotator, first_row, ratings: {item: {criterion:
    a|b|tie}}}. Wholly empty rows are skipped but counted, so a row number is the spreadsheet's minus one."""
    path = Path(path)
    records = _records(path)
    if not records:
        raise SheetError(path, None, None, "the file is empty; expected a header and one row per rated item")
    columns = _header(path, records[0])
    annotator, first_row, ratings = None, {}, {}
    for row, record in enumerate(records[1:], 1):
        if not any(cell.strip() for cell in record):
            continue
        cells = {c: record[i] if i < len(record) else "" for c, i in columns.items()}
        item = cells["item"].strip()
        if not item:
            raise SheetError(path, row, "item", "is empty: every row needs the id of the item it rates")
        if item not in key["items"]:
            raise SheetError(path, row, "item", f"names item {item!r}, which is not in the key "
                                                f"({len(key['items'])} items): a row from another sheet, or "
                                                "an edited id?")
        if item in first_row:
            raise SheetError(path, row, "item", f"{item} was rated already in data row {first_row[item]}: "
                                                "keep one row per item")
        who = cells["annotator"].strip()
        if not who:
            raise SheetError(path, row, "annotator", "is empty: write the annotator's name in every row")
        if annotator is not None and who != annotator:
            raise SheetError(path, row, "annotator", f"says {who!r} but data row {min(first_row.values())} "
                                                     f"says {annotator!r}: one sheet holds one annotator's "
                                                     "ratings")
        _check_texts(path, row, cells, key["items"][item])
        annotator, first_row[item] = who, row
        ratings[item] = {c: _rating(path, row, c, cells[c]) for c in CRITERIA}
    if not ratings:
        raise SheetError(path, None, None, "no rated rows below the header")
    return {"path": str(path), "annotator": annotator, "first_row": min(first_row.values()),
            "ratings": ratings}


def read_key(path: str | os.PathLike) -> dict:
    """The unblinding key that `export` wrote beside the sheet."""
    try:
        key = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        key = None
    if not isinstance(key, dict) or not isinstance(key.get("items"), dict) or "pairs" not in key:
        raise ValueError(f"{path}: not a key written by `annotate export` (the key.json beside sheet.csv)")
    return key


def _check_annotators(sheets: list[dict]) -> None:
    seen: dict[str, str] = {}
    for s in sheets:
        who = s["annotator"].casefold()
        if who in seen:
            raise SheetError(s["path"], s["first_row"], "annotator",
                             f"annotator {s['annotator']!r} also filled {seen[who]}: each annotator hands "
                             "in one sheet (merge them, or if they are two people give them distinct names)")
        seen[who] = s["path"]


# -- scoring -------------------------------------------------------------------------------------------------

def _outcome(rating: str, key_item: dict) -> int:
    """A rating read for x: +1 x better, 0 tie, -1 y better."""
    if rating == "tie":
        return 0
    return 1 if key_item[rating] == key_item["x"] else -1


def _criterion_summary(by_item: dict[str, dict[str, int]], annotators: list[str], n_resamples: int,
                       seed: int) -> dict:
    """Shares of one pair and criterion. Each item's share is the mean over the annotators who rated it, so
    every item counts once; the intervals resample the items. Kappa uses the items every annotator rated."""
    items = sorted(by_item)
    ratings = [list(by_item[i].values()) for i in items]
    out = {name: share_ci(np.array([np.mean([v == value for v in r]) for r in ratings]), n_resamples, seed)
           for name, value in OUTCOMES.items()}
    out["net"] = share_ci(np.array([np.mean(r) for r in ratings]), n_resamples, seed)
    full = [r for r in ratings if len(r) == len(annotators)]
    counts = [[r.count(value) for value in OUTCOMES.values()] for r in full]
    kappa = fleiss_kappa(counts) if len(annotators) >= 2 and full else None
    out.update({"items": len(items), "ratings": sum(map(len, ratings)),
                "kappa": None if kappa is None else round(kappa, 4),
                "kappa_items": 0 if kappa is None else len(full)})
    return out


def score(sheet_paths: Sequence[str | os.PathLike], key_path: str | os.PathLike, n_resamples: int = 1000,
          seed: int = 0) -> dict:
    """Unblind and score filled sheets. Per pair "x vs y" and criterion: win / tie / lose of x and net =
    win - lose, each [share, low, high] with a 95% bootstrap interval over the items (resampled with
    `seed`), and Fleiss' kappa across the annotators (categories x better / tie / y better; None with one
    annotator, or when every rating is the same)."""
    if not sheet_paths:
        raise ValueError("score needs at least one filled sheet")
    key = read_key(key_path)
    sheets = [read_sheet(p, key) for p in sheet_paths]
    _check_annotators(sheets)
    ratings: dict[str, dict] = {}  # pair -> criterion -> item -> annotator -> x's outcome
    for s in sheets:
        for item, row in s["ratings"].items():
            k = key["items"][item]
            for c, r in row.items():
                by_item = ratings.setdefault(k["pair"], {}).setdefault(c, {})
                by_item.setdefault(item, {})[s["annotator"]] = _outcome(r, k)
    pairs = {}
    for pair in key["pairs"]:
        if pair not in ratings:
            continue
        who = sorted({a for by_item in ratings[pair].values() for r in by_item.values() for a in r})
        x, y = pair.split(" vs ")
        pairs[pair] = {"x": x, "y": y, "annotators": who,
                       "key_items": sum(k["pair"] == pair for k in key["items"].values()),
                       "criteria": {c: _criterion_summary(ratings[pair][c], who, n_resamples, seed)
                                    for c in CRITERIA}}
    return {"sheets": [s["path"] for s in sheets], "annotators": [s["annotator"] for s in sheets],
            "n_resamples": n_resamples, "seed": seed, "pairs": pairs}


def markdown(scores: dict) -> str:
    """The scores as one markdown table per pair: shares in % with 95% intervals, and Fleiss' kappa."""
    parts = []
    for pair, p in scores["pairs"].items():
        first = next(iter(p["criteria"].values()))
        lines = [f"**{pair}**: {first['items']} of {p['key_items']} items rated by "
                 f"{len(p['annotators'])} annotator(s) ({', '.join(p['annotators'])}); % with 95% intervals "
                 f"over the items, each item the mean of its annotators. Win: {p['x']}'s reply rated better; "
                 f"lose: {p['y']}'s. Net = win - lose. Kappa: Fleiss' across the annotators on the items all "
                 "of them rated (x better / tie / y better); n/a with one annotator or when every rating is "
                 "the same.", "",
                 "| criterion | win | tie | lose | net | Fleiss' kappa (items) |",
                 "|---|---|---|---|---|---|"]
        for c, s in p["criteria"].items():
            kappa = "n/a" if s["kappa"] is None else f"{s['kappa']:.3f} ({s['kappa_items']})"
            shares = " | ".join(percent(s[k]) for k in ("win", "tie", "lose", "net"))
            lines.append(f"| {c} | {shares} | {kappa} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) if parts else "No pair of the key was rated."


# -- the LLM judge as annotators -----------------------------------------------------------------------------

def _judged_items(store, key: dict, items: list[str]) -> list[dict]:
    """The judge's view of one pair's sheet items: {id (the sheet's item), history (turns), x, y}."""
    k0 = key["items"][items[0]]
    replies = {arm: {r["id"]: r for r in _predictions(store, arm, k0["train_seed"])}
               for arm in (k0["x"], k0["y"])}
    out = []
    for item in items:
        k = key["items"][item]
        rx, ry = replies[k["x"]][k["id"]], replies[k["y"]][k["id"]]
        out.append({"id": item, "history": rx["history"], "x": rx["prediction"], "y": ry["prediction"]})
    return out


@EVALUATION.step
def judge_sheets(cfg, store, out_dir: str | os.PathLike, judge=None, progress: bool = True) -> list[Path]:
    """Fill the sheets of an export (out_dir/key.json) with the LLM A/B judge's verdicts: one sheet per
    order it judged (x as Reply A, y as Reply A), in out_dir/judge/. Verdicts come from 05_evaluate's
    pairwise cache when that stage judged the same replies, else from `judge` (default: the profile's).
    Scored together, kappa between the two sheets is the judge's agreement with itself when the replies swap
    places."""
    from ..lib import judging

    out = Path(out_dir)
    key = read_key(out / "key.json")
    judge = judge or judging.make_judge(cfg)
    cache = JsonlCache(store.work_dir("05_evaluate") / "pairwise.cache.jsonl")
    by_pair: dict[str, list[str]] = {}
    for item, k in key["items"].items():
        by_pair.setdefault(k["pair"], []).append(item)
    sheets: dict[str, list[dict]] = {who: [] for who in JUDGE_ORDERS}
    for items in by_pair.values():
        asked = _judged_items(store, key, items)
        for it, verdicts in zip(asked, judge_pairs(judge, asked, cache, progress)):
            k = key["items"][it["id"]]
            x_is_a = k["a"] == k["x"]
            letter = {"x": "a" if x_is_a else "b", "y": "b" if x_is_a else "a", "tie": "tie"}
            a, b = (it["x"], it["y"]) if x_is_a else (it["y"], it["x"])
            shown = {"item": it["id"], "history": transcript(it["history"]), "response_a": a, "response_b": b}
            for order, who in enumerate(JUDGE_ORDERS):
                if any(verdicts[f"{c}_orders"][order] is None for c in CRITERIA):
                    continue  # an endpoint gave no letter: the judge did not rate this item in this order
                sheets[who].append({**shown, "annotator": who,
                                    **{c: letter[verdicts[f"{c}_orders"][order]] for c in CRITERIA}})
    return [write_sheet(out / "judge" / f"judge-{order}-first.csv", sorted(rows, key=lambda r: r["item"]))
            for order, rows in zip("xy", sheets.values())]
