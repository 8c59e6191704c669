import hashlib
import json
import tarfile
from collections import Counter

import pytest

from synthempathy import data
from synthempathy.lib import ed, ed_rows
from synthempathy.lib.ed import EMOTIONS, DataError, load_ed

CONVS = [
    {"conv_id": "c:0", "emotion": "proud", "situation": "I finished my first marathon, slowly.",
     "turns": ["I finally ran a whole marathon, all 42 km!", "That is huge, how do you feel now?",
               "Sore, but so proud of myself.", "You earned every bit of that pride, well done."]},
    {"conv_id": "c:1", "emotion": "lonely", "situation": "My roommate moved out.",
     "turns": ["My roommate moved out and the flat is so quiet.", "Quiet can feel heavy. Do you miss her?",
               "Yes, a lot."]},
]


def shared_rows():
    return [{"conv_id": "c:0", "emotion": "proud", "situation": "s", "history": ["a"], "response": "b"},
            {"conv_id": "c:0", "emotion": "proud", "situation": "s", "history": ["a", "b", "c"], "response": "d"}]


# -- every real form reads into the same records ------------------------------------------------------------

def expected_records():
    return [(c["conv_id"], c["emotion"], tuple(c["turns"][:k]), c["turns"][k])
            for c in CONVS for k in range(1, len(c["turns"]), 2)]


def as_tuples(records):
    return [(r.conv_id, r.emotion, r.history, r.response) for r in records]


def test_upstream_csv_with_comma_escapes(tmp_path):
    ed_rows.write_ed_csv(tmp_path / "train.csv", CONVS)
    assert "_comma_" in (tmp_path / "train.csv").read_text()
    records = load_ed(tmp_path, "train")
    assert as_tuples(records) == expected_records()
    assert records[0].situation == "I finished my first marathon, slowly."
    assert records[1].id == "c:0:4"


def hf_rows():
    rows = []
    for c in CONVS:
        for i, t in enumerate(c["turns"], 1):
            rows.append({"conv_id": c["conv_id"], "utterance_idx": i, "context": c["emotion"],
                         "prompt": c["situation"].replace(",", "_comma_"), "speaker_idx": i % 2,
                         "utterance": t.replace(",", "_comma_"), "selfeval": "", "tags": ""})
    return rows


def test_hugging_face_parquet_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = hf_rows()
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:4]), tmp_path / "data" / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:]), tmp_path / "data" / "train-00001-of-00002.parquet")
    assert as_tuples(load_ed(tmp_path, "train")) == expected_records()


def test_datasets_save_to_disk_with_validation_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"validation": datasets.Dataset.from_list(hf_rows())})
    dd.save_to_disk(str(tmp_path / "ed"))
    assert as_tuples(load_ed(tmp_path / "ed", "valid")) == expected_records()


def test_authors_json_list_and_jsonl(tmp_path):
    recs = [{"context": " </s> ".join(h), "response": r} for _, _, h, r in expected_records()]
    (tmp_path / "train.json").write_text(json.dumps(recs))
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    for records in (load_ed(tmp_path, "train"), load_ed(tmp_path / "more.jsonl")):
        assert [(r.history, r.response) for r in records] == [(h, r) for _, _, h, r in expected_records()]
        assert records[0].emotion is None  # the authors' files carry no emotion


def test_shared_jsonl_form(tmp_path):
    (tmp_path / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shared_rows()))
    records = load_ed(tmp_path, "valid")
    assert [r.history for r in records] == [("a",), ("a", "b", "c")]


def test_real_ed_valid_split(shared_ed):
    records = load_ed(shared_ed, "valid")
    assert len(records) == 5738
    assert {r.emotion for r in records} == set(EMOTIONS)
    assert all(len(r.history) % 2 == 1 for r in records)


# -- the seed corpus the project ships ----------------------------------------------------------------------

def test_seed_corpus_shape():
    splits = {s: load_ed("packaged:seed", s) for s in ("train", "valid", "test")}
    convs = {s: data.conversations(rs) for s, rs in splits.items()}
    assert [len(convs[s]) for s in ("train", "valid", "test")] == [64, 16, 16]
    emotions = Counter(rs[0].emotion for c in convs.values() for rs in c.values())
    assert set(emotions) == set(EMOTIONS) and min(emotions.values()) >= 3
    all_ids = [cid for c in convs.values() for cid in c]
    assert len(all_ids) == len(set(all_ids)), "a conversation id is reused across splits"
    text = (ed.SEED_DIR / "train.csv").read_text()
    assert "_comma_" in text and text.splitlines()[0] == ",".join(ed_rows.CSV_COLUMNS)


# -- bad input: one clear error naming file, place and field -----------------------------------------------

CSV_HEADER = ",".join(ed_rows.CSV_COLUMNS)
GOOD_CSV_ROWS = ["c:0,1,proud,s,0,I ran a marathon,,", "c:0,2,proud,s,1,Well done!,,"]


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


BAD_INPUTS = [
    ("missing column", "train.csv", "conv_id,utterance_idx,context,speaker_idx,utterance\nc:0,1,proud,0,hi\n",
     "line 1 (header)", "prompt"),
    ("empty utterance", "train.csv", "\n".join([CSV_HEADER, GOOD_CSV_ROWS[0], "c:0,2,proud,s,1,  ,,"]) + "\n",
     "line 3", "utterance"),
    ("unknown emotion", "train.csv", "\n".join([CSV_HEADER, "c:0,1,elated,s,0,hi,,", "c:0,2,elated,s,1,oh,,"]) + "\n",
     "line 3", "emotion"),
    ("gap in utterance_idx", "train.csv", "\n".join([CSV_HEADER, GOOD_CSV_ROWS[0], "c:0,3,proud,s,1,hi,,"]) + "\n",
     "line 3", "utterance_idx"),
    ("row cut short", "train.csv", "\n".join([CSV_HEADER, "c:0,1,proud,s"]) + "\n", "line 2", "speaker_idx"),
    ("history ends with the listener", "train.jsonl",
     json.dumps({"conv_id": "c", "emotion": "sad", "situation": "s", "history": ["a", "b"], "response": "c"}) + "\n",
     "line 1", "history"),
    ("truncated JSON line", "train.jsonl",
     json.dumps(shared_rows()[0]) + "\n" + json.dumps(shared_rows()[1])[:40] + "\n", "line 2", None),
    ("wrong encoding", "train.csv", (CSV_HEADER + "\n" + GOOD_CSV_ROWS[0] + "\nc:0,2,proud,s,1,caf\xe9,,\n").encode("latin-1"),
     "line 3", None),
    ("missing response", "train.jsonl", json.dumps({"context": "a </s> b </s> c"}) + "\n", "line 1", "response"),
    ("empty turn in authors' context", "train.json", json.dumps([{"context": "a </s>  </s> c", "response": "r"}]),
     "record 0", "history[1]"),
    ("unknown emotion in shared form", "train.jsonl",
     json.dumps({**shared_rows()[0], "emotion": "meh"}) + "\n", "line 1", "emotion"),
]


@pytest.mark.parametrize("case, name, content, where, field", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_named(tmp_path, case, name, content, where, field):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        load_ed(tmp_path, "train")
    err = e.value
    assert err.file == str(path)
    assert err.where == where
    assert err.field == field
    assert str(path) in str(err) and where in str(err)


def test_missing_split_says_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match="no file test.jsonl, .csv"):
        load_ed(tmp_path, "test")


def test_hub_source_offline_fails_at_once():
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1"):
        load_ed("hf:facebook/empathetic_dialogues", "train")


# -- the official tarball, through a local file:// URL --------------------------------------------------------

def make_tarball(path):
    ed_rows.write_ed_csv(path.parent / "train.csv", CONVS)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "valid", "test"):
            tar.add(path.parent / "train.csv", arcname=f"empatheticdialogues/{split}.csv")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_checksum_and_unpacks(tmp_path):
    tarball = tmp_path / "src" / "ed.tar.gz"
    tarball.parent.mkdir()
    digest = make_tarball(tarball)
    folder = ed.download_ed(tmp_path / "dest", url=tarball.as_uri(), sha256=digest)
    assert as_tuples(load_ed(folder, "test")) == expected_records()
    assert ed.download_ed(tmp_path / "dest", url="file:///nonexistent", sha256=digest) == folder  # cached


def test_download_rejects_a_wrong_checksum(tmp_path):
    tarball = tmp_path / "src" / "ed.tar.gz"
    tarball.parent.mkdir()
    make_tarball(tarball)
    with pytest.raises(DataError, match="checksum mismatch"):
        ed.download_ed(tmp_path / "dest", url=tarball.as_uri(), sha256="0" * 64)
    assert not list((tmp_path / "dest").glob("*.tar.gz")), "a rejected download must not stay on disk"
