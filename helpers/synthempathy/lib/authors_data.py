"""The authors' released data as an input: their selected synthetic records mixed with ED training, read,
told apart, turned into the examples of the arm `authors_data`, and set beside our own selection.

Their repository (lib/authors.PINNED, README `paper` section) ships, for three generators, one JSON list each under
`selected_data/`: their selection shuffled together with ED training. A record is what their turn sampling writes:
`instruction`, a transcript of `Speaker: ...` and `Listener: ...` lines, the speaker's first, ending in an empty
`Listener: `; `input`, empty; `output`, the reply. The config key `authors_selection` names such a file.

Which records are ED. Order and counts say nothing: a record is ED when its shown turns and its reply, normalised,
are the last turns of one ED training record (its history, then its response). Normalised (`normalised`): lower
case, contractions spelled out, then only letters and digits, so ED's raw text and its preprocessed copies
(tokenised, "can not", " , ", `_comma_`) give the same key. ED training is the whole training split of the source
the run read (00_data's summary names it): their file holds all of it, a run may keep only its first records.
Everything else is synthetic. With a source that is itself a part of ED (packaged:seed), ED records outside it
count as synthetic: the report shows how many ED turns the file holds, to judge by.

Replies to a turn not shown. Their turn sampling shows k earlier rounds and the speaker turn of round k+1, then
takes the reply of the dialogue's *last* round, whatever round the transcript stops at. So a record answers the
turn it shows only when its dialogue had exactly k+1 rounds, and the file does not hold the dialogue. What it does
tell (`later_turns`): k = 0 means a one-round dialogue, so the shown turn; k = 1 means a later, unshown turn unless
the dialogue had only two rounds (their generation prompt asks for at least three); k >= 2 stays undetermined.

Every problem with the file is a DataError naming the file, the record and the field.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..chain.store import hash_file, read_json
from .dialogue import listener_prompt
from .ed import load_ed, resolve_source
from .ed_record import DataError, text_lines

KEY = "authors_selection"
ROLES = ("Speaker", "Listener")  # the labels of their files (fixed by their script, not by our prompt file)
LABEL = re.compile(r"^(Speaker|Listener):[ \t]?", re.MULTILINE)
LFS_POINTER = "version https://git-lfs.github.com/spec/"
FORM = "expected 'Speaker: ...' and 'Listener: ...' lines, the speaker's first, ending in an empty 'Listener: '"
# Contractions as ED's preprocessed copies spell them out (lower case, tokenised: "ca n't", "do not", "he 's"),
# applied to both sides so that either spelling gives the same key. n't and 'm are spelled out inside a word too,
# as that preprocessing's plain text replacement does ("don'ts" -> "do nots").
CONTRACTIONS = [(re.compile(p), s) for p, s in (
    (r"\bca\s*n't", "can not"), (r"\bwo\s*n't", "will not"), (r"\s*n't", " not"), (r"\s*'m", " am"),
    (r"\s*'re\b", " are"), (r"\s*'s\b", " is"), (r"\s*'ve\b", " have"), (r"\s*'ll\b", " will"), (r"\s*'d\b", " would"))]


# -- reading their file -------------------------------------------------------------------------------------

def shown_turns(instruction: str, file, where: str) -> list[str]:
    """The turns of a transcript in their form, the speaker's first, without the empty listener label ending it."""
    parts = LABEL.split(instruction)
    labels, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    problem = None
    if parts[0].strip() or not labels:
        problem = f"does not start with 'Speaker: ' (starts {instruction.strip()[:40]!r})"
    elif (wrong := next((i for i, label in enumerate(labels) if label != ROLES[i % 2]), None)) is not None:
        problem = f"turn {wrong + 1} is labelled {labels[wrong]!r} where {ROLES[wrong % 2]!r} comes"
    elif labels[-1] != "Listener" or texts[-1]:
        problem = "does not end in an empty 'Listener: ' (the reply is the record's output)"
    elif (empty := next((i for i, t in enumerate(texts[:-1]) if not t), None)) is not None:
        problem = f"turn {empty + 1} ({labels[empty]}) is empty"
    if problem:
        raise DataError(file, where, "instruction", f"{problem}; {FORM}")
    return texts[:-1]


def released_record(obj: object, file, where: str) -> tuple[list[str], str]:
    """(shown turns, reply) of one record, or a DataError naming the field."""
    if not isinstance(obj, dict):
        raise DataError(file, where, None, f"expected a JSON object with instruction, input and output, "
                                           f"got {type(obj).__name__}")
    for field in ("instruction", "output"):
        if field not in obj:
            raise DataError(file, where, field, "missing")
        if not isinstance(obj[field], str):
            raise DataError(file, where, field, f"expected a string, got {type(obj[field]).__name__}")
    if not obj["output"].strip():
        raise DataError(file, where, "output", "empty: the record has no reply")
    if str(obj.get("input") or "").strip():
        raise DataError(file, where, "input", f"expected empty (the dialogue is in instruction), got {str(obj['input'])[:40]!r}")
    return shown_turns(obj["instruction"], file, where), obj["output"].strip()


def read_selection(path: str | Path) -> list[tuple[list[str], str]]:
    """Every record of one of their files as (shown turns, reply), in the file's order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "path", None, f"no such file; set {KEY} to one of their released files (README, `paper`)")
    text = "\n".join(line for _, line in text_lines(path))  # not UTF-8: an error naming the line
    if text.startswith(LFS_POINTER):
        raise DataError(path, "whole file", None, "a git LFS pointer, not the data: download the file itself "
                                                  "(README, `paper` section)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"line {e.lineno}, column {e.colno}", None, f"not JSON: {e.msg}") from None
    if not isinstance(data, list) or not data:
        raise DataError(path, "top level", None, "expected a non-empty JSON list of records (instruction, input, output)")
    return [released_record(obj, path, f"record {i}") for i, obj in enumerate(data)]


# -- telling ED from synthetic ------------------------------------------------------------------------------

def normalised(text: str) -> str:
    """The letters and digits of a turn, lower case, contractions spelled out, `_comma_` read as a comma: equal for
    ED's raw text and its preprocessed copies (tokenised, "can not", " , "), since spaces and punctuation go."""
    text = text.lower().replace("_comma_", ",").replace("\u2019", "'")
    for pattern, spelled in CONTRACTIONS:
        text = pattern.sub(spelled, text)
    return "".join(re.findall(r"[^\W_]+", text))


def dialogue_key(turns, reply: str) -> tuple[str, ...]:
    return tuple(normalised(t) for t in (*turns, reply))


@dataclass(frozen=True)
class Selection:
    """Their file, split: the synthetic records (record index, shown turns, reply) and what the ED part matched."""
    file: str
    sha256: str
    records: int
    synthetic: tuple[tuple[int, tuple[str, ...], str], ...]
    reference: str  # the ED training split matched against
    reference_turns: int  # its listener turns
    found: frozenset[int]  # those of them the file holds
    found_conversations: frozenset[str]

    @property
    def ed(self) -> int:
        return self.records - len(self.synthetic)


def split_selection(released: list[tuple[list[str], str]], ed_records) -> tuple[list[int], set[int]]:
    """(indices of the released records that are not ED, indices of the ED records found among them): a record is
    ED when its normalised turns and reply are the last turns of an ED record's history and response."""
    index: dict[tuple[str, ...], list[tuple[int, tuple[str, ...]]]] = {}
    for j, r in enumerate(ed_records):
        full = dialogue_key(r.history, r.response)
        index.setdefault(full[-2:], []).append((j, full))
    synthetic, found = [], set()
    for i, (turns, reply) in enumerate(released):
        key = dialogue_key(turns, reply)
        hits = [j for j, full in index.get(key[-2:], ()) if full[-len(key):] == key]
        found.update(hits)
        if not hits:
            synthetic.append(i)
    return synthetic, found


@lru_cache(maxsize=2)
def _selection(path: str, stamp: tuple[int, int], source: str, split: str) -> Selection:
    released = read_selection(path)
    ed = load_ed(source, split)
    synthetic, found = split_selection(released, ed)
    return Selection(path, hash_file(path), len(released),
                     tuple((i, tuple(released[i][0]), released[i][1]) for i in synthetic),
                     f"{source} [{split}]", len(ed), frozenset(found), frozenset(ed[j].conv_id for j in found))


def selection_for(cfg, store) -> Selection:
    """The file of `authors_selection`, split against the whole ED training split the run read (00_data);
    memoized while the file is unchanged, so every training seed reads it once."""
    path = resolve_source(cfg.authors_selection)
    data = read_json(store.require("00_data", "summary.json"))
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if Path(path).is_file() else (0, 0)
    return _selection(str(path), stamp, data["source"], data["train_split"])


def synthetic_examples(cfg, store) -> list[dict]:
    """The arm's synthetic examples: their non-ED records in the shape of 01_generate's examples (no seed)."""
    return [{"id": f"authors:{i}", "seed_id": None, "instruction": listener_prompt(turns), "history": list(turns),
             "output": reply, "k": len(turns) // 2, "emotion": None} for i, turns, reply in selection_for(cfg, store).synthetic]


# -- what their selection is, beside ours --------------------------------------------------------------------

def later_turns(ks: list[int]) -> dict:
    """What the file tells of replies to a turn not shown, from each record's k (module docstring)."""
    return {"shown_turn": sum(k == 0 for k in ks), "later_turn_unless_two_rounds": sum(k == 1 for k in ks),
            "undetermined": sum(k >= 2 for k in ks)}


def describe(examples: list[dict]) -> dict:
    """Rounds shown (k + 1) and mean reply words of a set of examples."""
    words = [len(e["output"].split()) for e in examples]
    return {"examples": len(examples), "rounds_shown": dict(sorted(Counter(str(e["k"] + 1) for e in examples).items())),
            "mean_reply_words": round(sum(words) / max(len(words), 1), 1)}


def overlap(theirs: list[dict], ours: list[dict], found_conversations: frozenset[str]) -> dict:
    """Their synthetic examples and ours (D_a): they come from different generators, so the overlap that means
    something is by seed dialogue; theirs name none, so it is ours whose ED dialogue their file holds."""
    same = {dialogue_key(e["history"], e["output"]) for e in theirs} & {dialogue_key(e["history"], e["output"]) for e in ours}
    replies = {normalised(e["output"]) for e in theirs} & {normalised(e["output"]) for e in ours}
    seeds = {e["seed_id"].rsplit(":", 1)[0] for e in ours if e.get("seed_id")}  # seed id: <conv id>:<turn>
    return {"same_dialogue_and_reply": len(same), "same_reply": len(replies), "our_seed_dialogues": len(seeds),
            "our_seed_dialogues_in_their_ed": len(seeds & found_conversations)}


def report(cfg, store) -> dict:
    """Their file split, the replies to a turn not shown, and their selection beside ours where 03 has run."""
    sel = selection_for(cfg, store)
    theirs = synthetic_examples(cfg, store)
    ours = store.read("03_diversity", "selected.jsonl") if store.path("03_diversity", "selected.jsonl").exists() else None
    return {"file": sel.file, "sha256": sel.sha256, "records": sel.records, "ed": sel.ed, "synthetic": len(theirs),
            "ed_reference": {"split": sel.reference, "listener_turns": sel.reference_turns, "found": len(sel.found)},
            "later_turns": later_turns([e["k"] for e in theirs]), "theirs": describe(theirs),
            "ours": describe(ours) if ours is not None else None,
            "overlap": overlap(theirs, ours, sel.found_conversations) if ours is not None else None}


def markdown(r: dict) -> str:
    """The report as a results.md section."""
    ref, later = r["ed_reference"], r["later_turns"]
    lines = ["## The authors' released data", "",
             f"`{Path(r['file']).name}` (sha256 {r['sha256'][:12]}): {r['records']} records, {r['ed']} of them ED "
             f"(they hold {ref['found']} of the {ref['listener_turns']} listener turns of {ref['split']}) and "
             f"{r['synthetic']} synthetic, which the arm authors_data adds to ED.", "",
             f"Their turn sampling takes the last round's reply whatever round the transcript stops at: "
             f"{later['later_turn_unless_two_rounds']} records show two rounds and so answer a later, unshown turn "
             f"unless their dialogue had only two; {later['undetermined']} show more (undetermined: the file does not "
             f"hold the dialogue); {later['shown_turn']} show one round and answer it.", ""]
    ours = r["ours"] or {}
    rows = [("examples", "examples"), ("rounds shown", "rounds_shown"), ("mean reply words", "mean_reply_words")]
    lines += ["| | theirs (synthetic) | ours (D_a) |", "|---|---|---|"]
    lines += [f"| {name} | {_shown(r['theirs'][k])} | {_shown(ours.get(k))} |" for name, k in rows]
    if r["overlap"]:
        o = r["overlap"]
        lines += ["", f"Shared by both: {o['same_dialogue_and_reply']} identical dialogues with their reply, "
                      f"{o['same_reply']} identical replies. Their records name no seed dialogue; "
                      f"{o['our_seed_dialogues_in_their_ed']} of our {o['our_seed_dialogues']} seed dialogues are in "
                      "their file's ED part."]
    return "\n".join(lines) + "\n"


def _shown(v) -> str:
    if v is None:
        return "-"
    return ", ".join(f"{k}: {n}" for k, n in v.items()) if isinstance(v, dict) else str(v)
