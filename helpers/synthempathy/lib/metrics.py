"""The authors' automatic metrics for generated listener turns (intervals: bootstrap.py; tokens: tokens.py).

Protocol: the authors' `dialogue_evaluation` (PAPER.md section 6) on the tokens of `tokens.tokenize`, NLTK's
`word_tokenize` of the lower-cased text; every figure x100 and rounded to 6 decimals, as they report them.
- BLEU-1..4: nltk corpus BLEU, cumulative uniform weights (BLEU-n uses (1/n,)*n),
  `SmoothingFunction(epsilon=1e-12).method1`, one reference per hypothesis.
- Dist-1/2: (distinct n-grams + 1e-5) / (all n-grams + 1e-5) over all predictions (n-grams never cross two).
- ROUGE-1/2/L: mean over examples of rouge-score's F-measure, no stemming, on `tokens.normalize_for_rouge`
  of the joined tokens (articles and punctuation dropped; a side with no word left is one empty token).
- F1: corpus unigram F1 of multiset overlaps: P = (overlap + 1e-8) / (prediction tokens + 1e-8) and
  R = (overlap + 1e-8) / (gold tokens + 1e-8), each count summed over the corpus.
- `length` (ours): mean number of prediction tokens, neither scaled nor rounded.
Checked against their code run from their repository (nltk 3.10.4): neighbour-gold and constant-reply
predictions on their preprocessed ED test file and on 1,000 ED valid responses give the same 40 figures to
the 6th decimal (tests/test_metrics.py holds the ED valid ones).
Edge cases, all as theirs: an empty prediction still adds 1 to every BLEU n-gram denominator (nltk's
`max(1, count)`) and scores ROUGE 0 against a gold with words; the epsilons give Dist 100 to a corpus without n-grams (e.g. Dist-2
of single-token predictions), F1 100 to an all-empty corpus and F1 ~1e-6 when no word is shared; single-token
predictions get BLEU-2..4 from the 1e-12 smoothing alone (BLEU-2 = 1e-6, i.e. 1e-4 after x100).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from nltk.translate.bleu_score import (
    SmoothingFunction,
    brevity_penalty,
    closest_ref_length,
    modified_precision,
)
from nltk.util import ngrams
from rouge_score import rouge_scorer

from ..chain.store import jsonl_lines
from .tokens import normalize_for_rouge, tokenize

KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "dist1", "dist2", "rouge1", "rouge2", "rougeL", "f1", "length")
BLEU_WEIGHTS = tuple((1.0 / n,) * n for n in range(1, 5))
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SIZE_DEPENDENT = ("dist1", "dist2")  # figures that change with corpus size itself
_SMOOTHING = SmoothingFunction(epsilon=1e-12).method1
DIST_EPSILON = 1e-5  # the authors start both Dist counters at 1e-5
F1_EPSILON = 1e-8  # and all three unigram-F1 counters (overlap, prediction and gold tokens) at 1e-8
DECIMALS = 6  # the authors report round(100 * figure, 6)


@cache
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    # rouge-score only calls .tokenize(text) on each side; its default would also drop non-alphanumerics
    tokenizer = SimpleNamespace(tokenize=normalize_for_rouge)
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------------------
# per-example sufficient statistics


@dataclass
class ExampleStats:
    """Everything the corpus metrics need from each (prediction, reference) pair, one row per example."""

    bleu_num: np.ndarray  # (n, 4) clipped n-gram matches, orders 1..4
    bleu_den: np.ndarray  # (n, 4) max(1, hypothesis n-grams), as nltk counts them
    hyp_len: np.ndarray  # (n,)
    ref_len: np.ndarray  # (n,)
    ngram_total: np.ndarray  # (n, 2) uni- and bigrams in the prediction
    ngram_ids: list[tuple[np.ndarray, np.ndarray, int]]  # per order: (distinct ids, owner example, vocab)
    rouge: np.ndarray  # (n, 3) F-measures
    overlap: np.ndarray  # (n,) multiset unigram overlap
    gold_len: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.hyp_len)


def _bleu_counts(pred: list[str], ref: list[str]) -> tuple[list[int], list[int]]:
    nums, dens = [], []
    for n in range(1, 5):
        p = modified_precision([ref], pred, n)  # an unnormalised Fraction: the raw counts
        nums.append(p.numerator)
        dens.append(p.denominator)
    return nums, dens


def _distinct_ngram_ids(preds: list[list[str]], n: int) -> tuple[np.ndarray, np.ndarray, int]:
    # each example contributes its set of n-gram ids; a resample's distinct count is the union's size
    vocab: dict[tuple[str, ...], int] = {}
    ids, owner = [], []
    for i, toks in enumerate(preds):
        for gram in set(ngrams(toks, n)):
            ids.append(vocab.setdefault(gram, len(vocab)))
            owner.append(i)
    return np.array(ids, dtype=np.int64), np.array(owner, dtype=np.int64), len(vocab)


def example_stats(preds: list[list[str]], refs: list[list[str]]) -> ExampleStats:
    """Per-example statistics from already tokenized predictions and references."""
    check_pair(preds, refs)
    scorer = _rouge_scorer()
    num, den, rouge, overlap = [], [], [], []
    for pred, ref in zip(preds, refs):
        a, b = _bleu_counts(pred, ref)
        num.append(a)
        den.append(b)
        scores = scorer.score(" ".join(ref), " ".join(pred))  # score(target, prediction)
        rouge.append([scores[t].fmeasure for t in ROUGE_TYPES])
        overlap.append(sum((Counter(pred) & Counter(ref)).values()))
    hyp_len = np.array([len(p) for p in preds], dtype=np.int64)
    return ExampleStats(
        bleu_num=np.array(num, dtype=np.int64),
        bleu_den=np.array(den, dtype=np.int64),
        hyp_len=hyp_len,
        ref_len=np.array([closest_ref_length([r], len(p)) for p, r in zip(preds, refs)], dtype=np.int64),
        ngram_total=np.array([[max(len(p) - n + 1, 0) for n in (1, 2)] for p in preds], dtype=np.int64),
        ngram_ids=[_distinct_ngram_ids(preds, n) for n in (1, 2)],
        rouge=np.array(rouge, dtype=np.float64),
        overlap=np.array(overlap, dtype=np.int64),
        gold_len=np.array([len(r) for r in refs], dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------------------
# corpus figures from statistics and multiplicities


def _bleu(num: Sequence[int], den: Sequence[int], hyp_len: int, ref_len: int) -> list[float]:
    # the tail of nltk corpus_bleu, fed with the summed counts, so the floats are the same
    if num[0] == 0:
        return [0.0] * 4
    bp = brevity_penalty(ref_len, hyp_len)
    p_n = _SMOOTHING([Fraction(int(a), int(b), _normalize=False) for a, b in zip(num, den)])
    out = []
    for w in BLEU_WEIGHTS:
        s = (w_i * math.log(p_i) for w_i, p_i in zip(w, p_n) if p_i > 0)
        out.append(bp * math.exp(math.fsum(s)))
    return out


def _dist_ratio(distinct: int, total: int) -> float:
    # the authors' Dist: both counts start at 1e-5, so a corpus without any n-gram scores 1, not 0
    return (distinct + DIST_EPSILON) / (total + DIST_EPSILON)


def _distinct(ids: np.ndarray, owner: np.ndarray, vocab: int, weights: np.ndarray, total: int) -> float:
    present = np.bincount(ids[weights[owner] > 0], minlength=vocab)
    return _dist_ratio(int(np.count_nonzero(present)), total)


def _f1(overlap: int, pred_len: int, gold_len: int) -> float:
    p = (overlap + F1_EPSILON) / (pred_len + F1_EPSILON)
    r = (overlap + F1_EPSILON) / (gold_len + F1_EPSILON)
    return 2 * p * r / (p + r)


def corpus_metrics(stats: ExampleStats, weights: np.ndarray | None = None) -> dict[str, float]:
    """Corpus figures (x100) for the corpus holding example i `weights[i]` times (default: once each)."""
    w = np.ones(len(stats), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64)
    n = int(w.sum())
    if n == 0:
        raise ValueError("the weights select no example")
    num, den = w @ stats.bleu_num, w @ stats.bleu_den
    hyp_len, ref_len = int(w @ stats.hyp_len), int(w @ stats.ref_len)
    out = dict(zip(KEYS[:4], (100 * b for b in _bleu(num, den, hyp_len, ref_len))))
    totals = w @ stats.ngram_total
    for k, (ids, owner, vocab), total in zip(("dist1", "dist2"), stats.ngram_ids, totals):
        out[k] = 100 * float(_distinct(ids, owner, vocab, w, int(total)))
    rouge = (w @ stats.rouge) / n
    out.update({t: 100 * float(v) for t, v in zip(ROUGE_TYPES, rouge)})
    out["f1"] = 100 * _f1(int(w @ stats.overlap), hyp_len, int(w @ stats.gold_len))
    out = {k: round(v, DECIMALS) for k, v in out.items()}
    out["length"] = hyp_len / n  # ours, not the authors': not rounded
    return out


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Corpus Dist-n x 100 of raw texts on the metric tokens, the same figure as `automatic_metrics`' Dist."""
    grams = [tuple(tok[i: i + n]) for tok in map(tokenize, texts) for i in range(len(tok) - n + 1)]
    return 100.0 * _dist_ratio(len(set(grams)), len(grams))


def check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def automatic_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """BLEU-1..4, Dist-1/2, ROUGE-1/2/L, unigram F1 (all x100) and mean prediction length in tokens."""
    check_pair(predictions, references)
    return corpus_metrics(example_stats([tokenize(p) for p in predictions], [tokenize(r) for r in references]))


# ---------------------------------------------------------------------------------------------------------
# embedding similarity


def embedding_cosines(predictions: list[str], references: list[str], embed: Callable) -> np.ndarray:
    """Per-example cosine of prediction and reference embeddings; `embed(list[str]) -> (n, d) array`."""
    check_pair(predictions, references)
    a, b = (np.asarray(embed(list(x)), dtype=np.float64) for x in (predictions, references))
    if a.shape != b.shape or a.ndim != 2 or len(a) != len(predictions):
        raise ValueError(f"embed returned shapes {a.shape} and {b.shape} for {len(predictions)} texts")
    # renormalise: cheap, and a caller that forgot normalize_embeddings=True still gets cosines
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", a, b)


def embedding_similarity(predictions: list[str], references: list[str], embed: Callable) -> float:
    """Mean cosine x100 between each prediction and its reference."""
    return 100 * float(embedding_cosines(predictions, references, embed).mean())


# ---------------------------------------------------------------------------------------------------------
# files


def _records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of a predictions or references file; at least one, each a JSON object."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = list(jsonl_lines(path))
    for lineno, obj in rows:
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def _text_field(path: Path, lineno: int, obj: dict, field: str) -> str:
    if field not in obj:
        raise ValueError(f"{path}: line {lineno}: missing field '{field}'")
    if not isinstance(obj[field], str):
        raise ValueError(
            f"{path}: line {lineno}: field '{field}' is {type(obj[field]).__name__}, not a string"
        )
    return obj[field]


def _golds_by_id(pred_rows, ref_rows, ref_path: Path, gold_field: str) -> list[str]:
    by_id: dict = {}
    for lineno, obj in ref_rows:
        key = json.dumps(obj["id"])  # ids may be ints or strings; keep 1 and "1" apart
        if key in by_id:
            raise ValueError(f"{ref_path}: line {lineno}: field 'id': duplicate id {obj['id']!r}")
        by_id[key] = _text_field(ref_path, lineno, obj, gold_field)
    pred_keys = [json.dumps(obj["id"]) for _, obj in pred_rows]
    if len(set(pred_keys)) != len(pred_keys) or set(pred_keys) != set(by_id):
        missing = sorted(set(by_id) - set(pred_keys))[:5]
        extra = sorted(set(pred_keys) - set(by_id))[:5]
        raise ValueError(
            f"{ref_path}: field 'id': predictions and references differ in ids "
            f"(missing predictions for {missing}, unknown ids {extra}, or duplicates)"
        )
    return [by_id[k] for k in pred_keys]


def score_file(
    path: str | os.PathLike,
    prediction_field: str = "prediction",
    gold_field: str = "gold",
    references_path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """`automatic_metrics` of a JSONL predictions file.

    Golds come from `gold_field` of the same records, or of a separate references JSONL, matched on `id`
    when every record of both files has one and line by line otherwise.
    """
    path = Path(path)
    pred_rows = _records(path)
    preds = [_text_field(path, n, obj, prediction_field) for n, obj in pred_rows]
    if references_path is None:
        golds = [_text_field(path, n, obj, gold_field) for n, obj in pred_rows]
    else:
        ref_path = Path(references_path)
        ref_rows = _records(ref_path)
        if all("id" in obj for _, obj in pred_rows + ref_rows):
            golds = _golds_by_id(pred_rows, ref_rows, ref_path, gold_field)
        elif len(ref_rows) != len(pred_rows):
            raise ValueError(
                f"{ref_path}: {len(ref_rows)} records but {path} has {len(pred_rows)} "
                "and they carry no 'id' to match on"
            )
        else:
            golds = [_text_field(ref_path, n, obj, gold_field) for n, obj in ref_rows]
    return automatic_metrics(preds, golds)
