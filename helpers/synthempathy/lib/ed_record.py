"""One record of EmpatheticDialogues: a listener turn with the dialogue before it; and what makes one valid.

Every problem with the input is a DataError naming the file, the line or record, and the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

EMOTIONS = (
    "afraid", "angry", "annoyed", "anticipating", "anxious", "apprehensive", "ashamed", "caring",
    "confident", "content", "devastated", "disappointed", "disgusted", "embarrassed", "excited", "faithful",
    "furious", "grateful", "guilty", "hopeful", "impressed", "jealous", "joyful", "lonely", "nostalgic",
    "prepared", "proud", "sad", "sentimental", "surprised", "terrified", "trusting",
)


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

def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; a byte that is not UTF-8 is an error naming its line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(path, f"line {n}", None,
                                f"not UTF-8 text (byte {raw[e.start]:#x} at column {e.start + 1}); "
                                "re-save the file as UTF-8") from None
