"""The human rating kit (annotate.py): blinded export, the offline form in a real browser, checked reading of
filled sheets, unblinding, the shares and Fleiss' kappa, and the LLM judge's verdicts as sheets. Every test
works on a small synthetic run folder written here, not on a real run."""

import csv
import io
import re
from pathlib import Path

import pytest

from synthempathy.chain.config import load_config
from synthempathy.chain.store import RunStore, read_json, write_jsonl
from synthempathy.lib.judging import CRITERIA
from synthempathy.tools import annotate
from synthempathy.tools.annotate import SheetError

ARMS = ("synth_empathy", "ed", "ed_plus_random", "base")
N = 10
# Replies that name no arm (the sheet must not reveal them), with characters that break careless CSV or HTML.
STYLES = {"synth_empathy": "That sounds hard, and \"unfair\" too; I'm here for you ({i}).",
          "ed": "Oh no. What happened next? ({i})",
          "ed_plus_random": "I see <!--<script> </script><b>bold</b> café ☕ ({i})",
          "base": "Okay ({i})."}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def run(tmp_path):
    """(cfg, store) of a run folder holding only 05_evaluate's predictions: N histories, every arm, seed 0."""
    cfg = load_config("tiny", {"run_root": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "figures")})
    store = RunStore(cfg.run_dir)
    for arm in ARMS:
        name = arm if arm == "base" else f"{arm}.seed-0"
        turns = [[f"Speaker turn {i}, with a comma", "Listener, \"quoted\"", f"My news #{i}:\nsecond line"]
                 [: 1 + 2 * (i % 2)] for i in range(N)]
        rows = [{"id": f"eval:rec-{i:03d}", "history": turns[i], "gold": "gold",
                 "prediction": STYLES[arm].format(i=i)} for i in range(N)]
        write_jsonl(store.path("05_evaluate", f"predictions/{name}.jsonl"), rows)
    return cfg, store


@pytest.fixture
def kit(run, tmp_path):
    cfg, store = run
    return annotate.export(cfg, store, tmp_path / "kit")


def blank_rows(kit) -> list[dict]:
    with open(kit["sheet"], newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def write_rows(path: Path, rows: list[list[str]], prefix: bytes = b"") -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_bytes(prefix + buf.getvalue().encode("utf-8"))


def fill(kit, path, annotator: str, rate, pair: str | None = None) -> Path:
    """A filled sheet: rate(key item, criterion) -> +1 (x better), 0 or -1; only `pair`'s rows when given."""
    key = read_json(kit["key"])
    rows = []
    for row in blank_rows(kit):
        k = key["items"][row["item"]]
        if pair and k["pair"] != pair:
            continue
        letter = {1: "a" if k["a"] == k["x"] else "b", 0: "tie", -1: "b" if k["a"] == k["x"] else "a"}
        rows.append({**row, "annotator": annotator, **{c: letter[rate(k, c)] for c in CRITERIA}})
    return annotate.write_sheet(path, rows)


def index(k) -> int:
    return int(k["id"].rsplit("-", 1)[1])


# -- Fleiss' kappa -------------------------------------------------------------------------------------------

def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 items, 14 raters, 5 categories: 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert annotate.fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_edges():
    assert annotate.fleiss_kappa([[3, 0, 0], [0, 0, 3]]) == pytest.approx(1.0)
    assert annotate.fleiss_kappa([[1, 0, 1], [1, 0, 1]]) == pytest.approx(-1.0)
    assert annotate.fleiss_kappa([[2, 0, 0], [2, 0, 0]]) is None  # one category only: chance agreement is 1
    with pytest.raises(ValueError, match="same number"):
        annotate.fleiss_kappa([[2, 0, 0], [1, 0, 0]])


# -- export --------------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_and_another_seed_another_sheet(run, tmp_path):
    cfg, store = run
    first = annotate.export(cfg, store, tmp_path / "one")
    again = annotate.export(cfg, store, tmp_path / "two")
    for name in ("sheet", "html", "key", "readme"):
        assert first[name].read_bytes() == again[name].read_bytes(), name
    other = annotate.export(cfg, store, tmp_path / "three", seed=cfg.seed + 1)
    assert other["sheet"].read_bytes() != first["sheet"].read_bytes()
    arm_a = [{(k["pair"], k["id"]): k["a"] for k in read_json(out["key"])["items"].values()}
             for out in (first, other)]
    assert arm_a[0] != arm_a[1]  # the seed draws which arm is A, item by item
    assert first["items"] == 2 * N and first["per_pair"] == N  # tiny's ab_records (16), capped at N
    assert first["pairs"] == ["synth_empathy vs ed", "synth_empathy vs ed_plus_random"]


def test_the_sheet_reveals_no_arm_and_no_record(kit):
    key = read_json(kit["key"])
    assert list(blank_rows(kit)[0]) == list(annotate.COLUMNS)
    assert all(re.fullmatch(r"item-\d+", item) for item in key["items"])
    for name in ("sheet", "html", "readme"):
        text = kit[name].read_text(encoding="utf-8")
        assert not [arm for arm in ("synth_empathy", "ed_plus_random") if arm in text], name
        assert "eval:rec-" not in text and "key.json" not in text, name


def test_arm_order_is_random_but_balanced_within_each_pair(kit):
    key = read_json(kit["key"])
    for pair in key["pairs"]:
        x_as_a = [k["a"] == k["x"] for k in key["items"].values() if k["pair"] == pair]
        assert sorted((sum(x_as_a), len(x_as_a) - sum(x_as_a))) == [N // 2, N - N // 2]
    pairs_in_sheet_order = [key["items"][r["item"]]["pair"] for r in blank_rows(kit)]
    assert pairs_in_sheet_order != sorted(pairs_in_sheet_order)  # the pairs are interleaved, not in blocks


def test_export_takes_n_pairs_and_the_base_model(run, tmp_path):
    cfg, store = run
    out = annotate.export(cfg, store, tmp_path / "k", n=4, pairs=[("synth_empathy", "base")])
    key = read_json(out["key"])
    assert out["items"] == 4 and key["pairs"] == ["synth_empathy vs base"]
    assert sorted(k["id"] for k in key["items"].values()) == [f"eval:rec-{i:03d}" for i in range(4)]


def test_export_will_not_replace_the_key_of_another_export(run, kit, tmp_path):
    cfg, store = run
    annotate.export(cfg, store, tmp_path / "kit")  # the same export again is harmless
    with pytest.raises(FileExistsError, match="key of another export"):
        annotate.export(cfg, store, tmp_path / "kit", seed=cfg.seed + 1)


# -- scoring -------------------------------------------------------------------------------------------------

def three_annotators(kit, tmp_path) -> list[Path]:
    """Pair 1: naturalness x, x, tie; coherence x on even records and y on odd ones by all; empathy x by all.
    Pair 2 (two annotators only): x by the first, y by the second, on every criterion."""
    p1, p2 = "synth_empathy vs ed", "synth_empathy vs ed_plus_random"

    def rater(j):
        def rate(k, c):
            if k["pair"] == p2:
                return 1 if j == 0 else -1
            if c == "naturalness":
                return 0 if j == 2 else 1
            return (1 if index(k) % 2 == 0 else -1) if c == "coherence" else 1
        return rate

    return [fill(kit, tmp_path / "ann1.csv", "Ann", rater(0)), fill(kit, tmp_path / "bo.csv", "Bo", rater(1)),
            fill(kit, tmp_path / "cy.csv", "Cy", rater(2), pair=p1)]


def test_score_unblinds_and_gives_the_shares_and_kappa(kit, tmp_path):
    scores = annotate.score(three_annotators(kit, tmp_path), kit["key"], n_resamples=200, seed=3)
    p1, p2 = (scores["pairs"][p] for p in ("synth_empathy vs ed", "synth_empathy vs ed_plus_random"))
    assert p1["annotators"] == ["Ann", "Bo", "Cy"] and p2["annotators"] == ["Ann", "Bo"]
    nat, coh, emp = (p1["criteria"][c] for c in CRITERIA)
    # every item alike, so each interval is its point
    assert nat["win"] == [0.6667] * 3 and nat["tie"] == [0.3333] * 3 and nat["lose"] == [0.0] * 3
    assert nat["kappa"] == -0.5 and nat["kappa_items"] == N and nat["ratings"] == 3 * N
    assert coh["win"][0] == coh["lose"][0] == 0.5 and coh["net"][0] == 0.0 and coh["kappa"] == 1.0
    assert coh["win"][1] < 0.5 < coh["win"][2]  # the items differ: a real interval
    assert emp["win"] == [1.0] * 3 and emp["kappa"] is None  # every rating alike: kappa undefined
    for s in p2["criteria"].values():
        assert s["win"][0] == s["lose"][0] == 0.5 and s["tie"][0] == 0.0 and s["kappa"] == -1.0
    table = annotate.markdown(scores)
    assert ("| naturalness | 66.7 [66.7, 66.7] | 33.3 [33.3, 33.3] | 0.0 [0.0, 0.0] | 66.7 [66.7, 66.7] "
            "| -0.500 (10) |") in table
    assert "| empathy | 100.0 [100.0, 100.0] |" in table and "n/a" in table


def test_one_annotator_has_no_kappa(kit, tmp_path):
    sheet = fill(kit, tmp_path / "a.csv", "Ann", lambda k, c: 1)
    scores = annotate.score([sheet], kit["key"], n_resamples=50)
    for p in scores["pairs"].values():
        assert all(s["kappa"] is None and s["win"][0] == 1.0 for s in p["criteria"].values())


def test_spreadsheet_quirks_are_read(kit, tmp_path):
    """A BOM, a capitalised header, extra columns, blank rows and upper-case ratings are what spreadsheets
    write; they are read, not refused."""
    path = fill(kit, tmp_path / "s.csv", "Ann", lambda k, c: 1)
    rows = read_rows(path)
    rows[0] = [h.upper() for h in rows[0]] + ["notes"]
    rows[1] = [v.upper() if v in ("a", "b") else v for v in rows[1]] + ["unsure about this one"]
    write_rows(path, rows[:2] + [[""] * 3] + rows[2:] + [[]], prefix=b"\xef\xbb\xbf")
    scores = annotate.score([path], kit["key"], n_resamples=50)
    assert all(s["win"][0] == 1.0 for p in scores["pairs"].values() for s in p["criteria"].values())


def edit_cell(row: int, column: str, value: str):
    def edit(rows):
        rows[row][rows[0].index(column)] = value
        return rows
    return edit


def drop_column(column: str):
    def edit(rows):
        i = rows[0].index(column)
        return [r[:i] + r[i + 1:] for r in rows]
    return edit


def copy_item(row: int, from_row: int):
    def edit(rows):
        rows[row][0] = rows[from_row][0]
        return rows
    return edit


@pytest.mark.parametrize("edit, row, column, says", [
    (drop_column("coherence"), 0, "coherence", "is missing"),
    (edit_cell(3, "empathy", "maybe"), 3, "empathy", "'maybe', which is not a rating"),
    (edit_cell(2, "naturalness", ""), 2, "naturalness", "is empty"),
    (edit_cell(4, "item", "item-99"), 4, "item", "'item-99', which is not in the key"),
    (copy_item(5, 1), 5, "item", "rated already in data row 1"),
    (edit_cell(2, "annotator", "Bo"), 2, "annotator", "one sheet holds one annotator's ratings"),
    (edit_cell(6, "annotator", ""), 6, "annotator", "is empty"),
    (edit_cell(1, "response_b", "an edited reply"), 1, "response_b", "another export"),
], ids=["missing-column", "off-scale", "empty-rating", "unknown-item", "item-twice", "two-names", "no-name",
        "other-export"])
def test_a_bad_sheet_is_refused_naming_file_row_and_column(kit, tmp_path, edit, row, column, says):
    path = fill(kit, tmp_path / "bad.csv", "Ann", lambda k, c: 1)
    rows = edit(read_rows(path))
    write_rows(path, rows)
    with pytest.raises(SheetError) as e:
        annotate.score([path], kit["key"], n_resamples=50)
    assert (e.value.path, e.value.row, e.value.column) == (str(path), row, column)
    where = "header row" if row == 0 else f"data row {row} (counted from 1 below the header)"
    assert str(e.value).startswith(f"{path}: {where}, column '{column}': ") and says in str(e.value)


def test_two_sheets_of_one_annotator_are_refused(kit, tmp_path):
    first = fill(kit, tmp_path / "ann.csv", "Ann", lambda k, c: 1)
    second = fill(kit, tmp_path / "ann-again.csv", " ann ", lambda k, c: 0)
    with pytest.raises(SheetError, match=f"annotator 'ann' also filled {re.escape(str(first))}") as e:
        annotate.score([first, second], kit["key"])
    assert (e.value.path, e.value.row, e.value.column) == (str(second), 1, "annotator")


def test_files_that_are_not_sheets(kit, tmp_path):
    empty, latin1, header_only = tmp_path / "empty.csv", tmp_path / "latin1.csv", tmp_path / "header.csv"
    empty.write_text("")
    latin1.write_bytes(kit["sheet"].read_bytes().replace(b"caf\xc3\xa9", b"caf\xe9"))
    header_only.write_text(",".join(annotate.COLUMNS) + "\n")
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text(";".join(annotate.COLUMNS) + "\n")
    for path, says in ((empty, "the file is empty"), (latin1, "not UTF-8"), (header_only, "no rated rows"),
                       (semicolons, "separated by ';'")):
        with pytest.raises(SheetError, match=re.escape(says)) as e:
            annotate.score([path], kit["key"])
        assert str(e.value).startswith(str(path))


# -- the LLM judge's verdicts as two annotators --------------------------------------------------------------

class AlwaysA:
    """A judge with total position bias: Reply A is always better."""

    spec, batch_size = "always-a", 8

    def __init__(self):
        self.asked = 0

    def label_logits(self, messages_batch, labels):
        self.asked += len(messages_batch)
        return [[2.0, 0.0, 1.0] for _ in messages_batch]


class Refuses:
    spec, batch_size = "always-a", 8

    def label_logits(self, messages_batch, labels):
        raise AssertionError("every verdict should come from the cache")


def test_judge_sheets_make_each_order_an_annotator(run, kit, tmp_path):
    cfg, store = run
    judge = AlwaysA()
    paths = annotate.judge_sheets(cfg, store, tmp_path / "kit", judge=judge, progress=False)
    assert judge.asked == 2 * N * 2 * len(CRITERIA)  # two pairs, N items, two orders, three criteria
    scores = annotate.score(paths, kit["key"], n_resamples=50)
    for p in scores["pairs"].values():
        assert p["annotators"] == sorted(annotate.JUDGE_ORDERS)
        for s in p["criteria"].values():  # x wins when x is A, loses when y is A: no agreement with itself
            assert s["win"][0] == s["lose"][0] == 0.5 and s["kappa"] == -1.0
    again = annotate.judge_sheets(cfg, store, tmp_path / "kit", judge=Refuses(), progress=False)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


# -- the offline form in a real browser ----------------------------------------------------------------------

@pytest.mark.slow
def test_the_html_form_saves_a_sheet_that_scores(kit, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: the form cannot be tried in a browser here")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    key = read_json(kit["key"])
    choice = {item: {c: "a tie b".split()[(i + j) % 3] for j, c in enumerate(CRITERIA)}
              for i, item in enumerate(key["items"])}
    requests = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(kit["html"].resolve().as_uri())
            assert "</script><b>bold</b> café ☕" in page.inner_text("body")  # shown as text, not markup
            page.fill("#annotator", "Dana, the \"first\" rater")
            for item, picks in choice.items():
                for c, v in picks.items():
                    page.check(f'input[name="{item}|{c}"][value="{v}"]')
            assert page.inner_text("#progress") == f"{len(choice)} of {len(choice)} items rated"
            with page.expect_download() as info:
                page.click("#save")
            saved = tmp_path / info.value.suggested_filename
            info.value.save_as(saved)
        finally:
            browser.close()
    assert not [u for u in requests if not u.startswith(("file:", "blob:", "data:"))]  # nothing from outside
    assert saved.name == "sheet-Dana_the_first_rater.csv"
    expected = [{**row, "annotator": "Dana, the \"first\" rater", **choice[row["item"]]}
                for row in blank_rows(kit)]
    assert saved.read_bytes() == annotate.csv_text(expected).encode("utf-8")  # exactly the sheet format
    scores = annotate.score([saved], kit["key"], n_resamples=50)
    assert scores["annotators"] == ["Dana, the \"first\" rater"]
    assert all(p["criteria"][c]["items"] == N for p in scores["pairs"].values() for c in CRITERIA)
