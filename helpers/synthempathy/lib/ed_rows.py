"""ED's upstream form, one row per utterance: the official tarball's CSV, and the same columns as parquet or a
Hugging Face `datasets.Dataset`; read into listener-turn records, and written (for the project's seed corpus).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .ed_record import DataError, Record, check_record, text_lines

CSV_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance", "selfeval", "tags")
REQUIRED_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "utterance")


def _unescape(text: str) -> str:
    return text.replace("_comma_", ",").strip()


def read_ed_csv(path: Path) -> list[Record]:
    """The official tarball's CSV: a header, then one unquoted row per utterance, commas as `_comma_`."""
    lines = text_lines(path)
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


def write_ed_csv(path: str | os.PathLike, conversations: Iterable[dict]) -> None:
    """Write conversations ({conv_id, emotion, situation, turns}) in the upstream CSV layout."""
    lines = [",".join(CSV_COLUMNS)]
    for c in conversations:
        for i, turn in enumerate(c["turns"], 1):
            esc = [c["conv_id"], str(i), c["emotion"], c["situation"].replace(",", "_comma_"), str(i % 2),
                   turn.replace(",", "_comma_"), "", ""]
            lines.append(",".join(esc))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
