"""Automatic metrics: hand-computed cases, the tokenizer against NLTK's word_tokenize, bootstrap, files."""

import json
import math
import random
from pathlib import Path

import nltk
import numpy as np
import pytest
from nltk.tabdata import TabEncoder
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

from synthempathy.lib import bootstrap as B
from synthempathy.lib import metrics as M
from synthempathy.lib import tokens as T

ED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "ed"
needs_ed = pytest.mark.skipif(
    not (ED_DIR / "valid.jsonl").is_file(), reason=f"real EmpatheticDialogues copy not found at {ED_DIR}"
)


def ed_responses() -> list[str]:
    with (ED_DIR / "valid.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["response"] for line in f]


# ---------------------------------------------------------------------------------------------------------
# tokenizer


def test_tokenize_splits_contractions_and_lowercases():
    assert T.tokenize("I don't know.") == ["i", "do", "n't", "know", "."]


def test_tokenize_punctuation_and_quotes():
    assert T.tokenize("Wow, really?!") == ["wow", ",", "really", "?", "!"]
    assert T.tokenize('He said "hi".') == ["he", "said", "``", "hi", "''", "."]


def test_tokenize_splits_sentences_before_word_tokenizing():
    # without the Punkt split the Treebank tokenizer only detaches the text's final period: "did."
    assert T.tokenize("I did. It was fine.") == ["i", "did", ".", "it", "was", "fine", "."]
    assert nltk.word_tokenize("I did. It was fine.", preserve_line=True)[1] == "did."


def test_tokenize_lowercases_before_sentence_splitting():
    # the authors tokenize word_tokenize(text.lower()). "ok" is a Punkt abbreviation, after which Punkt
    # breaks only before a word that looks like a sentence start: "I" does, "i" does not. Lower-cased first,
    # "OK." is one token; lower-casing the tokens of the cased text would give "ok", "."
    assert T.tokenize("OK. I hope so.") == ["ok.", "i", "hope", "so", "."]
    assert [t.lower() for t in T.word_tokenize("OK. I hope so.")] == ["ok", ".", "i", "hope", "so", "."]


def test_tokenize_keeps_known_abbreviation():
    # "mr" is in the English Punkt abbreviation list: no sentence break, so "mr." stays one token
    assert T.tokenize("Mr. Smith came. I left.") == ["mr.", "smith", "came", ".", "i", "left", "."]


def test_tokenize_empty_text():
    assert T.tokenize("") == []
    assert T.tokenize("   ") == []


@pytest.fixture
def punkt_tab_from_bundled_params(tmp_path, monkeypatch):
    """punkt_tab/english written from the parameters `metrics` uses, visible to nltk.word_tokenize."""
    params = T._sentence_splitter()._params
    folder = tmp_path / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True)
    enc = TabEncoder()  # the encoder nltk's own save_punkt_params uses
    (folder / "collocations.tab").write_text(enc.tups2tab(params.collocations), encoding="utf-8")
    (folder / "sent_starters.txt").write_text(enc.set2txt(params.sent_starters), encoding="utf-8")
    (folder / "abbrev_types.txt").write_text(enc.set2txt(params.abbrev_types), encoding="utf-8")
    (folder / "ortho_context.tab").write_text(enc.ivdict2tab(params.ortho_context), encoding="utf-8")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)] + list(nltk.data.path))
    from nltk.tokenize import _get_punkt_tokenizer

    _get_punkt_tokenizer.cache_clear()
    yield
    _get_punkt_tokenizer.cache_clear()


def nltk_tokens(text: str) -> list[str]:
    return nltk.word_tokenize(text.lower())  # the authors' metric tokens


HAND_TEXTS = [
    "I did. It was fine.",
    "Mr. Smith came. I don't know!",
    "What?! No way... Really?",
    "I'm so sorry to hear that.That must have been hard",
    "Wow!!! Congrats. What will you do next?",
    "It was at 5 p.m. on Jan. 3. We left.",
    '"Really?" she asked. "Yes."',
]


def test_tokenize_equals_nltk_word_tokenize(punkt_tab_from_bundled_params):
    for text in HAND_TEXTS:
        assert T.tokenize(text) == nltk_tokens(text), text


@pytest.mark.needs_ed
@needs_ed
def test_tokenize_equals_nltk_word_tokenize_on_ed_valid(punkt_tab_from_bundled_params):
    texts = ed_responses()
    ours = [T.tokenize(t) for t in texts]
    differ = [i for i, (t, toks) in enumerate(zip(texts, ours)) if toks != nltk_tokens(t)]
    assert differ == []
    # the figures the module docstring reports: the preserve_line=True shortcut, and lower-casing the tokens
    # of the cased text instead of the text
    line = sum(toks != nltk.word_tokenize(t.lower(), preserve_line=True) for t, toks in zip(texts, ours))
    after = sum(toks != [w.lower() for w in T.word_tokenize(t)] for t, toks in zip(texts, ours))
    assert (len(texts), line, after) == (5738, 2033, 7)


# ---------------------------------------------------------------------------------------------------------
# hand-computed metrics


def test_dist_counts_ngrams_within_predictions():
    # tokens [a b a], [b c]: unigrams 5, distinct {a, b, c} = 3 -> ~60;
    # bigrams (a b), (b a), (b c) = 3 distinct of 3 -> 100 ("a b" across the two texts is not a bigram)
    m = M.automatic_metrics(["a b a", "b c"], ["x", "y"])
    assert m["dist1"] == pytest.approx(60.0, abs=1e-3)
    assert m["dist2"] == pytest.approx(100.0)
    # tokens [a a b], [c]: distinct 3 of 4 unigrams -> ~75
    assert M.automatic_metrics(["a a b", "c"], ["x", "y"])["dist1"] == pytest.approx(75.0, abs=1e-3)


def test_dist_adds_the_authors_epsilon():
    # both counts start at 1e-5: [a b a], [b c] -> (3 + 1e-5) / (5 + 1e-5) = 0.6 + 4e-6 / 5.00001
    m = M.automatic_metrics(["a b a", "b c"], ["x", "y"])
    assert m["dist1"] == pytest.approx(100 * (0.6 + 4e-6 / 5.00001), abs=5e-7)  # 60.00008 after rounding
    # no bigram anywhere: 1e-5 / 1e-5 = 1 -> 100, not 0
    assert M.automatic_metrics(["yes", "no"], ["x", "y"])["dist2"] == 100.0
    assert M.distinct_n(["yes", "no"], 2) == 100.0


def test_bleu_single_pair_with_brevity_penalty():
    # hyp [the cat], ref [the cat sat on]: p1 = 2/2, p2 = 1/1, BP = exp(1 - 4/2) = exp(-1)
    # p3 = p4 = 0/1 -> smoothed to 1e-12: BLEU-3 = e^-1 * (1e-12)^(1/3) = e^-1 * 1e-4, BLEU-4 = e^-1 * 1e-6
    m = M.automatic_metrics(["the cat"], ["the cat sat on"])
    e = math.exp(-1)
    assert m["bleu1"] == pytest.approx(100 * e, abs=5e-7)  # figures are rounded to 6 decimals
    assert m["bleu2"] == pytest.approx(100 * e, abs=5e-7)
    assert m["bleu3"] == pytest.approx(100 * e * 1e-4, abs=5e-7)
    assert m["bleu4"] == pytest.approx(100 * e * 1e-6, abs=5e-7)


def test_figures_are_rounded_to_six_decimals():
    # the authors report round(100 * v, 6): BLEU-4 above is 100 * e^-1 * 1e-6 = 3.6788e-5 -> 3.7e-5;
    # length is ours and stays unrounded
    assert M.automatic_metrics(["the cat"], ["the cat sat on"])["bleu4"] == 3.7e-5
    assert M.automatic_metrics(["a b c"], ["a b c"])["length"] == 3.0
    assert M.automatic_metrics(["a b", "c"], ["a b", "c"])["length"] == 1.5


def test_bleu_sums_counts_over_the_corpus():
    # [a b c] vs [a b x]: 2/3 unigrams, 1/2 bigrams; [d] vs [d e]: 1/1 unigrams, 0 bigrams of max(1, 0) = 1
    # p1 = 3/4, p2 = 1/3, BP = exp(1 - 5/4); averaging per sentence would give something else
    m = M.automatic_metrics(["a b c", "d"], ["a b x", "d e"])
    bp = math.exp(1 - 5 / 4)
    assert m["bleu1"] == pytest.approx(100 * bp * 0.75)
    assert m["bleu2"] == pytest.approx(100 * bp * math.sqrt(0.75 / 3))


def test_bleu_matches_nltk_corpus_bleu():
    rng = random.Random(0)
    vocab = "i am so sorry to hear that . it was great fun ! what happened ?".split()
    preds = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(40)]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(40)]
    m = M.automatic_metrics(preds, refs)
    hyps, golds = [T.tokenize(p) for p in preds], [[T.tokenize(r)] for r in refs]
    smooth = SmoothingFunction(epsilon=1e-12).method1
    for n in range(1, 5):
        assert m[f"bleu{n}"] == round(
            100 * corpus_bleu(golds, hyps, weights=(1 / n,) * n, smoothing_function=smooth), 6
        )


def test_rouge_normalizes_articles_and_punctuation():
    assert T.normalize_for_rouge("The cat's toy, an apple; theater") == [
        "cat",
        "s",
        "toy",
        "apple",
        "theater",
    ]
    # pred -> [cat sat], ref "A cat sat on a mat." -> [cat sat on mat]
    # ROUGE-1: P 2/2, R 2/4 -> F 2/3 (with the articles kept it would be 4/9); ROUGE-2: (cat sat) 1/1 vs 1/3
    # -> F 1/2; ROUGE-L: LCS [cat sat] -> 2/3
    m = M.automatic_metrics(["The cat sat."], ["A cat sat on a mat."])
    assert m["rouge1"] == pytest.approx(200 / 3)
    assert m["rouge2"] == pytest.approx(50.0)
    assert m["rougeL"] == pytest.approx(200 / 3)


def test_rouge_of_a_text_with_no_word_is_one_empty_token():
    # the authors split " ".join(words) on " ": "" -> [""], not []. Two word-less texts then share that token:
    # ROUGE-1 P = R = 1/1; ROUGE-2 has no bigram on either side: 0/max(0, 1) = 0; ROUGE-L LCS 1 of 1 -> 1
    assert T.normalize_for_rouge("") == [""]
    assert T.normalize_for_rouge("The ...") == [""]
    m = M.automatic_metrics(["."], ["the!"])
    assert (m["rouge1"], m["rouge2"], m["rougeL"]) == (100.0, 0.0, 100.0)
    # against a real word the empty token matches nothing
    m = M.automatic_metrics(["."], ["cat"])
    assert (m["rouge1"], m["rouge2"], m["rougeL"]) == (0.0, 0.0, 0.0)


def test_rouge_is_a_mean_over_examples():
    # example 1 identical (F 1), example 2 disjoint (F 0) -> 50
    m = M.automatic_metrics(["good day", "red car"], ["good day", "blue sky"])
    assert m["rouge1"] == pytest.approx(50.0)
    assert m["rougeL"] == pytest.approx(50.0)


def test_unigram_f1_is_corpus_multiset_overlap():
    # [a a b] & [a b b] = {a: 1, b: 1} -> 2; [c] & [d e] -> 0; P = 2/4, R = 2/5, F1 = 2PR/(P+R) = 4/9
    # (the mean of per-example F1s would be (2/3 + 0)/2 = 1/3)
    m = M.automatic_metrics(["a a b", "c"], ["a b b", "d e"])
    assert m["f1"] == pytest.approx(400 / 9)
    assert m["length"] == pytest.approx(2.0)


def test_unigram_f1_adds_the_authors_epsilon():
    # overlap, prediction and gold counts all start at 1e-8. No shared word: P = R = 1e-8 / (1 + 1e-8),
    # F1 = P -> 9.9999999e-7 after x100, 1e-6 rounded, not 0; everything empty: P = R = 1e-8 / 1e-8 -> 100
    assert M.automatic_metrics(["x"], ["y"])["f1"] == 1e-6
    assert M.automatic_metrics(["", ""], ["", ""])["f1"] == 100.0


def test_returns_every_key_as_float():
    m = M.automatic_metrics(["hello there"], ["hello you"])
    assert tuple(m) == M.KEYS
    assert all(type(v) is float for v in m.values())


# ---------------------------------------------------------------------------------------------------------
# edge cases


def test_empty_prediction_scores_zero():
    m = M.automatic_metrics([""], ["hello there"])
    # Dist of a corpus without n-grams is 1e-5 / 1e-5 (see test_dist_adds_the_authors_epsilon); F1 is
    # P = 1e-8 / 1e-8 = 1, R = 1e-8 / (2 + 1e-8): 2R / (1 + R) ~ 1e-8 (test_unigram_f1_adds_the_authors_epsilon)
    assert (m.pop("dist1"), m.pop("dist2")) == (100.0, 100.0)
    assert m.pop("f1") == pytest.approx(100 * 1e-8, abs=1e-12)
    assert set(m.values()) == {0.0}


def test_bleu_without_any_unigram_match_is_zero():
    # nltk returns 0 outright rather than smoothing p1 = 0/2
    m = M.automatic_metrics(["x y"], ["a b"])
    assert [m[f"bleu{n}"] for n in range(1, 5)] == [0.0, 0.0, 0.0, 0.0]


def test_empty_prediction_still_counts_in_bleu_denominators():
    # [] adds max(1, 0) = 1 to every denominator (as nltk does); [hello there] matches 2/2
    # p1 = 2/3, BP = exp(1 - 3/2); F1: P = 2/2, R = 2/3 -> 80
    m = M.automatic_metrics(["", "hello there"], ["hi", "hello there"])
    assert m["bleu1"] == pytest.approx(100 * (2 / 3) * math.exp(-0.5))
    assert m["f1"] == pytest.approx(80.0)
    assert m["length"] == pytest.approx(1.0)


def test_single_token_prediction():
    # p1 = 1, p2..p4 smoothed to 1e-12: BLEU-2 = (1e-12)^(1/2) = 1e-6, x100; no bigram anywhere: Dist-2 =
    # 1e-5 / 1e-5 -> 100 (the authors' epsilon)
    m = M.automatic_metrics(["yes"], ["yes"])
    assert m["bleu1"] == pytest.approx(100.0)
    assert m["bleu2"] == pytest.approx(1e-4)
    assert (m["dist1"], m["dist2"], m["rouge1"], m["rouge2"], m["f1"]) == (100.0, 100.0, 100.0, 0.0, 100.0)


def test_mismatched_or_empty_lists_raise():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        M.automatic_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        M.automatic_metrics([], [])


# ---------------------------------------------------------------------------------------------------------
# embeddings


def fake_embed(texts):
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0], "z": [3.0, 3.0]}  # z deliberately not unit length
    return np.array([table[t] for t in texts])


def test_embedding_similarity_is_mean_cosine():
    # cos(x, x) = 1, cos(z, y) = 1/sqrt(2) -> mean x100
    sim = M.embedding_similarity(["x", "z"], ["x", "y"], fake_embed)
    assert sim == pytest.approx(100 * (1 + 1 / math.sqrt(2)) / 2)


def test_embedding_similarity_checks_shapes():
    with pytest.raises(ValueError, match="shapes"):
        M.embedding_similarity(["x"], ["y"], lambda texts: np.ones(3))


# ---------------------------------------------------------------------------------------------------------
# bootstrap


def synthetic_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(5, 15))) for _ in range(n)]
    # predictions share part of their reference, so every figure varies across examples
    preds = [" ".join(r.split()[: rng.randint(1, 6)] + rng.choices(vocab, k=rng.randint(0, 8))) for r in refs]
    return preds, refs


def test_weights_equal_repeating_examples():
    preds, refs = synthetic_corpus(6, 1)
    stats = M.example_stats([T.tokenize(p) for p in preds], [T.tokenize(r) for r in refs])
    weights = np.array([2, 0, 1, 0, 3, 1])
    idx = np.repeat(np.arange(6), weights)
    expect = M.automatic_metrics([preds[i] for i in idx], [refs[i] for i in idx])
    assert M.corpus_metrics(stats, weights) == pytest.approx(expect, rel=1e-12)


def test_bootstrap_is_seeded_and_brackets_the_point():
    preds, refs = synthetic_corpus(100, 2)
    a = B.bootstrap_metrics(preds, refs, n_resamples=300, seed=7)
    assert a == B.bootstrap_metrics(preds, refs, n_resamples=300, seed=7)
    assert a != B.bootstrap_metrics(preds, refs, n_resamples=300, seed=8)
    point = M.automatic_metrics(preds, refs)
    for k, (p, low, high) in a.items():
        assert p == pytest.approx(point[k])
        assert low <= p <= high and low < high, k


def test_bootstrap_of_one_example():
    res = B.bootstrap_metrics(["hello there"], ["hello you"], n_resamples=20)
    assert all(low == point == high for point, low, high in res.values())


def test_bootstrap_fast_path_equals_recomputing_on_resampled_lists():
    preds, refs = synthetic_corpus(20, 3)
    fast = B.bootstrap_metrics(preds, refs, n_resamples=30, seed=1)
    slow = B.bootstrap_metrics(
        preds, refs, n_resamples=30, seed=1, metric_fn=lambda p, r: M.automatic_metrics(p, r)
    )
    for k in fast:
        assert fast[k] == pytest.approx(slow[k], rel=1e-9), k


def test_bootstrap_takes_seconds():
    import time

    preds, refs = synthetic_corpus(100, 4)
    start = time.perf_counter()
    B.bootstrap_metrics(preds, refs, n_resamples=1000)
    assert time.perf_counter() - start < 10


def test_paired_bootstrap_prefers_the_better_system():
    preds, refs = synthetic_corpus(60, 5)
    worse = preds[1:] + preds[:1]  # the same texts, each paired with the wrong reference
    res = B.paired_bootstrap(preds, worse, refs, n_resamples=300, seed=0)
    for k in ("bleu1", "bleu2", "rouge1", "rougeL", "f1"):
        assert res[k]["point_diff"] > 0 and res[k]["low"] > 0 and res[k]["share_above_zero"] == 1.0, k
    flipped = B.paired_bootstrap(worse, preds, refs, n_resamples=300, seed=0)
    assert flipped["bleu1"]["mean_diff"] == pytest.approx(-res["bleu1"]["mean_diff"])
    assert flipped["bleu1"]["share_above_zero"] == 0.0


def test_paired_bootstrap_of_a_system_with_itself_is_zero():
    preds, refs = synthetic_corpus(30, 6)
    res = B.paired_bootstrap(preds, list(preds), refs, n_resamples=50, seed=0)
    assert {v for r in res.values() for v in (r["point_diff"], r["mean_diff"], r["low"], r["high"])} == {0.0}
    assert {r["share_above_zero"] for r in res.values()} == {0.0}


def test_bootstrap_ci_of_values():
    assert B.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    mean, low, high = B.bootstrap_ci([0.0, 1.0] * 50, n_resamples=500, seed=0)
    assert mean == 0.5 and 0.35 < low < 0.5 < high < 0.65
    with pytest.raises(ValueError):
        B.bootstrap_ci([])


def test_unscored_values_count_in_no_mean_and_leave_a_fully_scored_interval_as_it_was():
    """NaN (an item the judge left unscored) is out of every resample's mean; without NaN, the intervals are the
    plain weighted means to the bit (what runs with every label give)."""
    rng = np.random.default_rng(0)
    values = rng.uniform(1, 3, size=(2, 40))
    boot, _ = B._resample_weights(40, 300, 0)
    plain = B.over_seeds([boot @ row / 40 for row in values], 300, 0)
    assert B.seeded_ci(values, 300, 0) == (float(values.mean()), *B._interval(plain, 0.05))
    holed = values.copy()
    holed[:, 5] = np.nan
    mean, low, high = B.seeded_ci(holed, 300, 0)
    assert mean == pytest.approx(np.delete(values, 5, axis=1).mean()) and low < mean < high
    paired = B.paired_bootstrap_values(holed, values - 0.5, 300, 0)
    assert paired["point_diff"] == pytest.approx(0.5) and paired["low"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------
# files


def write_jsonl(path: Path, rows) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_score_file_reads_predictions_and_golds(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prediction": "a a b", "gold": "a b b"}, {"prediction": "c", "gold": "d e"}]
    )
    assert M.score_file(path)["f1"] == pytest.approx(400 / 9)


def test_score_file_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a", "gold": "a"}, {"gold": "b"}])
    with pytest.raises(ValueError) as err:
        M.score_file(path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and "'prediction'" in str(err.value)


def test_score_file_rejects_bad_json_and_non_strings(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a", "gold": "a"}, "", "{not json"])
    with pytest.raises(ValueError, match=r"p\.jsonl: line 3: not valid JSON"):
        M.score_file(path)
    path = write_jsonl(tmp_path / "q.jsonl", [{"prediction": 3, "gold": "a"}])
    with pytest.raises(ValueError, match=r"line 1: field 'prediction' is int"):
        M.score_file(path)


def test_score_file_aligns_references_by_id(tmp_path):
    preds = write_jsonl(
        tmp_path / "p.jsonl", [{"id": 2, "prediction": "c"}, {"id": 1, "prediction": "a a b"}]
    )
    refs = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "response": "a b b"}, {"id": 2, "response": "d e"}])
    m = M.score_file(preds, gold_field="response", references_path=refs)
    assert m["f1"] == pytest.approx(400 / 9)


def test_score_file_aligns_references_by_line(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a a b"}, {"prediction": "c"}])
    refs = write_jsonl(tmp_path / "r.jsonl", [{"gold": "a b b"}, {"gold": "d e"}])
    assert M.score_file(preds, references_path=refs)["f1"] == pytest.approx(400 / 9)
    short = write_jsonl(tmp_path / "s.jsonl", [{"gold": "a b b"}])
    with pytest.raises(ValueError, match=r"s\.jsonl: 1 records but .*p\.jsonl has 2"):
        M.score_file(preds, references_path=short)


def test_score_file_id_errors(tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": 1, "prediction": "a"}, {"id": 3, "prediction": "b"}])
    refs = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "gold": "a"}, {"id": 2, "gold": "b"}])
    with pytest.raises(ValueError, match=r"r\.jsonl: field 'id'"):
        M.score_file(preds, references_path=refs)
    dup = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "gold": "a"}, {"id": 1, "gold": "b"}])
    with pytest.raises(ValueError, match=r"d\.jsonl: line 2: field 'id': duplicate"):
        M.score_file(preds, references_path=dup)


def test_score_file_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        M.score_file(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"e\.jsonl: no records"):
        M.score_file(write_jsonl(tmp_path / "e.jsonl", []))


# ---------------------------------------------------------------------------------------------------------
# parity with the authors' own evaluation code

# Figures (x100) of the authors' `dialogue_evaluation` (Aurora-slz/Efficient-Empathy, empathy/metrics.py at
# daa363b), run on the first 1,000 "response" fields of ../shared/ed/valid.jsonl with nltk 3.10.4 and a
# punkt_tab/english directory written from tokens.py's parameters. "neighbour": the prediction for gold i is
# gold i + 1 (the last takes the first); "constant": every prediction is CONSTANT_REPLY.
CONSTANT_REPLY = "i am sorry to hear that ."
AUTHORS_FIGURES_ED_VALID_1000 = {
    "neighbour": {"bleu1": 15.697338, "bleu2": 4.972137, "bleu3": 2.214847, "bleu4": 1.270263,
                  "dist1": 12.528935, "dist2": 57.517155, "rouge1": 10.772672, "rouge2": 1.311764,
                  "rougeL": 9.683541, "f1": 15.697338},
    "constant": {"bleu1": 9.150916, "bleu2": 2.81779, "bleu3": 1.514607, "bleu4": 1.019752,
                 "dist1": 0.1, "dist2": 0.1, "rouge1": 12.573871, "rouge2": 1.366097,
                 "rougeL": 11.290829, "f1": 16.308106},
}


@pytest.mark.needs_ed
@pytest.mark.parametrize("construction", sorted(AUTHORS_FIGURES_ED_VALID_1000))
def test_score_file_equals_the_authors_dialogue_evaluation(shared_ed, tmp_path, construction):
    with (shared_ed / "valid.jsonl").open(encoding="utf-8") as f:
        golds = [json.loads(line)["response"] for _, line in zip(range(1000), f)]
    if construction == "neighbour":
        preds = golds[1:] + golds[:1]
    else:
        preds = [CONSTANT_REPLY] * len(golds)
    path = write_jsonl(tmp_path / "p.jsonl", [{"prediction": p, "gold": g} for p, g in zip(preds, golds)])
    ours = M.score_file(path)
    expected = AUTHORS_FIGURES_ED_VALID_1000[construction]
    assert {k: ours[k] for k in expected} == pytest.approx(expected, abs=1e-3)
