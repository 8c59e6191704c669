"""00_data, the seed data (EmpatheticDialogues): the profile's training and evaluation splits, read from any
form of ED (lib/ed.py) and written into the run folder as JSON lines, with the corpus statistics of notebook 00.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .chain.store import write_json, write_jsonl
from .lib.ed import Record, load_ed, read_jsonl, split_available
from .lib.fidelity import table_for as fidelity_table  # noqa: F401 - notebook 00 shows it
from .lib.stage import Stage

STAGE = Stage("00_data")


def conversations(records: Iterable[Record]) -> dict[str, list[Record]]:
    convs: dict[str, list[Record]] = {}
    for r in records:
        convs.setdefault(r.conv_id, []).append(r)
    return convs


def corpus_stats(records: list[Record]) -> dict:
    """The numbers notebook 00 shows: sizes, emotion counts, turns per conversation, response lengths."""
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


@STAGE.step
def run_stage(cfg, store) -> dict:
    """Read the profile's training and evaluation splits and write them to 00_data/ as JSON lines.

    The evaluation split falls back to `valid` when the source has no `test` (../shared/ed ships none);
    `eval_source`, when set, replaces the source of the evaluation records (e.g. the authors' own test file).
    """
    train = load_ed(cfg.data_source, cfg.train_split)
    if cfg.max_seed_records:
        train = train[: cfg.max_seed_records]
    eval_from = cfg.eval_source or cfg.data_source
    eval_split = cfg.eval_split
    if not split_available(eval_from, eval_split):
        eval_split = "valid"
    evaluation = load_ed(eval_from, eval_split)
    write_jsonl(store.path("00_data", "train.jsonl"), (r.to_dict() for r in train))
    write_jsonl(store.path("00_data", "eval.jsonl"), (r.to_dict() for r in evaluation))
    summary = {"source": str(cfg.data_source), "train_split": cfg.train_split, "eval_split": eval_split,
               **({"eval_source": str(cfg.eval_source)} if cfg.eval_source else {}),
               "train": {k: v for k, v in corpus_stats(train).items() if k != "response_words"},
               "eval": {k: v for k, v in corpus_stats(evaluation).items() if k != "response_words"}}
    write_json(store.path("00_data", "summary.json"), summary)
    return summary


def read_records(path) -> list[Record]:
    """Records written by `run_stage` (or any file in the shared JSON-lines form)."""
    return read_jsonl(Path(path))
