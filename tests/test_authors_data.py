"""The authors' released data as an input (lib/authors_data.py): their file read, ED told from synthetic by the
transcripts whatever the order, bad files refused naming file, record and field, the replies to a turn not shown
counted; on a fixture in their format
written in our own words (tests/authors_fixture.py). No model loads."""

import json

import pytest
from authors_fixture import SYNTHETIC, released_file, released_record

from synthempathy.lib import authors_data
from synthempathy.lib.ed import SEED_DIR, load_ed
from synthempathy.lib.ed_record import DataError


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
