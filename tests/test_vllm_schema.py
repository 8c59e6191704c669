"""What `paper` meets at a real vLLM server and a llama.cpp server cannot show (issue #27), against a small HTTP
server answering in vLLM's schema (tests/vllm_like.py): a judge whose top logprobs leave labels out (items are
unscored and counted, the stage goes on), the label constraint each dialect sends, and the check that every
evaluation server serves each adapter from its folder, on the run's base, started after the adapter was written."""

import os
import time

import pytest
from vllm_like import VllmLike, card

from synthempathy import evaluate
from synthempathy.chain.config import load_config
from synthempathy.chain.store import JsonlCache, write_json
from synthempathy.lib import judging, pairwise, served
from synthempathy.lib import results as R
from synthempathy.lib.backends import OpenAIBackend, Request, Sampling

SURE = [("3", -0.2), ("2", -1.8), ("1", -3.5), ("**", -6.0)]
ONE_LABEL = [("**", -0.1), ("Score", -2.3), ("3", -4.0)]   # a 70B judge that begins with markdown
NO_LABEL = [("**", -0.1), ("Score", -2.3)]


def judge_top(messages):
    text = messages[-1]["content"]
    return NO_LABEL if "NO-LABEL" in text else ONE_LABEL if "ONE-LABEL" in text else SURE


@pytest.fixture
def judge_server():
    srv = VllmLike(judge_top)
    yield srv
    srv.close()


def items():
    return [{"id": name, "history": ["I lost my job today."], "response": f"I am so sorry ({name})."}
            for name in ("sure", "ONE-LABEL", "NO-LABEL")]


def test_a_judge_without_the_labels_leaves_items_unscored_counts_them_and_the_stage_goes_on(judge_server, tmp_path):
    cfg = load_config("tiny", {"judge_endpoints": [judge_server.url], "judge_model": "judge"})
    judge = judging.make_judge(cfg)
    cache = JsonlCache(tmp_path / "judge.jsonl")
    rows = {r["id"]: r for r in judging.score_items(judge, items(), cache, progress=False)}
    expected, _ = judging.scores_from_logits([-3.5, -1.8, -0.2])
    for c in judging.CRITERIA:
        assert rows["sure"][c] == round(expected, 4) and rows["sure"][f"{c}_argmax"] == 3
        assert rows["ONE-LABEL"][c] is None and rows["ONE-LABEL"][f"{c}_argmax"] == 3  # argmax exact, mean not
        # held to a label, the server answers one and returns its logprob: the argmax, exact; the mean needs all
        assert rows["NO-LABEL"][c] is None and rows["NO-LABEL"][f"{c}_argmax"] == 1
    body = judge_server.bodies[0]
    assert body["structured_outputs"] == {"choice": ["1", "2", "3"]} and body["max_tokens"] == 1
    assert body["top_logprobs"] == 20 and body["logprobs"] is True
    asked = len(judge_server.bodies)
    judging.score_items(judge, items(), cache, progress=False)
    assert len(judge_server.bodies) == asked == 9, "an unscored item is cached like any other: not asked again"

    summary = judging.sanity_summary([{**r, "selected": True} for r in rows.values()], [rows["sure"], rows["NO-LABEL"]])
    assert summary["empathy"]["unscored"] == 3 and summary["empathy"]["all"] == round(expected, 4)
    assert "left 9 items unscored" in judging.sanity_verdict(summary, "judge")


@pytest.mark.parametrize("dialect, field", [("guided_choice", {"guided_choice": ["1", "2", "3"]}),
                                            ("grammar", {"grammar": 'root ::= "1" | "2" | "3"'}),
                                            ("none", {})])
def test_each_server_dialect_gets_its_label_constraint(judge_server, tmp_path, dialect, field):
    cfg = load_config("tiny", {"judge_endpoints": [judge_server.url], "judge_model": "judge",
                               "endpoint_label_constraint": dialect})
    rows = judging.score_items(judging.make_judge(cfg), items(), JsonlCache(tmp_path / "j.jsonl"), progress=False)
    body = judge_server.bodies[0]
    assert {k: body[k] for k in ("guided_choice", "grammar", "structured_outputs") if k in body} == field
    if dialect == "none":  # unconstrained, the answer is "**": no label, no argmax, and still no error
        assert rows[2]["empathy"] is None and rows[2]["empathy_argmax"] is None


def test_the_ab_judge_without_a_letter_leaves_the_pair_unscored(tmp_path):
    srv = VllmLike(lambda messages: [("**", -0.1)] if "NO-LABEL" in messages[-1]["content"] else [("A", -0.1), ("B", -2.0)])
    try:
        # unconstrained, as a server that knows no constraint: "**" answers
        judge = judging.EndpointJudge(OpenAIBackend([srv.url], "judge"), label_constraint="none")
        pairs = [{"id": "p0", "history": ["I lost my job."], "x": "So sorry.", "y": "Jobs come and go."},
                 {"id": "p1", "history": ["I lost my job."], "x": "NO-LABEL sorry.", "y": "Oh well."}]
        rows = pairwise.judge_pairs(judge, pairs, JsonlCache(tmp_path / "ab.jsonl"), progress=False)
        assert rows[0]["empathy"] == 0 and rows[0]["empathy_orders"] == ["x", "y"]  # A both times: position bias
        assert rows[1]["empathy"] is None and rows[1]["empathy_orders"] == [None, None]
        summary = pairwise.ab_summary([rows], 100, 0)["empathy"]
        assert summary["pairs"] == 1 and summary["unscored"] == 1 and summary["tie"][0] == 1.0
        judge.label_constraint = "structured_outputs"  # held to a letter, the pair gets the constrained verdict
        rows = pairwise.judge_pairs(judge, pairs[1:], JsonlCache(tmp_path / "ab2.jsonl"), progress=False)
        assert srv.bodies[-1]["structured_outputs"] == {"choice": ["A", "B", "C"]} and rows[0]["empathy"] == 0
    finally:
        srv.close()


def test_the_results_table_says_how_many_answers_the_judge_left_unscored():
    values = {c: [[2.5, None, 3.0], [2.0, 2.0, None]] for c in judging.CRITERIA}
    counts = R.judge_counts(values, judging.CRITERIA)
    assert counts == {"judged": 6, "unscored": {c: 2 for c in judging.CRITERIA}}
    figures = {k: [1.0, 0.5, 1.5] for keys in R.FAMILIES.values() for k in keys}
    results = {"profile": "t", "eval_examples": 3, "seed": 0, "train_seeds": [0, 1], "bootstrap_resamples": 10,
               "arms": {"ed": {"figures": figures, **R.training_counts(None, []), **counts}}}
    md = R.results_markdown(results)
    assert "| arm | naturalness | coherence | empathy | unscored |" in md and "| 6 of 18 |" in md
    assert R.results_table(results)[0]["judge_unscored"] == "6 of 18"


def test_a_server_slower_than_endpoint_timeout_is_retried_endpoint_retries_times_then_named(tmp_path):
    from synthempathy.lib.backends import EndpointError, make_backend

    srv = VllmLike(delay=1.0)
    try:
        cfg = load_config("tiny", {"endpoint_timeout": 0.2, "endpoint_retries": 1})
        backend = make_backend(cfg, "m", [srv.url])
        backend.backoff = 0.0
        requests = [Request.make("m", [("user", "hi")], "", Sampling(0.0, 1.0, 4), 0)]
        with pytest.raises(EndpointError, match=f"{srv.url}: failed after 2 attempts: ReadTimeout"):
            backend.generate(requests, JsonlCache(tmp_path / "c.jsonl"), progress=False)
        assert len(srv.bodies) == 2
    finally:
        srv.close()


# -- adapters checked before they answer ----------------------------------------------------------------------

BASE = "meta-llama/Meta-Llama-3-8B-Instruct"


def adapter(tmp_path, name: str, written: float | None = None) -> str:
    folder = tmp_path / "04_finetune" / name.replace(".seed-", "/seed-")
    folder.mkdir(parents=True)
    write_json(folder / "completed.json", {"fingerprint": f"fp-{name}"})
    if written is not None:
        os.utime(folder / "completed.json", (written, written))
    return str(folder)


def check(server: VllmLike, needed: dict[str, str]) -> None:
    served.check_served(OpenAIBackend([server.url], BASE), needed, BASE)


def test_a_server_that_serves_every_adapter_from_its_folder_passes(tmp_path):
    needed = {m: adapter(tmp_path, m, written=1_000) for m in ("ed.seed-0", "synth_empathy.seed-0")}
    srv = VllmLike(models=[card(BASE, BASE)] + [card(m, f, BASE) for m, f in needed.items()],
                   metrics="# HELP process_start_time_seconds Start time\nprocess_start_time_seconds 2000.5\n")
    try:
        check(srv, needed)
    finally:
        srv.close()


def test_a_wrong_adapter_at_the_server_is_one_error_naming_module_server_and_restart(tmp_path):
    now = time.time()
    needed = {m: adapter(tmp_path, m, written=now) for m in ("ed.seed-0", "ed.seed-1", "synth_empathy.seed-0",
                                                               "ed_plus_random.seed-0")}
    srv = VllmLike(models=[card(BASE, BASE),
                           card("ed.seed-0", needed["ed.seed-1"], BASE),                     # another folder
                           card("ed.seed-1", needed["ed.seed-1"], "meta-llama/Llama-2-7b"),  # another base
                           card("synth_empathy.seed-0", needed["synth_empathy.seed-0"], BASE)],  # ed_plus_random missing
                   metrics=f"process_start_time_seconds {now - 3600}\n")                     # started an hour before
    try:
        with pytest.raises(served.AdapterMismatch) as err:
            check(srv, needed)
    finally:
        srv.close()
    text = str(err.value)
    assert f"{srv.url}: module ed.seed-0 serves it from" in text and "not from its folder" in text
    assert "module ed.seed-1 serves it on the base 'meta-llama/Llama-2-7b'" in text
    assert "module ed_plus_random.seed-0 does not serve it" in text
    assert ("module synth_empathy.seed-0 comes from a server started before the adapter was written (fingerprint "
            "fp-synth_emp)") in text
    assert "Restart each server named" in text and "--lora-modules" in text


def test_a_relative_module_path_is_read_from_the_repo_root_and_no_metrics_skips_the_start_check(tmp_path):
    from synthempathy.chain.config import REPO_ROOT

    folder = adapter(tmp_path, "ed.seed-0")
    relative = os.path.relpath(folder, REPO_ROOT)
    assert served.same_folder(relative, folder) and not served.same_folder("runs/other", folder)
    srv = VllmLike(models=[card("ed.seed-0", relative, BASE)])  # no /metrics page: nothing to compare
    try:
        check(srv, {"ed.seed-0": folder})
    finally:
        srv.close()
    assert served.start_time("process_start_time_seconds 1.7e9\n") == 1.7e9 and served.start_time("up 1\n") is None


def test_evaluation_checks_the_arms_and_the_sweeps_adapters():
    cfg = load_config("tiny", {"sweep_thresholds": []})
    models = {"base": {None: cfg.base_model}, "ed": {0: "/r/04_finetune/ed/seed-0", 1: "/r/04_finetune/ed/seed-1"}}
    assert evaluate.served_adapters(cfg, None, models) == {"ed.seed-0": "/r/04_finetune/ed/seed-0",
                                                           "ed.seed-1": "/r/04_finetune/ed/seed-1"}
