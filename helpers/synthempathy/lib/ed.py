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

import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ..chain.config import REPO_ROOT
from ..chain.store import JsonlLineError, hash_file, jsonl_lines
from .ed_record import EMOTIONS, DataError, Record, check_record, text_lines  # noqa: F401 - EMOTIONS: ED's vocabulary, read from here
from .ed_rows import read_ed_csv, read_hf_dataset, read_parquet

SEED_DIR = REPO_ROOT / "data" / "seed"
AUTHORS_SEPARATOR = "</s>"

# The official tarball and its checksum as ParlAI's build script records it.
ED_URL = "http://parl.ai/downloads/empatheticdialogues/empatheticdialogues.tar.gz"
ED_SHA256 = "56f234d77b7dd1f005fd365bb17769cfe346c3c84295b69bc069c8ccb83be03d"


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
    """Records in the shared or the authors' JSON form, one per line."""
    try:
        return [record_from_json(obj, path, f"line {n}") for n, obj in jsonl_lines(path)]
    except JsonlLineError as e:
        raise DataError(path, f"line {e.line}", None, e.problem) from None


def read_json(path: Path) -> list[Record]:
    text = "\n".join(line for _, line in text_lines(path))
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
                        "(e.g. the official tarball via synthempathy.lib.ed.download_ed)")
    import datasets

    name = "validation" if split == "valid" else split
    return read_hf_dataset(datasets.load_dataset(dataset_id, split=name), f"hf:{dataset_id}[{name}]")


# -- official tarball ---------------------------------------------------------------------------------------

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
    got = hash_file(tarball)
    if sha256 and got != sha256:
        tarball.unlink()
        raise DataError(url, "download", "sha256", f"checksum mismatch: expected {sha256}, got {got}")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    tarball.unlink()
    if not (folder / "train.csv").exists():
        raise DataError(url, "tarball", None, "does not contain empatheticdialogues/train.csv")
    return folder


