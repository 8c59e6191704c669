"""EmpatheticDialogues (ED) in every form it comes in, read into one record type.

One record is one listener turn: the dialogue so far (`history`, alternating speaker / listener and ending
with a speaker turn) and the listener's `response`. The forms:

- the upstream CSV of the official tarball (one row per utterance, commas written `_comma_`);
- the Hugging Face `facebook/empathetic_dialogues` columns (same columns), as parquet, arrow or `datasets`;
- the authors' JSON (`{"context": "utt1 </s> utt2 </s> ...", "response": "..."}`), as a list or JSON lines;
- the JSON lines of ../shared/ed (`conv_id, emotion, situation, history, response`).

Every problem with the input is a DataError naming the file, the line or record, and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import REPO_ROOT

EMOTIONS = (
    "afraid", "angry", "annoyed", "anticipating", "anxious", "apprehensive", "ashamed", "caring",
    "confident", "content", "devastated", "disappointed", "disgusted", "embarrassed", "excited", "faithful",
    "furious", "grateful", "guilty", "hopeful", "impressed", "jealous", "joyful", "lonely", "nostalgic",
    "prepared", "proud", "sad", "sentimental", "surprised", "terrified", "trusting",
)
SEED_DIR = REPO_ROOT / "data" / "seed"
CSV_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance", "selfeval", "tags")
REQUIRED_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "utterance")
AUTHORS_SEPARATOR = "</s>"

# The official tarball and its checksum as ParlAI's build script records it.
ED_URL = "http://parl.ai/downloads/empatheticdialogues/empatheticdialogues.tar.gz"
ED_SHA256 = "56f234d77b7dd1f005fd365bb17769cfe346c3c84295b69bc069c8ccb83be03d"


class DataError(ValueError):
    """Bad input data; the message says which file, which line or record, and which field."""

    def __init__(self, file: str | os.PathLike, where: str, field: str | None, problem: str):
        self.file, self.where, self.field, self.problem = str(file), where, field, problem
        at = f", field '{field}'" if field else ""
        super().__init__(f"{file}: {where}{at}: {problem}")


@dataclass(frozen=True)
class Record:
    conv_id: str
    emotion: str | None
    situation: str
    history: tuple[str, ...]
    response: str

    @property
    def id(self) -> str:
        """Unique per listener turn: the conversation and the response's 1-based utterance index."""
        return f"{self.conv_id}:{len(self.history) + 1}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["history"] = list(self.history)
        return {"id": self.id, **d}

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        return cls(d["conv_id"], d.get("emotion"), d.get("situation", ""), tuple(d["history"]), d["response"])


# -- validation ---------------------------------------------------------------------------------------------

def check_record(rec: Record, file: str | os.PathLike, where: str, *, emotion_required: bool = True) -> Record:
    if rec.emotion is None:
        if emotion_required:
            raise DataError(file, where, "emotion", "missing")
    elif rec.emotion not in EMOTIONS:
        raise DataError(file, where, "emotion", f"unknown emotion {rec.emotion!r} (ED has 32: {', '.join(EMOTIONS)})")
    if not rec.history:
        raise DataError(file, where, "history", "empty: a listener turn needs at least one speaker turn before it")
    if len(rec.history) % 2 == 0:
        raise DataError(file, where, "history",
                        f"has {len(rec.history)} turns; it must alternate speaker/listener and end with a speaker turn")
    for i, turn in enumerate(rec.history):
        if not isinstance(turn, str) or not turn.strip():
            raise DataError(file, where, f"history[{i}]", "empty utterance")
    if not isinstance(rec.response, str) or not rec.response.strip():
        raise DataError(file, where, "response", "empty utterance")
    return rec


# -- reading bytes ------------------------------------------------------------------------------------------

def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; a byte that is not UTF-8 is an error naming its line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(path, f"line {n}", None,
                                f"not UTF-8 text (byte {raw[e.start]:#x} at column {e.start + 1}); "
                                "re-save the file as UTF-8") from None


def _unescape(text: str) -> str:
    return text.replace("_comma_", ",").strip()


# -- upstream rows (CSV, parquet, arrow, datasets) ----------------------------------------------------------

def read_ed_csv(path: Path) -> list[Record]:
    """The official tarball's CSV: a header, then one unquoted row per utterance, commas as `_comma_`."""
    lines = _text_lines(path)
    try:
        _, header_line = next(lines)
    except StopIteration:
        raise DataError(path, "line 1", None, "empty file: expected the ED header") from None
    header = header_line.split(",")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(path, "line 1 (header)", missing[0], f"missing column; the header has {header}")
    rows = []
    for n, line in lines:
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < len(REQUIRED_COLUMNS) + 1:
            raise DataError(path, f"line {n}", header[min(len(parts), len(header) - 1)],
                            f"row has {len(parts)} fields, the header {len(header)} (a raw comma in the text?)")
        # Upstream rows sometimes carry extra trailing fields; the named columns come first.
        rows.append((f"line {n}", dict(zip(header, parts))))
    return records_from_rows(rows, path, escaped=True)


def records_from_rows(rows: Iterable[tuple[str, dict]], file: str | os.PathLike, *, escaped: bool) -> list[Record]:
    """Group one-row-per-utterance rows into listener-turn records (even utterance_idx)."""
    convs: dict[str, list[tuple[int, str, dict]]] = {}
    for where, row in rows:
        for col in REQUIRED_COLUMNS:
            if row.get(col) is None:
                raise DataError(file, where, col, "missing")
        try:
            idx = int(row["utterance_idx"])
        except (TypeError, ValueError):
            raise DataError(file, where, "utterance_idx", f"not an integer: {row['utterance_idx']!r}") from None
        convs.setdefault(str(row["conv_id"]), []).append((idx, where, row))
    records = []
    for conv_id, turns in convs.items():
        turns.sort(key=lambda t: t[0])
        utterances = []
        for expected, (idx, where, row) in enumerate(turns, 1):
            if idx != expected:
                raise DataError(file, where, "utterance_idx",
                                f"conversation {conv_id}: expected utterance {expected}, found {idx}")
            text = _unescape(row["utterance"]) if escaped else str(row["utterance"]).strip()
            if not text:
                raise DataError(file, where, "utterance", f"empty utterance in conversation {conv_id}")
            utterances.append(text)
        first = turns[0][2]
        emotion = str(first["context"]).strip()
        situation = _unescape(first["prompt"]) if escaped else str(first["prompt"]).strip()
        for k in range(1, len(utterances), 2):
            rec = Record(conv_id, emotion, situation, tuple(utterances[:k]), utterances[k])
            check_record(rec, file, turns[k][1])
            records.append(rec)
    return records


def read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return records_from_rows(((f"row {i}", r) for i, r in enumerate(table.to_pylist())), path, escaped=True)


def read_hf_dataset(ds, origin: str) -> list[Record]:
    """A `datasets.Dataset` with the facebook/empathetic_dialogues columns."""
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(origin, "columns", missing[0], f"missing column; the data set has {ds.column_names}")
    return records_from_rows(((f"row {i}", r) for i, r in enumerate(ds)), origin, escaped=True)


# -- JSON forms -----------------------------------------------------------------------------------------------

def record_from_json(obj: object, file: Path, where: str) -> Record:
    """One JSON record in the shared form (history list) or the authors' form (context with </s>)."""
    if not isinstance(obj, dict):
        raise DataError(file, where, None, f"expected a JSON object, got {type(obj).__name__}")
    if "history" in obj:
        for col in ("conv_id", "emotion", "situation", "history", "response"):
            if col not in obj:
                raise DataError(file, where, col, "missing")
        if not isinstance(obj["history"], list):
            raise DataError(file, where, "history", f"expected a list of utterances, got {type(obj['history']).__name__}")
        rec = Record(str(obj["conv_id"]), obj["emotion"], obj["situation"] or "", tuple(obj["history"]), obj["response"])
        return check_record(rec, file, where)
    if "context" in obj:
        if "response" not in obj:
            raise DataError(file, where, "response", "missing")
        if not isinstance(obj["context"], str):
            raise DataError(file, where, "context", f"expected a string, got {type(obj['context']).__name__}")
        history = tuple(t.strip() for t in obj["context"].split(AUTHORS_SEPARATOR))
        conv_id = str(obj.get("conv_id", f"{file.stem}:{where.split()[-1]}"))
        rec = Record(conv_id, obj.get("emotion"), obj.get("situation", ""), history, obj["response"])
        return check_record(rec, file, where, emotion_required=False)
    raise DataError(file, where, "history", "missing (neither the shared form with 'history' nor the authors' 'context')")


def read_jsonl(path: Path) -> list[Record]:
    records = []
    for n, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"line {n}", None, f"not valid JSON ({e.msg} at column {e.colno}; a truncated line?)") from None
        records.append(record_from_json(obj, path, f"line {n}"))
    return records


def read_json(path: Path) -> list[Record]:
    text = "\n".join(line for _, line in _text_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return read_jsonl(path)  # JSON lines saved with a .json suffix
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(path, "top level", None, "expected a list of records")
    return [record_from_json(obj, path, f"record {i}") for i, obj in enumerate(data)]


# -- finding a split ----------------------------------------------------------------------------------------

READERS = {".csv": read_ed_csv, ".jsonl": read_jsonl, ".json": read_json, ".parquet": read_parquet}
SPLIT_ALIASES = {"valid": ("valid", "validation"), "validation": ("validation", "valid")}


def resolve_source(source: str | os.PathLike) -> str | Path:
    """`packaged:seed` -> data/seed; `hf:<id>` stays a string; a relative path is taken from the repo root."""
    s = str(source)
    if s == "packaged:seed":
        return SEED_DIR
    if s.startswith("hf:"):
        return s
    path = Path(s).expanduser()
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    return path


def find_split_file(folder: Path, split: str) -> Path | None:
    for name in SPLIT_ALIASES.get(split, (split,)):
        for suffix in (".jsonl", ".csv", ".json", ".parquet"):
            if (folder / f"{name}{suffix}").exists():
                return folder / f"{name}{suffix}"
        shards = sorted(folder.glob(f"{name}-*.parquet")) + sorted(folder.glob(f"data/{name}-*.parquet"))
        if shards:
            return shards[0]
    return None


def split_available(source: str | os.PathLike, split: str) -> bool:
    src = resolve_source(source)
    if isinstance(src, str):
        return True  # a hub data set has all three splits
    if src.is_file():
        return True
    return src.is_dir() and (find_split_file(src, split) is not None or (src / "dataset_dict.json").exists())


def load_ed(source: str | os.PathLike, split: str = "train") -> list[Record]:
    """Read one split of ED (or of the seed corpus) from any of its forms; see the module docstring."""
    src = resolve_source(source)
    if isinstance(src, str):
        return _load_hub(src[3:], split)
    if src.is_file():
        return _read_file(src)
    if not src.is_dir():
        raise DataError(src, "path", None, "does not exist (data_source should be packaged:seed, a folder, a file or hf:<id>)")
    if (src / "dataset_dict.json").exists():
        import datasets

        dd = datasets.load_from_disk(str(src))
        name = next((n for n in SPLIT_ALIASES.get(split, (split,)) if n in dd), None)
        if name is None:
            raise DataError(src, "splits", None, f"no split {split!r}; the data set has {list(dd)}")
        return read_hf_dataset(dd[name], f"{src}[{name}]")
    path = find_split_file(src, split)
    if path is None:
        raise DataError(src, f"split {split!r}", None,
                        f"no file {split}.jsonl, .csv, .json, .parquet or {split}-*.parquet in this folder")
    if path.suffix == ".parquet" and "-" in path.stem:
        return [r for shard in sorted(path.parent.glob(path.stem.split("-")[0] + "-*.parquet")) for r in read_parquet(shard)]
    return _read_file(path)


def _read_file(path: Path) -> list[Record]:
    reader = READERS.get(path.suffix)
    if path.suffix == ".arrow":
        import datasets

        return read_hf_dataset(datasets.Dataset.from_file(str(path)), str(path))
    if reader is None:
        raise DataError(path, "file name", None, f"unknown format {path.suffix!r} (known: {', '.join(READERS)}, .arrow)")
    records = reader(path)
    if not records:
        raise DataError(path, "whole file", None, "holds no listener turn")
    return records


def _load_hub(dataset_id: str, split: str) -> list[Record]:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError(f"hf:{dataset_id}", f"split {split!r}", None,
                        "HF_HUB_OFFLINE=1: the hub cannot be reached; point data_source at a local copy "
                        "(e.g. the official tarball via synthempathy.data.download_ed)")
    import datasets

    name = "validation" if split == "valid" else split
    return read_hf_dataset(datasets.load_dataset(dataset_id, split=name), f"hf:{dataset_id}[{name}]")


# -- official tarball ---------------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_ed(dest: str | os.PathLike, url: str = ED_URL, sha256: str | None = ED_SHA256) -> Path:
    """Fetch the official ED tarball (when online), verify its checksum and unpack it; returns the CSV folder.

    Already unpacked -> returns at once. A checksum mismatch deletes the download and raises.
    """
    dest = Path(dest)
    folder = dest / "empatheticdialogues"
    if (folder / "train.csv").exists():
        return folder
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest, suffix=".tar.gz", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                shutil.copyfileobj(resp, tmp)
        except OSError as e:
            os.unlink(tmp.name)
            raise DataError(url, "download", None, f"could not fetch the tarball: {e}") from None
    tarball = Path(tmp.name)
    got = sha256_of(tarball)
    if sha256 and got != sha256:
        tarball.unlink()
        raise DataError(url, "download", "sha256", f"checksum mismatch: expected {sha256}, got {got}")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    tarball.unlink()
    if not (folder / "train.csv").exists():
        raise DataError(url, "tarball", None, "does not contain empatheticdialogues/train.csv")
    return folder


# -- writing ------------------------------------------------------------------------------------------------

def write_ed_csv(path: str | os.PathLike, conversations: Iterable[dict]) -> None:
    """Write conversations ({conv_id, emotion, situation, turns}) in the upstream CSV layout."""
    lines = [",".join(CSV_COLUMNS)]
    for c in conversations:
        for i, turn in enumerate(c["turns"], 1):
            esc = [c["conv_id"], str(i), c["emotion"], c["situation"].replace(",", "_comma_"), str(i % 2),
                   turn.replace(",", "_comma_"), "", ""]
            lines.append(",".join(esc))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- stage 00: the profile's data, normalized into the run folder ---------------------------------------------

def conversations(records: Iterable[Record]) -> dict[str, list[Record]]:
    convs: dict[str, list[Record]] = {}
    for r in records:
        convs.setdefault(r.conv_id, []).append(r)
    return convs


def corpus_stats(records: list[Record]) -> dict:
    """The numbers notebook 00 shows: sizes, emotion counts, turns per conversation, response lengths."""
    from collections import Counter

    convs = conversations(records)
    turns = [max(len(r.history) + 1 for r in rs) for rs in convs.values()]
    words = [len(r.response.split()) for r in records]
    return {
        "records": len(records),
        "conversations": len(convs),
        "emotions": dict(sorted(Counter(rs[0].emotion for rs in convs.values()).items())),
        "turns_per_conversation": dict(sorted(Counter(turns).items())),
        "response_words": words,
        "mean_response_words": round(sum(words) / max(len(words), 1), 2),
    }


def prepare(cfg, store) -> dict:
    """Read the profile's training and evaluation splits and write them to 00_data/ as JSON lines.

    The evaluation split falls back to `valid` when the source has no `test` (../shared/ed ships none).
    """
    from .store import write_json, write_jsonl

    train = load_ed(cfg.data_source, cfg.train_split)
    if cfg.max_seed_records:
        train = train[: cfg.max_seed_records]
    eval_split = cfg.eval_split
    if not split_available(cfg.data_source, eval_split):
        eval_split = "valid"
    evaluation = load_ed(cfg.data_source, eval_split)
    write_jsonl(store.path("00_data", "train.jsonl"), (r.to_dict() for r in train))
    write_jsonl(store.path("00_data", "eval.jsonl"), (r.to_dict() for r in evaluation))
    summary = {"source": str(cfg.data_source), "train_split": cfg.train_split, "eval_split": eval_split,
               "train": {k: v for k, v in corpus_stats(train).items() if k != "response_words"},
               "eval": {k: v for k, v in corpus_stats(evaluation).items() if k != "response_words"}}
    write_json(store.path("00_data", "summary.json"), summary)
    return summary


def read_records(path: str | os.PathLike) -> list[Record]:
    """Records written by `prepare` (or any file in the shared JSON-lines form)."""
    return read_jsonl(Path(path))
