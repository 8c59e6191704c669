"""OpenAIBackend against a real OpenAI-compatible server: llama.cpp's (llama-cpp-python[server]) serving the
packaged SmolLM2 GGUF on 127.0.0.1 only."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from synthempathy import data, generate
from synthempathy.chain.config import load_config
from synthempathy.chain.store import JsonlCache, RunStore, read_jsonl
from synthempathy.lib.backends import EndpointError, OpenAIBackend
from synthempathy.lib.ed import load_ed
from synthempathy.lib.models import packaged_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')"),
]

MAX_NEW_TOKENS = 32
N_STAGE = 6
STARTUP_TIMEOUT = 90


def free_port() -> int:
    """A local port nobody listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """A llama.cpp server (llama-cpp-python) serving the packaged SmolLM2 GGUF on a free local port; any model
    name in a request is answered by that one model. `url` is its base URL (…/v1), `log` its output, whose
    uvicorn access lines count the requests it received (`requests()`)."""

    def __init__(self, log, alias: str = "smollm2", threads: int | None = None, extra: tuple[str, ...] = ()):
        gguf = packaged_file("packaged:smollm2-135m-instruct")
        self.port, self.log = free_port(), log
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
               "--n_threads", str(threads or os.cpu_count() or 1), *extra]
        with open(log, "w") as out:  # unbuffered: the access log is complete even after a SIGKILL
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self) -> "LlamaServer":
        return self.wait_ready_with_key(None)

    def wait_ready_with_key(self, api_key: str | None) -> "LlamaServer":
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2, headers=headers).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not answer GET {self.url}/models within {STARTUP_TIMEOUT} s:\n"
                            f"{self.log.read_text()[-3000:]}")
            time.sleep(0.25)

    def requests(self, path: str = "/v1/chat/completions") -> int:
        """Requests to `path` the server answered, from its access log."""
        return sum(f'"POST {path} HTTP/1.1" 200' in line for line in self.log.read_text().splitlines())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def need_llama_cpp() -> None:
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken build fails at import with various errors
        pytest.skip(f"llama_cpp does not import ({type(e).__name__}: {e}); the OpenAI backend test needs its server")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL (…/v1) of a llama.cpp server on a free local port, for this module only."""
    need_llama_cpp()
    srv = LlamaServer(tmp_path_factory.mktemp("llama_server") / "server.log")
    try:
        yield srv.wait_ready().url
    finally:
        srv.stop()


def seeds(n: int) -> list[dict]:
    return [r.to_dict() for r in load_ed("packaged:seed", "train")[:n]]


def requests(n: int = 3, **overrides):
    cfg = load_config("tiny", {"gen_max_new_tokens": MAX_NEW_TOKENS, **overrides})
    return [r for *_, r in generate.generation_requests(seeds(n), cfg)]


def test_generates_into_the_cache_and_a_rerun_generates_nothing(server, tmp_path):
    reqs = requests(3)
    path = tmp_path / "cache.jsonl"
    backend = OpenAIBackend([server], "smollm2", concurrency=2, timeout=60)

    stats = backend.generate(reqs, JsonlCache(path), progress=False)

    assert stats["requests"] == 3 and stats["generated"] == 3
    cache = JsonlCache(path)  # what is on disk, as a resumed run would read it
    assert len(cache) == 3 and all(r.key in cache for r in reqs)
    for r in reqs:
        row = cache[r.key]
        assert row["text"].strip(), "an empty completion"
        assert 0 < row["tokens"] <= MAX_NEW_TOKENS
        assert isinstance(row["finished"], bool)
    assert stats["tokens"] == sum(cache[r.key]["tokens"] for r in reqs)
    lines = path.read_text().splitlines()

    again = OpenAIBackend([server], "smollm2").generate(reqs, cache, progress=False)

    assert again["generated"] == 0 and again["tokens"] == 0
    assert path.read_text().splitlines() == lines, "a rerun adds nothing to the cache"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "OpenAIBackend sends the prefill as a final assistant message with vLLM's continue_final_message; "
    "llama-cpp-python's server ignores that field, closes the prefilled message and starts a new reply "
    "(greedy: 'Round 2:\\nContext:'), while run_stage still prepends the prefill to it"))
def test_prefilled_reply_is_continued_not_restarted(server, tmp_path):
    """With prefill on (tiny, small), the endpoint must continue "Round 1:\\nContext:"; run_stage prepends the
    prefill to the returned text, so a server that starts a new reply yields "Round 1:\\nContext:Round 2: ..."."""
    req = requests(1, temperature=0.0)[0]
    assert req.prefill
    cache = JsonlCache(tmp_path / "cache.jsonl")
    OpenAIBackend([server], "smollm2", timeout=60).generate([req], cache, progress=False)
    text = cache[req.key]["text"]
    assert not text.lstrip().lower().startswith(("round", "context")), f"the reply restarted the format: {text!r}"


def test_a_down_endpoint_fails_fast_naming_its_url(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend([dead], "smollm2", timeout=2, retries=1, backoff=0.1)
    cache = JsonlCache(tmp_path / "cache.jsonl")
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match=dead.replace(".", r"\.")):
        backend.generate(requests(1), cache, progress=False)
    assert time.monotonic() - t0 < 5
    assert len(cache) == 0


def test_round_robin_fails_over_to_the_live_endpoint(server, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend([dead, server], "smollm2", concurrency=1, timeout=60, retries=1, backoff=0.1)
    reqs = requests(2)
    cache = JsonlCache(tmp_path / "cache.jsonl")
    stats = backend.generate(reqs, cache, progress=False)
    assert stats["generated"] == 2 and all(r.key in cache for r in reqs)


def test_stage_01_through_the_openai_backend(server, run_overrides):
    # prefill off: only vLLM continues a prefilled reply (see the xfail above); the paper profile has it off too.
    overrides = {**run_overrides, "gen_backend": "openai", "gen_endpoints": [server], "gen_max_seeds": N_STAGE,
                 "gen_max_new_tokens": 128, "prefill": False}
    cfg = load_config("tiny", overrides)
    store = RunStore(cfg.run_dir)
    data.run_stage(cfg, store)

    summary = generate.run_stage(cfg, store, backend=OpenAIBackend(cfg.gen_endpoints, "smollm2", timeout=120),
                                 progress=False)

    assert summary["throughput"]["generated"] == N_STAGE == summary["generations"]
    gens = read_jsonl(store.path("01_generate", "generations.jsonl"))
    seed_ids = [s["id"] for s in read_jsonl(store.path("00_data", "train.jsonl"))[:N_STAGE]]
    assert [g["seed_id"] for g in gens] == seed_ids
    assert all(g["raw"].strip() for g in gens)
    assert sum(bool(g["rounds"]) for g in gens) >= 1, json.dumps(gens, indent=1)[:3000]
    examples = read_jsonl(store.path("01_generate", "examples.jsonl"))
    assert len(examples) == summary["examples"]
    for ex in examples:
        assert ex["instruction"].endswith("\nListener: ") and ex["output"]


@pytest.mark.parametrize("constraint", ["structured_outputs", "grammar"])
def test_judge_through_the_endpoint_reads_label_logprobs(server, tmp_path, constraint):
    """llama.cpp ignores vLLM's `structured_outputs` field and takes a grammar: either way the labels' logprobs
    come back and every item is scored."""
    from synthempathy.lib import judging as judge

    cfg = load_config("tiny", {"judge_endpoints": [server], "judge_model": "smollm2",
                               "endpoint_label_constraint": constraint, "endpoint_timeout": 60})
    endpoint_judge = judge.make_judge(cfg)
    items = [{"id": "a", "history": ["I lost my job today."], "response": "I am so sorry. That is a hard blow."}]
    cache = JsonlCache(tmp_path / "judge.jsonl")
    rows = judge.score_items(endpoint_judge, items, cache, progress=False)
    assert len(cache) == 3, "one cached score per criterion"
    for c in judge.CRITERIA:
        assert 1.0 <= rows[0][c] <= 3.0 and rows[0][f"{c}_argmax"] in (1, 2, 3)
    logits = [row["logits"] for row in cache.rows()]
    assert all(any(x > float("-inf") for x in lg) for lg in logits), "the endpoint returned the labels' logprobs"


def test_a_server_with_an_api_key_is_reached_through_the_variable_the_config_names(tmp_path, monkeypatch):
    """`endpoint_api_key_env` names the variable holding the key (never the key itself); without it the server's
    refusal says what to set; named but unset, the config error names the key, the profile and the variable.
    The config's timeout and retries reach the backend."""
    from synthempathy.chain.config import ConfigError
    from synthempathy.lib.backends import RequestRejected, make_backend

    need_llama_cpp()
    srv = LlamaServer(tmp_path / "server.log", extra=("--api_key", "sesame")).wait_ready_with_key("sesame")
    try:
        reqs = requests(1)
        plain = make_backend(load_config("tiny", {}), "smollm2", [srv.url])
        with pytest.raises(RequestRejected, match="HTTP 401.*endpoint_api_key_env"):
            plain.generate(reqs, JsonlCache(tmp_path / "refused.jsonl"), progress=False)

        cfg = load_config("tiny", {"endpoint_api_key_env": "SYNTHEMPATHY_TEST_KEY", "endpoint_timeout": 60,
                                   "endpoint_retries": 1})
        monkeypatch.delenv("SYNTHEMPATHY_TEST_KEY", raising=False)
        with pytest.raises(ConfigError, match="endpoint_api_key_env.*profile tiny.*SYNTHEMPATHY_TEST_KEY"):
            make_backend(cfg, "smollm2", [srv.url])

        monkeypatch.setenv("SYNTHEMPATHY_TEST_KEY", "sesame")
        backend = make_backend(cfg, "smollm2", [srv.url])
        assert (backend.timeout, backend.retries) == (60, 1)
        cache = JsonlCache(tmp_path / "cache.jsonl")
        assert backend.generate(reqs, cache, progress=False)["generated"] == 1 and reqs[0].key in cache
    finally:
        srv.stop()
