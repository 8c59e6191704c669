"""Every switch that runs a stage the authors' way, checked against what their scripts do; and the table of
departures that `python -m synthempathy fidelity` prints."""

import random
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from authors_fixture import write_clone

from synthempathy import generate
from synthempathy.chain.config import ConfigError, load_config
from synthempathy.lib import authors, dialogue, fidelity, judging, sft
from synthempathy.lib.kcenter import kcenter_greedy
from synthempathy.lib.selection import kept_by_kcenter, select_quality


@pytest.fixture
def clone(tmp_path, monkeypatch):
    monkeypatch.setattr(authors, "_MEMO", {})
    return write_clone(tmp_path / "clone", monkeypatch)


def authors_cfg(clone, **more):
    return load_config("tiny", {"gen_prompt": "authors", "format_example": False, "prefill": False,
                                "authors_source": str(clone), **more})


# -- 01: turn sampling --------------------------------------------------------------------------------------------

def their_k(rng: random.Random, rounds: int) -> int:
    """The authors' law, as their script states it: min(randint(1, 3), rounds - 1)."""
    return min(rng.randint(1, 3), rounds - 1)


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 6])
def test_the_authors_k_law_matches_theirs_over_10000_draws(rounds):
    ours = Counter(generate.draw_k(rounds, random.Random(i), 3, "authors") for i in range(10_000))
    theirs = Counter(their_k(random.Random(10_000 + i), rounds) for i in range(10_000))
    assert set(ours) == set(theirs)
    for k in theirs:
        assert abs(ours[k] - theirs[k]) / 10_000 < 0.025, (k, ours, theirs)


def test_the_uniform_law_differs_where_the_authors_cap_k():
    ours = Counter(generate.draw_k(3, random.Random(i), 3, "uniform") for i in range(10_000))
    assert abs(ours[1] / 10_000 - 0.5) < 0.025  # theirs: 1/3 (k = 1) and 2/3 (k = min(2 or 3, 2) = 2)
    assert generate.draw_k(1, random.Random(0), 3, "uniform") is None


def test_a_one_round_dialogue_gives_k_0_and_the_last_reply_under_the_authors_law():
    ex = generate.sample_example([("I failed my exam.", "That hurts; you worked hard.")], random.Random(0), 3, "last",
                                 "authors")
    assert ex["k"] == 0 and ex["history"] == ["I failed my exam."]
    assert ex["instruction"] == "Speaker: I failed my exam.\nListener: " and ex["output"] == "That hurts; you worked hard."


# -- 01: parsing --------------------------------------------------------------------------------------------------

def test_the_authors_parser_reads_their_pattern_and_keeps_a_cut_off_last_reply():
    text = "Round 1:\nContext: I moved.\nResponse: New places take time.\nRound 2:\nContext: I miss home.\nResponse: That is nat"
    assert generate.parse_rounds_authors(text) == [("I moved.", "New places take time."), ("I miss home.", "That is nat")]
    assert generate.parse_rounds(text, complete=False) == [("I moved.", "New places take time.")]  # tolerant drops it


def test_the_authors_parser_needs_their_exact_labels():
    assert generate.parse_rounds_authors("**Context:** I lost.\n**Response:** Sorry.") == []
    assert generate.parse_rounds_authors("Context: I lost.\nReply: Sorry.") == []
    assert generate.parse_rounds("**Context:** I lost.\n**Response:** Sorry.") == [("I lost.", "Sorry.")]


def test_pairs_by_parser_counts_both_on_the_same_outputs():
    gens = [{"raw": "Context: a\nResponse: b.\nContext: c\nResponse: d.", "finished": True},
            {"raw": "1. **Context:** a\n**Response:** b.", "finished": True}]
    assert generate.pairs_by_parser(gens) == {"tolerant": {"outputs_with_pairs": 2, "pairs": 3},
                                              "authors": {"outputs_with_pairs": 1, "pairs": 2}}


# -- 01: the generation request -----------------------------------------------------------------------------------

def test_the_authors_generation_request_is_their_text_alone(clone):
    cfg = authors_cfg(clone)
    seed = {"id": "c1:2", "history": ["I lost my keys.", "Oh no.", "And my wallet."], "response": "What a day."}
    (_, _, req), = generate.generation_requests([seed], cfg)
    assert req.messages == (("user", "\nSeed turns: I lost my keys. </s> Oh no. </s> And my wallet.\n"
                                     "Seed reply: What a day.\n\nInvent a new conversation of three rounds.\n"),)
    assert req.prefill == "" and req.generation_prompt is False
    project = load_config("tiny")
    (_, _, plain), = generate.generation_requests([seed], project)
    assert plain.generation_prompt is True and plain.messages[0][0] == "system"


def test_the_authors_prompt_refuses_the_projects_aids(clone):
    with pytest.raises(ConfigError, match="format_example and prefill"):
        load_config("tiny", {"gen_prompt": "authors"})


@pytest.mark.slow
def test_the_rendered_authors_prompt_has_no_assistant_header(clone):
    from synthempathy.lib.backends import TransformersBackend

    cfg = authors_cfg(clone)
    (_, _, req), = generate.generation_requests([{"id": "x:2", "history": ["Hi."], "response": "Hello."}], cfg)
    backend = TransformersBackend("packaged:smollm2-135m-instruct", "cpu")
    text = backend.render(req)
    assert text.endswith("Invent a new conversation of three rounds.\n<|im_end|>\n"), text[-80:]
    assert "<|im_start|>assistant" not in text  # (SmolLM2's template adds its own default system prompt; Llama-3's does not)
    assert [role for role, _ in req.messages] == ["user"]


# -- 02: the discriminator, the cut, the judge ---------------------------------------------------------------------

def test_the_authors_discriminator_input_is_the_transcript_after_their_system_prompt(clone):
    from synthempathy import quality

    cfg = load_config("tiny", {"disc_input": "authors", "authors_source": str(clone)})
    ex = {"id": "e", "history": ["I failed.", "Oh no.", "Again today."], "instruction": "unused"}
    (req,) = quality.discriminator_requests([ex], cfg, "m")
    assert req.messages == (("system", "Reply as the listener."),
                            ("user", "Speaker: I failed.\nListener: Oh no.\nSpeaker: Again today.\nListener: "))
    row = sft.sft_rows([{"history": ex["history"], "response": "Hm."}], "Reply as the listener.", transcript=True)[0]
    assert row["prompt"] == [{"role": "system", "content": "Reply as the listener."},
                             {"role": "user", "content": req.messages[1][1]}]


def test_the_transcript_form_changes_the_training_fingerprint_and_only_then():
    cfg = load_config("tiny")
    items = [{"history": ["a"], "response": "b"}]
    base = sft.training_fingerprint(cfg, items, None, "sys", None)
    assert base == sft.training_fingerprint(cfg, items, None, "sys", None, transcript=False)
    assert base != sft.training_fingerprint(cfg, items, None, "sys", None, transcript=True)


def test_the_authors_cut_truncates_s_first():
    rows = [{"similarity": s} for s in (40.9, 41.0, 40.4999)]
    assert len(select_quality(rows, 40.5)) == 2 and len(select_quality(rows, 40.5, "authors")) == 1
    assert select_quality(rows, 40) == select_quality(rows, 40, "authors")  # a whole-number T: the same


def test_the_authors_judge_messages_are_their_three(clone):
    texts = authors.authors_texts(str(clone), clone.parent / "cache")
    msgs = judging.judge_messages(["I lost my job.", "Oh no.", "Today."], "That is hard.", "empathy", texts)
    assert [m["role"] for m in msgs] == ["system", "user", "user"]
    assert msgs[0]["content"] == "Grade fairly."
    assert msgs[1]["content"] == "Grade the reply for empathy.\nUse 1, 2 or 3."
    assert msgs[2]["content"] == ("Turns so far:\nSpeaker: I lost my job.\nListener: Oh no.\nSpeaker: Today.\nListener: "
                                  "\n\nReply:\nThat is hard.\n\nMarks as {1, 2, 3}:\n- Empathy:")


@pytest.mark.parametrize("text, score", [("3", 3), (" 2\n", 2), ("- Empathy: 1", 1), ("Score: 5", None), ("", None)])
def test_a_sampled_answer_reads_as_its_first_score(text, score):
    assert judging.score_from_text(text) == score


@pytest.mark.slow
def test_the_authors_judge_records_the_expected_and_the_sampled_score(clone, tmp_path):
    from synthempathy.chain.store import JsonlCache
    from synthempathy.lib.backends import TransformersBackend

    judge = judging.InProcessJudge(TransformersBackend("packaged:smollm2-135m-instruct", "cpu", 4), batch_size=4)
    judge.authors = authors.authors_texts(str(clone), tmp_path / "cache")
    items = [{"id": "a", "history": ["I lost my job."], "response": "That is hard. I am here."}]
    (row,) = judging.score_items(judge, items, JsonlCache(tmp_path / "j.jsonl"), progress=False)
    for c in judging.CRITERIA:
        assert 1 <= row[c] <= 3 and isinstance(row[f"{c}_text"], str)
        assert row[f"{c}_sampled"] in (None, 1, 2, 3)


# -- 03: K-center bookkeeping -------------------------------------------------------------------------------------

def their_kcenter(x: np.ndarray, ratio: float, start: int) -> list[int]:
    """Their loop, as their script states it: a random first centre, then int(ratio * n) farthest points."""
    min_d = np.full(len(x), np.inf)
    idx, picked = start, []
    for _ in range(int(len(x) * ratio)):
        min_d = np.minimum(min_d, np.linalg.norm(x - x[idx], axis=1))
        idx = int(np.argmax(min_d))
        min_d[idx] = 0
        picked.append(idx)
    return picked


@pytest.mark.parametrize("n, ratio", [(50, 0.9), (37, 0.5), (10, 0.25)])
def test_the_authors_bookkeeping_keeps_what_their_loop_keeps(n, ratio):
    x = np.random.default_rng(n).normal(size=(n, 8))
    order = kcenter_greedy(x, k=n, seed=3)
    assert kept_by_kcenter(order, ratio, "authors") == their_kcenter(x, ratio, order[0])
    assert kept_by_kcenter(order, ratio)[0] == order[0] and len(kept_by_kcenter(order, ratio)) == round(ratio * n)


# -- 04 / 05: the arms' input -------------------------------------------------------------------------------------

def test_the_authors_arm_input_is_the_transcript_without_a_system_prompt():
    cfg = load_config("tiny", {"prompt_format": "authors"})
    system, transcript = sft.arm_input(cfg)
    assert dialogue.chat(["Hi.", "Hello.", "Bye."], system, transcript) == [
        {"role": "user", "content": "Speaker: Hi.\nListener: Hello.\nSpeaker: Bye.\nListener: "}]
    assert sft.arm_input(load_config("tiny"))[1] is False


# -- the table ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["tiny", "small", "paper", "one_gpu"])
def test_every_departure_says_why(profile):
    rows = fidelity.table(load_config(profile))
    assert {r["switch"] for r in rows} >= {s.key for s in fidelity.SWITCHES}
    for r in rows:
        assert r["match"] or r["why"], f"{profile}: {r['switch']} departs without a reason"


def test_paper_runs_every_switch_the_authors_way_at_an_endpoint_and_in_process():
    for overrides in ({}, {"gen_backend": "transformers", "gen_endpoints": []}):
        rows = fidelity.table(load_config("paper", overrides))
        assert [r["switch"] for r in rows if not r["match"]] == [], overrides
    assert "38 of 38 switches match" in fidelity.render(rows, "paper")


def test_their_generation_request_asks_an_endpoint_for_no_assistant_header():
    """vLLM renders the chat template itself; `add_generation_prompt: false` renders it as their script did (the
    template without the assistant header). A prefilled reply continues the final message instead."""
    from synthempathy.lib.backends import OpenAIBackend, Request, Sampling

    backend = OpenAIBackend(["http://127.0.0.1:9/v1"], "m")
    theirs = Request.make("m", [("user", "their instruction")], "", Sampling(0.8, 0.9, 300), 0, generation_prompt=False)
    assert backend.body(theirs)["add_generation_prompt"] is False and "continue_final_message" not in backend.body(theirs)
    ours = Request.make("m", [("user", "ours")], "Round 1:", Sampling(0.8, 0.9, 300), 0)
    assert backend.body(ours)["continue_final_message"] is True and backend.body(ours)["add_generation_prompt"] is False
    assert "add_generation_prompt" not in backend.body(Request.make("m", [("user", "plain")], "", Sampling(0, 1, 9), 0))


def test_one_gpu_departs_only_in_the_served_models_and_says_why():
    rows = {r["switch"]: r for r in fidelity.table(load_config("one_gpu")) if not r["match"]}
    assert set(rows) == {"generator_model", "judge_model", "quantization"}, set(rows)
    for key in ("generator_model", "judge_model"):
        assert rows[key]["profile"] == "meta-llama/Meta-Llama-3-8B-Instruct"
        assert rows[key]["why"].startswith("one 80 GB GPU: the 70B's bf16 weights alone (~131 GiB) need several")
    assert "low empathetic model" in rows["generator_model"]["why"] and "sanity panel" in rows["judge_model"]["why"]
    tiny = {r["switch"]: r["why"] for r in fidelity.table(load_config("tiny"))}
    assert tiny["generator_model"] == tiny["judge_model"] == fidelity.SMALL_MODELS  # the reason follows the value


def test_the_fidelity_command_is_offline_and_quick():
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "synthempathy", "fidelity", "--profile", "paper", "--profile", "tiny"],
                         capture_output=True, text=True, check=True).stdout
    assert time.time() - t0 < 10  # interpreter start included; it imports no model library
    assert "profile 'paper'" in out and "x 01_generate   gen_prompt" in out
