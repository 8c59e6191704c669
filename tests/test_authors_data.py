"""The authors' released data as an input (lib/authors_data.py): their file read, ED told from synthetic by the
transcripts whatever the order, bad files refused naming file, record and field, the replies to a turn not shown
counted, the config's check, and the arm authors_data's examples in the arm shape; on a fixture in their format
written in our own words (tests/authors_fixture.py). No model loads."""

import json

import pytest
from authors_fixture import SYNTHETIC, released_file, released_record

from synthempathy import data
from synthempathy.chain import plan
from synthempathy.chain.config import ConfigError, load_config
from synthempathy.chain.store import ARTIFACT_FIELDS, RunStore, write_jsonl
from synthempathy.lib import arms, authors_data, sft
from synthempathy.lib.ed import SEED_DIR, load_ed
from synthempathy.lib.ed_record import DataError
from synthempathy.lib.results import results_markdown


@pytest.fixture(scope="module")
def seed_ed():
    return load_ed(SEED_DIR, "train")


def chosen_ed(records):
    """Five ED listener turns, all but one past the first 40 (tiny keeps 40: the match is against the whole split):
    the first has a comma in its history, the second at least three turns before its reply, the third is the
    first record of the split."""
    later = records[40:]
    comma = next(r for r in later if any("," in t for t in r.history))
    long = next(r for r in later if len(r.history) >= 5)
    return [comma, long, records[0]] + [r for r in later if r not in (comma, long)][:2]


def test_normalised_equates_ed_and_its_preprocessed_spelling():
    pairs = [("Wow, that must be terrible, I cannot imagine!", "wow , that must be terrible , i can not imagine !"),
             ("I don't know; I'm sure it's fine.", "i do n't know ; i am sure it 's fine ."),
             ("We won't go, can't we?", "we will not go _comma_ can not we ?"),
             ("She’d gonna", "she would gon na"), ("the do's and don'ts", "the do 's and do nots")]
    for raw, theirs in pairs:
        assert authors_data.normalised(raw) == authors_data.normalised(theirs), (raw, theirs)
    assert authors_data.normalised("I can go") != authors_data.normalised("I can't go")


@pytest.mark.parametrize("order", [0, 1, 2])
def test_the_split_finds_ed_by_transcript_whatever_the_order(tmp_path, seed_ed, order):
    ed = chosen_ed(seed_ed)
    synthetic_replies = released_file(tmp_path / "mix.json", ed, order)
    released = authors_data.read_selection(tmp_path / "mix.json")
    synthetic, found = authors_data.split_selection(released, seed_ed)
    assert {released[i][1] for i in synthetic} == synthetic_replies  # the decoy with an ED reply is synthetic
    assert len(released) - len(synthetic) == len(ed)
    assert {seed_ed[j].id for j in found} == {r.id for r in ed}


def bad_files():
    good = released_record(*SYNTHETIC[1])
    return [
        ([good, {**good, "output": "  "}], "record 1", "output", "empty"),
        ([good, {"instruction": good["instruction"], "input": ""}], "record 1", "output", "missing"),
        ([good, {**good, "output": 3}], "record 1", "output", "expected a string"),
        ([{**good, "input": "Be kind."}], "record 0", "input", "expected empty"),
        ([{**good, "instruction": "Tell me something.\nListener: "}], "record 0", "instruction", "does not start"),
        ([{**good, "instruction": "Speaker: a\nSpeaker: b\nListener: "}], "record 0", "instruction",
         "turn 2 is labelled 'Speaker' where 'Listener' comes"),
        ([{**good, "instruction": "Speaker: a\nListener: b"}], "record 0", "instruction", "does not end in an empty"),
        ([{**good, "instruction": "Speaker: a\nListener: \nSpeaker: c\nListener: "}], "record 0", "instruction",
         "turn 2 (Listener) is empty"),
        ([good, ["a list"]], "record 1", None, "expected a JSON object"),
        ({"instruction": "x"}, "top level", None, "non-empty JSON list"),
        ([], "top level", None, "non-empty JSON list"),
    ]


@pytest.mark.parametrize("content, where, field, words", bad_files())
def test_a_bad_record_is_one_error_naming_file_record_and_field(tmp_path, content, where, field, words):
    path = tmp_path / "theirs.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(DataError) as e:
        authors_data.read_selection(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {where}") and words in msg, msg
    assert (f"field '{field}'" in msg) if field else "field" not in msg, msg


@pytest.mark.parametrize("text, where, words", [
    ("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "whole file", "git LFS pointer"),
    ('[{"instruction": "Speaker: a\\nListener: ", "output": "b"},\n{"instruction"', "line 2", "not JSON"),
])
def test_a_file_that_is_not_their_data_says_what_it_is(tmp_path, text, where, words):
    path = tmp_path / "theirs.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=f"{where}.*{words}"):
        authors_data.read_selection(path)
    with pytest.raises(DataError, match="no such file"):
        authors_data.read_selection(tmp_path / "absent.json")


def test_replies_to_a_turn_not_shown_are_counted_from_the_rounds_shown():
    assert authors_data.later_turns([0, 1, 1, 2, 3, 3]) == {
        "shown_turn": 1, "later_turn_unless_two_rounds": 2, "undetermined": 3}


def test_authors_data_needs_its_file_in_the_config(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", {"arms": ["ed", "authors_data"]})
    assert all(w in str(e.value) for w in ("authors_selection", "authors_data", "tiny.yaml"))
    cfg = load_config("tiny", {"arms": ["ed", "authors_data"], "authors_selection": str(tmp_path / "mix.json")})
    assert cfg.arms == ["ed", "authors_data"] and "authors_data" in arms.ARMS
    # the dry run plans the arm without reading the file: its size, hence its steps, unknown there
    steps = next(r for s in plan.plan(cfg, gpu=False)["stages"] for r in s["requests"] if r["what"] == "authors_data steps")
    assert steps["count"] is None


@pytest.fixture
def run(tmp_path, run_overrides, seed_ed):
    """A tiny run with stage 00 done, their file beside it and a D_a of ours from two seed dialogues (the first's
    ED turns in their file, the second's not)."""
    path = tmp_path / "mix.json"
    released_file(path, chosen_ed(seed_ed))
    cfg = load_config("tiny", {**run_overrides, "arms": ["ed", "authors_data"], "authors_selection": str(path)})
    store = RunStore(cfg.run_dir)
    data.run_stage(cfg, store)
    train = store.read("00_data", "train.jsonl")
    seeds = [train[0], next(r for r in train if r["conv_id"] != train[0]["conv_id"])]  # two seed dialogues
    ours = [{"id": f"{s['id']}:p0", "seed_id": s["id"], "instruction": "", "history": list(turns), "output": reply,
             "k": len(turns) // 2, "emotion": s["emotion"]} for s, (turns, reply) in zip(seeds, SYNTHETIC[1:3])]
    write_jsonl(store.path("03_diversity", "selected.jsonl"), ours)
    return cfg, store


def test_the_arm_trains_on_ed_and_their_synthetic_records_in_the_example_shape(run, seed_ed):
    cfg, store = run
    examples = arms.synthetic_for(cfg, store, "authors_data", 0)
    ours = {reply for _, reply in SYNTHETIC}
    assert {e["output"] for e in examples} == ours | {chosen_ed(seed_ed)[0].response}  # and the decoy
    assert all(set(ARTIFACT_FIELDS[("01_generate", "examples.jsonl")]) <= set(e) for e in examples)
    assert sorted(e["k"] for e in examples if e["output"] in ours) == [0, 1, 2, 3]
    assert all(len(e["history"]) % 2 == 1 and e["instruction"].endswith("Listener: ") for e in examples)
    items, counts = sft.training_items(store.read("00_data", "train.jsonl"), examples, 0)
    assert counts == {"ed": 40, "synthetic": len(examples), "total": 40 + len(examples)}
    planned = {r.name: r for r in arms.plan(cfg, store)}
    assert len(planned["authors_data"].synthetic) == len(examples) and planned["ed"].synthetic == ()


def test_the_report_sets_their_selection_beside_ours(run):
    cfg, store = run
    report = authors_data.report(cfg, store)
    assert (report["records"], report["ed"], report["synthetic"]) == (10, 5, 5)
    assert report["ed_reference"]["found"] == 5 and report["ed_reference"]["listener_turns"] == 149
    assert report["later_turns"] == {"shown_turn": 2, "later_turn_unless_two_rounds": 1, "undetermined": 2}
    assert report["theirs"]["rounds_shown"] == {"1": 2, "2": 1, "3": 1, "4": 1}
    assert report["overlap"] == {"same_dialogue_and_reply": 2, "same_reply": 2, "our_seed_dialogues": 2,
                                 "our_seed_dialogues_in_their_ed": 1}
    text = results_markdown({"profile": "tiny", "eval_examples": 1, "seed": 0, "bootstrap_resamples": 10,
                             "arms": {}, "authors_data": report})
    assert "## The authors' released data" in text and "10 records, 5 of them ED" in text
    assert "| rounds shown | 1: 2, 2: 1, 3: 1, 4: 1 | 2: 1, 3: 1 |" in text
