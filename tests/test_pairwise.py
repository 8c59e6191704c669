"""The pairwise A/B judge (lib/pairwise.py): the both-orders rule, caching, the label reading, and the summary."""

import importlib.util
import math

import numpy as np
import pytest

from synthempathy.chain.config import load_config
from synthempathy.chain.store import JsonlCache
from synthempathy.lib import judging, pairwise
from synthempathy.lib.dialogue import prompts

if importlib.util.find_spec("llama_cpp") is not None:
    from test_openai_backend import server  # noqa: F401 - its llama.cpp server fixture, started for this module too

ITEMS = [
    {"id": "a", "history": ["I lost my job today."], "x": "I am so sorry. That is a hard blow.",
     "y": "The train leaves at nine."},
    {"id": "b", "history": ["My dog had puppies!", "How many?", "Five, all healthy."],
     "x": "Five! What a happy day for you.", "y": "Okay."},
]


@pytest.fixture(scope="module")
def judge():
    """The tiny profile's judge, in process (SmolLM2-135M), loaded once for the module."""
    j = judging.make_judge(load_config("tiny"))
    assert isinstance(j, judging.InProcessJudge)
    return j


def plain_logits(j, messages, labels):
    """The labels' logits from one unbatched forward pass over the whole prompt: no prefix sharing, no padding."""
    import torch

    text = j.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = j.tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(j.model.device)
    with torch.inference_mode():
        last = j.model(input_ids=ids).logits[0, -1].float()
    return [float(last[j.tok.encode(label, add_special_tokens=False)[0]]) for label in labels]


# -- the rule ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("letter, x_first, verdict", [
    ("A", True, "x"), ("B", True, "y"), ("C", True, "tie"),
    ("A", False, "y"), ("B", False, "x"), ("C", False, "tie"),
])
def test_a_letter_is_read_for_x_by_position(letter, x_first, verdict):
    assert pairwise.order_verdict(letter, x_first) == verdict


@pytest.mark.parametrize("xy, yx, outcome", [
    ("x", "x", 1), ("y", "y", -1),
    ("x", "y", 0), ("y", "x", 0),                     # the orders disagree: position bias, not a preference
    ("x", "tie", 0), ("tie", "x", 0), ("y", "tie", 0), ("tie", "y", 0), ("tie", "tie", 0),
])
def test_only_a_preference_held_in_both_orders_counts(xy, yx, outcome):
    assert pairwise.combine_orders(xy, yx) == outcome


def test_the_letter_is_the_argmax_and_none_without_any_probability():
    assert pairwise.letter_from_logits([0.1, 2.0, -math.inf]) == "B"
    assert pairwise.letter_from_logits([-math.inf, -math.inf, -3.0]) == "C"
    assert pairwise.letter_from_logits([-math.inf] * 3) is None
    assert pairwise.combine_orders(pairwise.order_verdict(None, True), "x") is None


def test_an_unscored_pair_counts_apart_and_the_shares_are_over_the_scored():
    rows = [{"id": f"i{k}", **{c: v for c in judging.CRITERIA}} for k, v in enumerate([1, 1, -1, None])]
    s = pairwise.ab_summary([rows], 200, 0)["empathy"]
    assert s["pairs"] == 3 and s["unscored"] == 1
    assert s["win"][0] == pytest.approx(2 / 3, abs=1e-4) and s["net"][0] == pytest.approx(1 / 3, abs=1e-4)
    assert "| empathy | 66.7 [" in pairwise.ab_markdown({"empathy": s}, "x", "y")


def test_the_prompt_names_the_criterion_with_the_judges_rubric():
    msgs = pairwise.pairwise_messages(["I failed my exam."], "reply one", "reply two", "empathy")
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == prompts()["system"]
    user = msgs[1]["content"]
    assert prompts()["judge"]["criteria"]["empathy"] in user
    assert "Speaker: I failed my exam." in user
    assert user.index("reply one") < user.index("reply two") < user.index("empathy")


# -- with the real judge -------------------------------------------------------------------------------------

def test_outcomes_follow_the_judges_letters_in_both_orders(judge, tmp_path):
    cache = JsonlCache(tmp_path / "pairwise.jsonl")
    rows = pairwise.judge_pairs(judge, ITEMS, cache, progress=False)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert len(cache) == len(ITEMS) * 2 * len(judging.CRITERIA)
    for it, row in zip(ITEMS, rows):
        for c in judging.CRITERIA:
            # each order read again on its own, without the batch's prefix sharing
            ab = plain_logits(judge, pairwise.pairwise_messages(it["history"], it["x"], it["y"], c), pairwise.LETTERS)
            ba = plain_logits(judge, pairwise.pairwise_messages(it["history"], it["y"], it["x"], c), pairwise.LETTERS)
            orders = [pairwise.order_verdict(pairwise.letter_from_logits(ab), True),
                      pairwise.order_verdict(pairwise.letter_from_logits(ba), False)]
            assert row[f"{c}_orders"] == orders
            assert row[c] == pairwise.combine_orders(*orders)


def test_a_rerun_asks_the_judge_nothing(judge, tmp_path, monkeypatch):
    path = tmp_path / "pairwise.jsonl"
    first = pairwise.judge_pairs(judge, ITEMS[:1], JsonlCache(path), progress=False)
    cache = JsonlCache(path)  # as a resumed run reads it from disk
    n = len(cache)

    def no_call(*args, **kwargs):
        raise AssertionError("the judge was asked again")

    monkeypatch.setattr(judge, "label_logits", no_call)
    assert pairwise.judge_pairs(judge, ITEMS[:1], cache, progress=False) == first
    assert len(cache) == n == 6


def test_identical_replies_are_a_tie_without_the_judge(judge, tmp_path):
    cache = JsonlCache(tmp_path / "pairwise.jsonl")
    same = [{"id": "s", "history": ["I got the job!"], "x": "Congratulations!", "y": "Congratulations!"}]
    (row,) = pairwise.judge_pairs(judge, same, cache, progress=False)
    assert len(cache) == 0
    for c in judging.CRITERIA:
        assert row[c] == 0 and row[f"{c}_orders"] == ["tie", "tie"]


def test_default_labels_read_the_scores_as_before(judge):
    prompts = [judging.judge_messages(["I lost my job today."], "I am so sorry. That is a hard blow.", c)
               for c in judging.CRITERIA]
    default = judge.label_logits(prompts)
    assert judge.label_logits(prompts, labels=["1", "2", "3"]) == default
    expected = [plain_logits(judge, p, judging.LABELS) for p in prompts]
    np.testing.assert_allclose(default, expected, atol=2e-3)


def test_letters_are_read_like_the_scores(judge):
    it = ITEMS[1]
    prompts = [pairwise.pairwise_messages(it["history"], a, b, c)
               for a, b in [(it["x"], it["y"]), (it["y"], it["x"])] for c in judging.CRITERIA]
    batched = judge.label_logits(prompts, labels=pairwise.LETTERS)
    np.testing.assert_allclose(batched, [plain_logits(judge, p, pairwise.LETTERS) for p in prompts], atol=2e-3)


def test_a_label_of_several_tokens_is_refused(judge):
    msgs = pairwise.pairwise_messages(["Hi."], "Hello!", "Hey.", "naturalness")
    assert len(judge.tok.encode("definitely", add_special_tokens=False)) > 1
    with pytest.raises(ValueError, match="'definitely' is not one token"):
        judge.label_logits([msgs], labels=("A", "definitely"))


# -- the summary ---------------------------------------------------------------------------------------------

def outcomes(values, ids=None):
    """Rows as judge_pairs returns them, with the same outcome for every criterion."""
    ids = ids or [str(i) for i in range(len(values))]
    return [{"id": i, **{c: v for c in judging.CRITERIA}} for i, v in zip(ids, values)]


def test_summary_shares_over_seeds_and_examples():
    s = pairwise.ab_summary([outcomes([1, 1, 0, -1]), outcomes([1, 0, 0, -1])], n_resamples=300, seed=0)
    for c in judging.CRITERIA:
        got = s[c]
        assert got["pairs"] == 8
        assert [got[k][0] for k in ("win", "tie", "lose", "net")] == [0.375, 0.375, 0.25, 0.125]
        assert abs(got["win"][0] + got["tie"][0] + got["lose"][0] - 1) < 1e-3
        for k in ("win", "tie", "lose", "net"):
            point, low, high = got[k]
            assert low <= point <= high and low < high, (k, got[k])
            assert -1 <= low and high <= 1


def test_summary_of_one_seed():
    s = pairwise.ab_summary([outcomes([1, 1, 1])], n_resamples=100, seed=3)
    assert s["empathy"] == {"win": [1.0, 1.0, 1.0], "tie": [0.0, 0.0, 0.0], "lose": [0.0, 0.0, 0.0],
                            "pairs": 3, "net": [1.0, 1.0, 1.0], "unscored": 0}
    mixed = pairwise.ab_summary([outcomes([1, -1, 0, 0, 1])], n_resamples=100, seed=3)["coherence"]
    assert mixed["net"][1] <= mixed["net"][0] == 0.2 <= mixed["net"][2]


def test_summary_needs_the_same_items_for_every_seed():
    with pytest.raises(ValueError, match="seed #1"):
        pairwise.ab_summary([outcomes([1, 0], ["a", "b"]), outcomes([1, 0], ["b", "a"])], n_resamples=10, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        pairwise.ab_summary([], n_resamples=10, seed=0)


def test_markdown_table_in_percent():
    s = pairwise.ab_summary([outcomes([1, 1, 0, -1]), outcomes([1, 0, 0, -1])], n_resamples=100, seed=0)
    md = pairwise.ab_markdown(s, "synth_empathy", "ed")
    lines = md.splitlines()
    assert "| criterion | win | tie | lose | net | unscored |" in lines
    rows = [line for line in lines if line.startswith("| empathy |")]
    assert len(rows) == 1 and rows[0].startswith("| empathy | 37.5 [") and "| 12.5 [" in rows[0]
    assert "synth_empathy" in md and "ed" in md


# -- through an OpenAI-compatible endpoint -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_the_endpoint_judge_reads_the_letters(server, tmp_path):
    j = judging.make_judge(load_config("tiny", {"judge_endpoints": [server]}))
    assert isinstance(j, judging.EndpointJudge)
    cache = JsonlCache(tmp_path / "pairwise.jsonl")
    (row,) = pairwise.judge_pairs(j, ITEMS[:1], cache, progress=False)
    assert len(cache) == 6
    assert all(any(v > -math.inf for v in r["logits"]) and r["verdict"] in pairwise.LETTERS for r in cache.rows())
    for c in judging.CRITERIA:
        assert row[c] in (-1, 0, 1) and all(v in ("x", "y", "tie") for v in row[f"{c}_orders"])

