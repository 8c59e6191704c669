"""Every model call through OpenAI-compatible endpoints, against two real llama.cpp servers (issue #16, items 1,
3 and 4): the judge (1..3 and pairwise A/B) and the evaluation's answers spread their requests over both servers,
survive one server killed mid-run without losing or duplicating a cached answer, and give the results of an
uninterrupted run; the manifest records the requests and tokens each stage spent.

What is compared with the in-process backend: the judge (same argmax on every prompt, expected score within 0.1)
and the prompts (the same token counts: the server renders the same chat). Not the greedy answers themselves:
llama.cpp multiplies the Q4_1 weights with 8-bit activations, the in-process model the same weights in fp32, and
their greedy answers part after a few tokens (7 of 8 differ by 24 tokens). So greedy answers are compared
endpoint with endpoint (each request on the other server, or after a failover), where they must be identical.
That holds only for servers that decode one token per batch (SERVER_ARGS): llama-cpp-python reuses the KV cache
of the previous prompt's shared prefix, so with larger batches an answer's last digits depend on what that
server was asked before (seen: 1 of 6 greedy answers changed with the order of the requests).

What llama.cpp cannot show: serving our PEFT adapters. An arm is asked under its LoRA module name
(`<arm>.seed-<s>`), which llama.cpp answers with its one model; real LoRA serving needs vLLM (configs/paper.yaml).
"""

import importlib.util
import json
import threading
import time

import pytest
from test_openai_backend import LlamaServer, need_llama_cpp

from synthempathy import evaluate
from synthempathy.chain.config import load_config
from synthempathy.chain.store import JsonlCache, RunStore
from synthempathy.lib import judging, pairwise, sft
from synthempathy.lib.backends import USAGE, OpenAIBackend, Request, Sampling
from synthempathy.lib.dialogue import chat_pairs
from synthempathy.lib.ed import load_ed

needs_server = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
TOKENS = 12  # new tokens per evaluation answer
SERVER_ARGS = ("--n_batch", "1", "--n_ubatch", "1")  # batch-invariant numerics (docstring); one thread each
ITEMS = [{"id": f"i{n}", "history": [h], "response": r} for n, (h, r) in enumerate([
    ("I lost my job today.", "I am so sorry. That is a hard blow."),
    ("My dog learned a new trick!", "That is wonderful, what trick?"),
    ("I failed my driving test again.", "Oh no. Third time lucky, maybe?"),
    ("My sister is visiting next week.", "Nice! Do you have plans together?"),
])]
PAIRS = [{"id": "p0", "history": ["I lost my job today."], "x": "I am so sorry. That is a hard blow.",
          "y": "Jobs are overrated."}]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two llama.cpp servers, one thread each (the machine has two cores), started side by side."""
    need_llama_cpp()
    logs = tmp_path_factory.mktemp("llama_pair")
    servers = [LlamaServer(logs / f"server{i}.log", threads=1, extra=SERVER_ARGS) for i in range(2)]
    try:
        yield [s.wait_ready() for s in servers]
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def killable(tmp_path):
    """A third server, for a test to kill."""
    need_llama_cpp()
    srv = LlamaServer(tmp_path / "killable.log", threads=1, extra=SERVER_ARGS)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture
def quick_retries(monkeypatch):
    """Backends made by the stages (make_backend) give up on a dead server after one quick retry."""
    monkeypatch.setattr(OpenAIBackend.__init__, "__defaults__", (8, 60.0, 1, 0.1))


@pytest.fixture
def usage_file():
    """USAGE detached again after the test, as after a stage's process."""
    yield
    USAGE.attach(None)


def records(n: int) -> list[dict]:
    return [r.to_dict() for r in load_ed("packaged:seed", "test")[:n]]


def eval_config(run_overrides, urls, **extra):
    return load_config("tiny", {**run_overrides, "eval_endpoints": urls, "eval_max_new_tokens": TOKENS,
                                "endpoint_concurrency": 2, **extra})


def fake_adapter(store, arm: str = "synth_empathy", seed: int = 0) -> str:
    """An adapter folder as 04_finetune leaves it, as far as the evaluation's cache key reads it."""
    folder = store.root / "04_finetune" / arm / f"seed-{seed}"
    folder.mkdir(parents=True)
    (folder / sft.COMPLETED).write_text(json.dumps({"fingerprint": f"fp-{arm}-{seed}"}))
    return str(folder)


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def kill_when(server: LlamaServer, path, n: int) -> threading.Thread:
    """Kill `server` (SIGKILL) mid-run: once it has answered a request and `path` holds n cached answers."""
    def watch():
        deadline = time.monotonic() + 120
        while (len(lines(path)) < n or server.requests() < 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        server.proc.kill()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def asked(servers) -> list[int]:
    return [s.requests() for s in servers]


# -- usage accounting, no server ------------------------------------------------------------------------------

def test_usage_appends_per_call_and_the_manifest_sums_it_per_stage(run_overrides, usage_file):
    cfg = load_config("tiny", run_overrides)
    store = RunStore(cfg.run_dir)
    USAGE.attach(store.usage_path("05_evaluate"))
    USAGE.record("judge", 3, 300, 3)
    USAGE.record("base", 2, 100, 40)
    USAGE.record("base", 0, 0, 0)  # everything cached: nothing spent, nothing written
    USAGE.record("judge", 1, 90, 1)
    with open(store.usage_path("05_evaluate"), "a") as f:
        f.write('{"model": "base", "requests": 1, "prompt_')  # a kill mid-write
    store.record_stage("05_evaluate", "fp", 1.0)
    usage = store.manifest()["stages"]["05_evaluate"]["usage"]
    assert usage == {"requests": 6, "prompt_tokens": 490, "completion_tokens": 44,
                     "by_model": {"judge": {"requests": 4, "prompt_tokens": 390, "completion_tokens": 4},
                                  "base": {"requests": 2, "prompt_tokens": 100, "completion_tokens": 40}}}
    store.record_stage("04_finetune", "fp", 1.0)
    assert store.manifest()["stages"]["04_finetune"]["usage"] == {"requests": 0, "prompt_tokens": 0,
                                                                  "completion_tokens": 0, "by_model": {}}


# -- two servers -----------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_server
def test_the_judge_spreads_its_calls_over_both_endpoints(pair, tmp_path):
    urls = [s.url for s in pair]
    judge = judging.make_judge(load_config("tiny", {"judge_endpoints": urls, "endpoint_concurrency": 2}))
    before = asked(pair)

    rows = judging.score_items(judge, ITEMS[:2], JsonlCache(tmp_path / "judge.jsonl"), progress=False)
    verdicts = pairwise.judge_pairs(judge, PAIRS, JsonlCache(tmp_path / "pairwise.jsonl"), progress=False)

    assert isinstance(judge, judging.EndpointJudge) and judge.backend.concurrency == 2
    assert dict(judge.backend.sent) == {urls[0]: 6, urls[1]: 6}, "6 + 6 prompts, request i to endpoint i mod 2"
    assert [a - b for a, b in zip(asked(pair), before)] == [6, 6], "as the servers' access logs count them"
    assert len(lines(tmp_path / "judge.jsonl")) == 6 and len(lines(tmp_path / "pairwise.jsonl")) == 6
    assert all(1 <= r[c] <= 3 for r in rows for c in judging.CRITERIA)
    assert all(verdicts[0][c] in (-1, 0, 1) for c in judging.CRITERIA)


@pytest.mark.slow
@needs_server
def test_the_judge_at_the_endpoints_agrees_with_the_judge_in_process(pair, tmp_path):
    items = ITEMS[2:3]
    one = judging.score_items(judging.make_judge(load_config("tiny", {"judge_endpoints": [s.url for s in pair]})),
                              items, JsonlCache(tmp_path / "a.jsonl"), progress=False)
    other = judging.score_items(judging.make_judge(load_config("tiny", {"judge_endpoints": [s.url for s in pair[::-1]]})),
                                items, JsonlCache(tmp_path / "b.jsonl"), progress=False)
    local = judging.score_items(judging.make_judge(load_config("tiny", {"device": "cpu"})), items,
                                JsonlCache(tmp_path / "c.jsonl"), progress=False)
    for a, b, c in zip(one, other, local):
        for k in judging.CRITERIA:
            assert a[k] == pytest.approx(b[k], abs=1e-4), "each prompt on the other server: the same score"
            assert a[f"{k}_argmax"] == c[f"{k}_argmax"], (k, a, c)
            assert abs(a[k] - c[k]) < 0.1, (k, a[k], c[k])  # Q4 kernels against fp32: close, not equal


@pytest.mark.slow
@needs_server
def test_the_evaluation_answers_of_base_and_arm_spread_over_both_endpoints(pair, run_overrides, tmp_path):
    cfg = eval_config(run_overrides, [s.url for s in pair])
    store = RunStore(cfg.run_dir)
    adapter = fake_adapter(store)
    recs = records(4)
    before = asked(pair)

    base = evaluate.predict(cfg, store, "base", cfg.base_model, recs, progress=False)
    arm = evaluate.predict(cfg, store, "synth_empathy.seed-0", adapter, recs, progress=False)

    assert [a - b for a, b in zip(asked(pair), before)] == [4, 4], "4 + 4 answers, alternating servers"
    assert evaluate.answering_backend(cfg, "base", cfg.base_model).model == cfg.base_model
    assert evaluate.answering_backend(cfg, "synth_empathy.seed-0", adapter).model == "synth_empathy.seed-0"
    # the cache keys are the in-process ones: the model's identity (an adapter's training fingerprint)
    system, transcript = sft.arm_input(cfg)
    for name, identity in (("base", cfg.base_model), ("synth_empathy.seed-0", "adapter:fp-synth_empathy-0")):
        cache = JsonlCache(store.work_dir("05_evaluate") / f"predictions.{name}.cache.jsonl")
        keys = [Request.make(identity, chat_pairs(r["history"], system, transcript), "", Sampling(0.0, 1.0, TOKENS), 0).key
                for r in recs]
        assert sorted(r["key"] for r in cache.rows()) == sorted(keys)
    assert all(r["prediction"] for r in base + arm)
    # greedy, each request on the other server: the same answers (llama.cpp's one model serves the arm too)
    swapped = eval_config({**run_overrides, "run_root": str(tmp_path / "swapped")}, [s.url for s in pair[::-1]])
    assert evaluate.predict(swapped, RunStore(swapped.run_dir), "base", cfg.base_model, recs, progress=False) == base


@pytest.mark.slow
@needs_server
def test_a_server_killed_mid_judging_loses_and_repeats_nothing(pair, killable, tmp_path):
    path = tmp_path / "judge.jsonl"
    backend = OpenAIBackend([pair[0].url, killable.url], "smollm2", concurrency=2, timeout=60, retries=1, backoff=0.1)
    items = ITEMS[:3]
    watcher = kill_when(killable, path, 2)

    rows = judging.score_items(judging.EndpointJudge(backend), items, JsonlCache(path), progress=False)

    watcher.join(5)
    assert killable.proc.poll() is not None, "the server was killed during the run"
    assert 1 <= backend.sent[killable.url] < 4 < backend.sent[pair[0].url], dict(backend.sent)
    keys = [json.loads(line)["key"] for line in lines(path)]
    assert len(keys) == len(set(keys)) == 3 * len(items), "every prompt cached exactly once"
    reference = judging.score_items(judging.EndpointJudge(OpenAIBackend([pair[1].url], "smollm2")), items,
                                    JsonlCache(tmp_path / "reference.jsonl"), progress=False)
    for a, b in zip(rows, reference):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=1e-4) for k in a if k != "id")


@pytest.mark.slow
@needs_server
def test_a_server_killed_mid_evaluation_loses_and_repeats_nothing(pair, killable, run_overrides, tmp_path,
                                                                   quick_retries):
    cfg = eval_config(run_overrides, [pair[0].url, killable.url])
    store = RunStore(cfg.run_dir)
    recs = records(6)
    path = store.work_dir("05_evaluate") / "predictions.base.cache.jsonl"
    watcher = kill_when(killable, path, 2)

    rows = evaluate.predict(cfg, store, "base", cfg.base_model, recs, progress=False)

    watcher.join(5)
    assert killable.proc.poll() is not None and 1 <= killable.requests() < 3
    keys = [json.loads(line)["key"] for line in lines(path)]
    assert len(keys) == len(set(keys)) == len(recs), "every answer cached exactly once"
    ref_cfg = eval_config({**run_overrides, "run_root": str(tmp_path / "reference")}, [pair[1].url])
    assert evaluate.predict(ref_cfg, RunStore(ref_cfg.run_dir), "base", cfg.base_model, recs, progress=False) == rows


@pytest.mark.slow
@needs_server
def test_the_manifest_counts_what_a_stage_spent_and_a_cached_rerun_adds_nothing(pair, run_overrides, tmp_path,
                                                                               usage_file):
    cfg = eval_config(run_overrides, [s.url for s in pair], eval_max_new_tokens=4, judge_endpoints=[pair[0].url],
                      judge_model="smollm2-judge")  # the served name; tiny's judge is the base model itself
    store = RunStore(cfg.run_dir)
    recs = records(3)

    def stage():  # what 05_evaluate's kernel does, shrunk: answers, then the judge on them
        USAGE.attach(store.usage_path("05_evaluate"))  # Stage.open
        rows = evaluate.predict(cfg, store, "base", cfg.base_model, recs, progress=False)
        judging.score_items(judging.make_judge(cfg), [{"id": r["id"], "history": r["history"],
                                                       "response": r["prediction"]} for r in rows[:1]],
                            JsonlCache(store.work_dir("05_evaluate") / "judge.cache.jsonl"), progress=False)
        store.record_stage("05_evaluate", "fp", 1.0)  # the runner, after the kernel
        return store.manifest()["stages"]["05_evaluate"]["usage"]

    usage = stage()

    answers = JsonlCache(store.work_dir("05_evaluate") / "predictions.base.cache.jsonl").rows()
    base, judge = usage["by_model"][cfg.base_model], usage["by_model"][cfg.judge_model]
    assert base["requests"] == 3 and base["completion_tokens"] == sum(r["tokens"] for r in answers) > 0
    assert judge["requests"] == 3 and judge["completion_tokens"] == 3, "the judge reads one token per prompt"
    assert usage["requests"] == 6 and usage["prompt_tokens"] == base["prompt_tokens"] + judge["prompt_tokens"]
    # the same answers in process: the same prompts, so the same prompt tokens (the server renders the same chat)
    local_cfg = load_config("tiny", {**run_overrides, "run_root": str(tmp_path / "local"), "eval_max_new_tokens": 4,
                                     "device": "cpu"})
    local_store = RunStore(local_cfg.run_dir)
    USAGE.attach(local_store.usage_path("05_evaluate"))
    evaluate.predict(local_cfg, local_store, "base", local_cfg.base_model, recs, progress=False)
    local = local_store.stage_usage("05_evaluate")["by_model"][local_cfg.base_model]
    assert local["requests"] == 3 and local["prompt_tokens"] == base["prompt_tokens"]
    assert local["completion_tokens"] > 0

    assert stage() == usage, "everything cached: a rerun spends nothing"
