"""02_quality's library: the SFT helper, similarity selection, and the judge."""

import math

import numpy as np
import pytest

from synthempathy.chain.config import load_config
from synthempathy.chain.store import JsonlCache
from synthempathy.lib import dialogue, sft
from synthempathy.lib import judging as judge
from synthempathy.lib.backends import TransformersBackend
from synthempathy.lib.ed import load_ed
from synthempathy.lib.models import load_lm
from synthempathy.lib.selection import select_quality, similarity


def test_similarity_is_100_cosine_and_selection_keeps_the_boundary():
    a = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    b = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert similarity(a, b).tolist() == [100.0, 60.0, 0.0]
    rows = [{"id": str(i), "similarity": s} for i, s in enumerate([59.9999, 60.0, 60.0001, 100.0, 12.0])]
    assert [r["id"] for r in select_quality(rows, 60)] == ["1", "2", "3"]
    assert select_quality(rows, 100) == [rows[3]] and select_quality(rows, 0) == rows


def test_chat_format_alternates_speaker_and_listener():
    msgs = dialogue.chat(["s1", "l1", "s2"], system="sys")
    assert [(m["role"], m["content"]) for m in msgs] == [("system", "sys"), ("user", "s1"), ("assistant", "l1"), ("user", "s2")]
    row = sft.sft_rows([{"history": ["s1"], "response": "l1"}], "sys")[0]
    assert row["completion"] == [{"role": "assistant", "content": "l1"}] and row["prompt"][-1]["content"] == "s1"


@pytest.mark.parametrize("logits, expected, argmax", [
    ([0.0, 0.0, 0.0], 2.0, 1),                       # uniform: (1+2+3)/3; ties go to the lowest score
    ([math.log(0.2), math.log(0.3), math.log(0.5)], 2.3, 3),
    ([1000.0, 999.0, 998.0], None, 1),               # large logits must not overflow
])
def test_expected_score_arithmetic(logits, expected, argmax):
    got, top = judge.scores_from_logits(logits)
    if expected is not None:
        assert got == pytest.approx(expected)
    assert 1 <= got <= 3 and top == argmax


@pytest.mark.parametrize("logits, argmax", [
    ([10.0, -math.inf, -math.inf], 1),   # one label among an endpoint's top logprobs: its argmax is exact
    ([-2.0, -math.inf, -0.5], 3),
    ([-math.inf] * 3, None),             # no label at all
])
def test_a_missing_label_leaves_the_expected_score_unscored_not_renormalized(logits, argmax):
    assert judge.scores_from_logits(logits) == (None, argmax)


def test_the_sanity_summary_counts_unscored_items_and_averages_the_scored():
    rows = [{"selected": True, **{c: v for c in judge.CRITERIA}} for v in (3.0, None, 2.0)]
    panel = [{c: v for c in judge.CRITERIA} for v in (3.0, None, 1.0, 2.0)]  # real half: 3, None; shuffled: 1, 2
    summary = judge.sanity_summary(rows, panel)["empathy"]
    assert summary["all"] == 2.5 and summary["selected"] == 2.5 and summary["unscored"] == 2
    assert summary["sanity_real"] == 3.0 and summary["sanity_separation"] == 1.0
    assert "left 6 items unscored" in judge.sanity_verdict(judge.sanity_summary(rows, panel), "m")


def test_sanity_pairs_are_a_derangement():
    records = [{"id": str(i), "history": [f"h{i}"], "response": f"r{i}"} for i in range(10)]
    real, fake = judge.shuffled_pairs(records, 6, seed=3)
    assert [r["history"] for r in real] == [f["history"] for f in fake]
    assert all(r["response"] != f["response"] for r, f in zip(real, fake))
    assert sorted(r["response"] for r in real) == sorted(f["response"] for f in fake)
    assert judge.separation([3, 3], [1, 1]) == 1.0 and judge.separation([2], [2]) == 0.5


@pytest.mark.slow
def test_in_process_judge_scores_real_items_within_1_to_3(tmp_path):
    j = judge.InProcessJudge(TransformersBackend("packaged:smollm2-135m-instruct", "cpu"), batch_size=4)
    items = [{"id": "a", "history": ["I lost my job today."], "response": "I am so sorry. That is a hard blow."},
             {"id": "b", "history": ["My dog had puppies!"], "response": "The train leaves at nine."}]
    cache = JsonlCache(tmp_path / "judge.jsonl")
    rows = judge.score_items(j, items, cache, progress=False)
    assert [r["id"] for r in rows] == ["a", "b"] and len(cache) == 6
    for r in rows:
        for c in judge.CRITERIA:
            assert 1.0 <= r[c] <= 3.0 and r[f"{c}_argmax"] in (1, 2, 3)
    assert judge.score_items(j, items, cache, progress=False) == rows  # cached, identical

    # sharing one reply's prefix across its three rubrics gives the label logits of each prompt on its own
    prompts = [judge.judge_messages(it["history"], it["response"], c) for it in items for c in judge.CRITERIA]
    together = np.array(j.label_logits(prompts))
    alone = np.array([j.label_logits([p])[0] for p in prompts])
    np.testing.assert_allclose(together, alone, atol=2e-3)
    assert not np.allclose(together[0], together[3], atol=0.1), "different replies should get different logits"


def seed_items(n):
    return [r.to_dict() for r in load_ed("packaged:seed", "train")[:n]]


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["4bit", "none"])
def test_sft_loss_falls_and_the_adapter_reloads_and_generates(tmp_path, quantization):
    cfg = load_config("tiny", {"quantization": quantization, "max_steps": 8, "learning_rate": 2e-3,
                               "train_batch_size": 4, "max_length": 128})
    record = sft.train_lora(cfg, seed_items(4), tmp_path / "out", tmp_path / "work", name="t")
    assert record["steps"] == 8 and record["quantization"] == quantization
    assert record["final_loss"] < record["first_loss"] * 0.8, record
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md", "training_log.json", "completed.json"):
        assert (tmp_path / "out" / name).exists(), name
    assert not (tmp_path / "work").exists(), "checkpoints are removed once the adapter is saved"
    model, tok = load_lm(str(tmp_path / "out"), device="cpu")
    enc = tok.apply_chat_template(dialogue.chat(["My cat is sick."], "You are a helpful assistant."),
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    again = sft.train_lora(cfg, seed_items(4), tmp_path / "out", tmp_path / "work2")
    assert again == record and not (tmp_path / "work2").exists(), "a completed adapter is not retrained"
