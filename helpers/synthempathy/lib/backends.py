"""Text generation backends behind one interface: `backend.generate(requests, cache)`.

- `TransformersBackend`: in process, batched with left padding and the KV cache, prompts sorted by length so a
  batch wastes little padding; CPU or CUDA.
- `OpenAIBackend`: any OpenAI-compatible chat endpoint (vLLM `vllm serve`, llama.cpp's server, TGI); several
  URLs are served round-robin with a concurrency limit, timeouts and retries with backoff. This is how the
  `paper` profile reaches a 70B generator and how a user scales past one machine.

Results go to a `JsonlCache` as {"key", "text", "tokens", "finished"} rows, durable per batch (or per
response), so an interrupted run redoes nothing that finished. A model is loaded only when work remains.

Every model call of the chain goes through one of these two: generation, the discriminator's answers, the
judge's label logprobs (`OpenAIBackend.next_token_logprobs_many`, the same pool, round-robin and failover) and
the evaluation's answers. `USAGE` counts the requests and tokens they actually spend (a cache hit spends
nothing); Stage.open points it at the stage's `_work/usage.jsonl`, which the manifest sums per stage.

The file is over 300 lines because both backends and the usage counter they share belong to one interface.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..chain.config import ConfigError
from ..chain.store import JsonlCache, hash_obj
from .prefix import shared_prefix_batch
from .sampling import nucleus_processor_class


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Request:
    """One chat completion to make. `key` hashes everything that determines its output."""

    key: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    prefill: str
    sampling: Sampling
    seed: int
    generation_prompt: bool = True  # False: the chat ends after the last message, no assistant header (authors)

    @classmethod
    def make(cls, model: str, messages, prefill: str, sampling: Sampling, seed: int,
             generation_prompt: bool = True) -> Request:
        messages = tuple((role, content) for role, content in messages)
        what = {"model": model, "messages": messages, "prefill": prefill, "sampling": sampling.__dict__, "seed": seed}
        if not generation_prompt:  # only then: every key made before this flag existed stays valid
            what["generation_prompt"] = False
        return cls(hash_obj(what)[:24], messages, prefill, sampling, seed, generation_prompt)


def derived_seed(*parts) -> int:
    """A 31-bit seed that depends only on its parts (not on processing order), so reruns agree."""
    return int(hash_obj(parts)[:8], 16) & 0x7FFFFFFF


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint could not be used; the message names the URL and the cause."""


class RequestRejected(EndpointError):
    """The endpoint answered, and refused the request (HTTP 4xx): another endpoint would refuse it too."""


def key_hint(status: int) -> str:
    """What to set when a server refuses for want of an API key (HTTP 401 or 403); else nothing."""
    return (" (the server wants an API key: name the environment variable that holds it in endpoint_api_key_env, "
            "and export it)") if status in (401, 403) else ""


class Usage:
    """Requests and prompt / completion tokens the backends actually spend, per model, in this process.

    A cache hit spends nothing. Endpoints: the `usage` field of each reply; in process: the prompts' input ids and
    the tokens generated up to the end of each reply (the in-process judge reads logits and generates none).
    With a file attached (Stage.open: `<run>/<stage>/_work/usage.jsonl`) each record is also appended to it at
    once, beside the cache row it paid for, so a stage's totals survive a kill and add up over resumed runs;
    RunStore.stage_usage sums the file into the manifest."""

    def __init__(self):
        self.path: Path | None = None
        self.by_model: dict[str, Counter] = {}
        self._lock = threading.Lock()

    def attach(self, path) -> None:
        """Append every later record to `path` (None: keep counting in memory only)."""
        self.path = None if path is None else Path(path)

    def record(self, model: str, requests: int, prompt_tokens: int, completion_tokens: int) -> None:
        if not requests:
            return
        row = {"model": model, "requests": int(requests), "prompt_tokens": int(prompt_tokens),
               "completion_tokens": int(completion_tokens)}
        with self._lock:
            self.by_model.setdefault(model, Counter()).update({k: v for k, v in row.items() if k != "model"})
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def totals(self) -> dict:
        """{"requests", "prompt_tokens", "completion_tokens"} over every model counted in this process."""
        with self._lock:
            total = sum(self.by_model.values(), Counter())
        return {k: total.get(k, 0) for k in ("requests", "prompt_tokens", "completion_tokens")}


USAGE = Usage()


DOWN_FOR = 30.0  # seconds an endpoint that failed every retry is tried last
_DOWN: dict[str, float] = {}  # {URL: monotonic time it last failed every retry}


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="req", disable=not enabled, mininterval=1.0)


class TransformersBackend:
    def __init__(self, model_spec: str, device: str = "auto", batch_size: int = 16, quantization: str = "none"):
        self.model_spec, self.device, self.batch_size, self.quantization = model_spec, device, batch_size, quantization
        self._model = self._tok = None

    @property
    def tokenizer(self):
        if self._tok is None:
            from .models import load_tokenizer

            self._tok = load_tokenizer(self.model_spec)
            self._tok.padding_side = "left"  # new tokens follow every prompt directly
        return self._tok

    @property
    def model(self):
        if self._model is None:
            from .models import load_lm

            self._model, _ = load_lm(self.model_spec, self.device, self.quantization)
        return self._model

    def render(self, req: Request) -> str:
        messages = [{"role": role, "content": content} for role, content in req.messages]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=req.generation_prompt,
                                                  tokenize=False) + req.prefill

    def batches(self, requests: Sequence[Request]) -> list[list[Request]]:
        """Fixed batches over *all* requests (not only the unfinished ones), so a resumed run samples each
        batch exactly as an uninterrupted run would."""
        texts = {r.key: self.render(r) for r in requests}
        lengths = {k: len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for k, t in texts.items()}
        out = []
        by_sampling = itertools.groupby(sorted(requests, key=lambda r: (repr(r.sampling), lengths[r.key], r.key)),
                                        key=lambda r: r.sampling)
        for _, group in by_sampling:
            group = list(group)
            out += [group[i: i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        return out

    def generate(self, requests: Sequence[Request], cache: JsonlCache, progress: bool = True, desc: str = "") -> dict:
        import torch

        todo = [b for b in self.batches(requests) if any(r.key not in cache for r in b)]
        tokens, t0 = 0, time.time()
        bar = _progress(sum(len(b) for b in todo), desc, progress)
        for batch in todo:
            rows = self._generate_batch(batch, torch)
            cache.add(rows)
            tokens += sum(r["tokens"] for r in rows)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.1f}")
        bar.close()
        seconds = time.time() - t0
        return {"requests": len(requests), "generated": sum(len(b) for b in todo), "tokens": tokens,
                "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None}

    def _generate_batch(self, batch: list[Request], torch) -> list[dict]:
        tok, model, s = self.tokenizer, self.model, batch[0].sampling
        ids = [tok(self.render(r), add_special_tokens=False)["input_ids"] for r in batch]
        eos = {tok.eos_token_id, *as_list(model.generation_config.eos_token_id)} - {None}
        kwargs = {"max_new_tokens": s.max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": sorted(eos)}
        if s.temperature > 0:  # temperature and top-p in one processor that does not sort the vocabulary (sampling.py)
            kwargs.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                          logits_processor=[nucleus_processor_class()(s.temperature, s.top_p)])
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        torch.manual_seed(derived_seed(*(r.seed for r in batch)))  # this batch's draws depend on it alone
        with torch.inference_mode():
            # the prompts share the system prompt and the one-shot example (~60% of each): encoding that prefix
            # once per batch is what makes batching pay on a CPU (bench/generation.py)
            input_ids, mask, _, cache = shared_prefix_batch(model, ids, tok.pad_token_id, reserve=s.max_new_tokens)
            out = model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache, **kwargs)
        rows = []
        for req, new in zip(batch, out[:, input_ids.shape[1]:].tolist()):
            end = next((i for i, t in enumerate(new) if t in eos), None)
            n = len(new) if end is None else end + 1
            rows.append({"key": req.key, "text": tok.decode(new[:n], skip_special_tokens=True),
                         "tokens": n, "finished": end is not None})
        USAGE.record(self.model_spec, len(batch), sum(map(len, ids)), sum(r["tokens"] for r in rows))
        return rows


def as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


class OpenAIBackend:
    """Chat completions at OpenAI-compatible endpoints: `concurrency` requests in flight, request i sent to
    endpoint i mod n and, when that one is down, to the next (`post_round_robin`). Generation and the judge's
    logprob calls share this pool (`_pooled`); `sent` counts the replies each endpoint gave."""

    def __init__(self, endpoints: Sequence[str], model: str, concurrency: int = 8, timeout: float = 120.0,
                 retries: int = 3, backoff: float = 1.0, api_key: str | None = None):
        if not endpoints:
            raise EndpointError("gen_backend=openai needs at least one URL in gen_endpoints "
                                "(e.g. http://localhost:8000/v1 for `vllm serve`)")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.model, self.concurrency, self.timeout, self.retries, self.backoff = model, concurrency, timeout, retries, backoff
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.sent: Counter = Counter()  # {endpoint URL: replies it gave}
        self._sent_lock = threading.Lock()

    def check(self) -> None:
        """Fail at once, naming every URL, when no endpoint answers."""
        import httpx

        errors = []
        for url in self.endpoints:
            try:
                resp = httpx.get(f"{url}/models", timeout=min(self.timeout, 10.0), headers=self.headers)
                if key_hint(resp.status_code):
                    raise RequestRejected(f"{url}: HTTP {resp.status_code}{key_hint(resp.status_code)}")
                resp.raise_for_status()
                return
            except httpx.HTTPError as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
        raise EndpointError("no OpenAI-compatible endpoint answers:\n  " + "\n  ".join(errors))

    def body(self, req: Request) -> dict:
        messages = [{"role": role, "content": content} for role, content in req.messages]
        body = {"model": self.model, "messages": messages, "temperature": req.sampling.temperature,
                "top_p": req.sampling.top_p, "max_tokens": req.sampling.max_new_tokens, "seed": req.seed}
        if req.prefill:
            # vLLM's extension: continue the last assistant message instead of starting a new one.
            messages.append({"role": "assistant", "content": req.prefill})
            body.update(continue_final_message=True, add_generation_prompt=False)
        elif not req.generation_prompt:
            # vLLM's extension: the template rendered without the assistant header, as the authors' script did
            body["add_generation_prompt"] = False
        return body

    def post(self, client, url: str, body: dict) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                resp = client.post(f"{url}/chat/completions", json=body, timeout=self.timeout)
                if resp.status_code < 500 and resp.status_code != 429:
                    resp.raise_for_status()
                    return resp.json()
                err = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPStatusError as e:
                raise RequestRejected(f"{url}: request rejected: HTTP {e.response.status_code}"
                                      f"{key_hint(e.response.status_code)}: "
                                      f"{e.response.text[:300]}") from None
            except httpx.HTTPError as e:
                err = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise EndpointError(f"{url}: failed after {self.retries + 1} attempts: {err}")

    def post_round_robin(self, client, i: int, body: dict) -> dict:
        """Request i goes to endpoint i mod n; if that one is down, to the next, so one dead server among
        live ones slows a run instead of failing it. An endpoint that failed every retry is tried last for
        DOWN_FOR seconds (by every backend of the process), so its retries are paid once, not per request.
        A rejected request (HTTP 4xx) is not retried elsewhere."""
        errors = []
        n, now = len(self.endpoints), time.monotonic()
        order = sorted((self.endpoints[(i + j) % n] for j in range(n)),  # stable: the live ones in turn first
                       key=lambda url: now - _DOWN.get(url, float("-inf")) < DOWN_FOR)
        for url in order:
            try:
                data = self.post(client, url, body)
            except RequestRejected:
                raise
            except EndpointError as e:
                errors.append(str(e))
                _DOWN[url] = time.monotonic()
                continue
            _DOWN.pop(url, None)
            with self._sent_lock:
                self.sent[url] += 1
            return data
        raise EndpointError("every endpoint failed:\n  " + "\n  ".join(errors))

    def _pooled(self, n: int, body_of: Callable[[int], dict], on_reply: Callable[[int, dict], None]) -> None:
        """POST body_of(i) for i in 0..n-1, `concurrency` at a time, round-robin with failover. on_reply(i, reply)
        runs under one lock as each reply arrives (so it may write a cache), after its usage is counted. The first
        failure cancels what has not started and is raised; what finished before it was handed on."""
        import httpx

        lock = threading.Lock()

        def one(i: int, client) -> None:
            data = self.post_round_robin(client, i, body_of(i))
            usage = data.get("usage") or {}
            with lock:
                USAGE.record(self.model, 1, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                on_reply(i, data)

        limits = httpx.Limits(max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency * 2)
        with httpx.Client(limits=limits, headers=self.headers) as client, ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(one, i, client) for i in range(n)]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in done:
                f.result()  # re-raise the first failure; what finished is already handed on

    def next_token_logprobs_many(self, messages_list: Sequence[list[dict]], constraint: dict | None = None,
                                 top: int = 20, on_result: Callable[[int, dict[str, float]], None] | None = None,
                                 ) -> list[dict[str, float]]:
        """{token: logprob} of the most likely first reply tokens of each chat, through the pool like `generate`
        (concurrency, round-robin, failover). `constraint`, the request fields of `label_constraint`, holds the
        answer to a label even where the model would begin otherwise. on_result(i,
        logprobs) runs under one lock as each arrives, so a caller can cache every answer at once; a failure is
        raised after the answers that came were handed on."""
        if not messages_list:
            return []
        self.check()
        out: list[dict | None] = [None] * len(messages_list)

        def body_of(i: int) -> dict:
            return {"model": self.model, "messages": list(messages_list[i]), "max_tokens": 1, "temperature": 0.0,
                    "logprobs": True, "top_logprobs": top, **(constraint or {})}

        def on_reply(i: int, data: dict) -> None:
            try:
                first = data["choices"][0]["logprobs"]["content"][0]
            except (KeyError, IndexError, TypeError):
                raise EndpointError(f"{', '.join(self.endpoints)}: the reply carries no logprobs; the judge needs an "
                                    "endpoint that returns them (vLLM, llama.cpp server)") from None
            out[i] = {t["token"]: t["logprob"] for t in first["top_logprobs"]}
            # the chosen token's own logprob is returned even where it is not among the top ones
            out[i].setdefault(first["token"], first["logprob"])
            if on_result is not None:
                on_result(i, out[i])

        self._pooled(len(messages_list), body_of, on_reply)
        return out

    def generate(self, requests: Sequence[Request], cache: JsonlCache, progress: bool = True, desc: str = "") -> dict:
        todo = [r for r in requests if r.key not in cache]
        if not todo:
            return {"requests": len(requests), "generated": 0, "tokens": 0, "seconds": 0.0, "tokens_per_s": None}
        self.check()
        tokens, t0 = [0], time.time()
        bar = _progress(len(todo), desc, progress)

        def on_reply(i: int, data: dict) -> None:
            choice = data["choices"][0]
            n = (data.get("usage") or {}).get("completion_tokens", 0)
            cache.add([{"key": todo[i].key, "text": choice["message"]["content"] or "", "tokens": n,
                        "finished": choice.get("finish_reason") != "length"}])
            tokens[0] += n
            bar.update(1)

        try:
            self._pooled(len(todo), lambda i: self.body(todo[i]), on_reply)
        finally:
            bar.close()
        seconds = time.time() - t0
        return {"requests": len(requests), "generated": len(todo), "tokens": tokens[0], "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens[0] / seconds, 2) if seconds > 0 else None}


def label_constraint(dialect: str, labels: Sequence[str]) -> dict:
    """The request fields that hold a server's answer to one of `labels`, in the dialect it speaks: vLLM's
    `structured_outputs` choice (v0.10.2 on), its older `guided_choice`, a llama.cpp grammar, or none. Forcing the
    answer keeps the ratios of the labels' probabilities (every other token is masked out); the top logprobs a
    server returns may still be read before the mask (vLLM's default `--logprobs-mode raw_logprobs`)."""
    if dialect == "structured_outputs":
        return {"structured_outputs": {"choice": list(labels)}}
    if dialect == "guided_choice":
        return {"guided_choice": list(labels)}
    if dialect == "grammar":
        return {"grammar": "root ::= " + " | ".join(f'"{label}"' for label in labels)}
    return {}


def make_backend(cfg, model_spec: str, endpoints: Sequence[str] | None = None):
    """The one way a stage gets a model that answers chats: the OpenAI-compatible `endpoints` when given
    (round-robin, failover, `cfg.endpoint_concurrency` in flight; `model_spec` is then the name the server
    serves it under), else the model in this process on `cfg.device`, `cfg.gen_batch_size` per batch."""
    if endpoints is not None:
        return OpenAIBackend(endpoints, model_spec, concurrency=cfg.endpoint_concurrency, timeout=cfg.endpoint_timeout,
                             retries=cfg.endpoint_retries, api_key=endpoint_api_key(cfg))
    return TransformersBackend(model_spec, cfg.device, cfg.gen_batch_size)


def endpoint_api_key(cfg) -> str | None:
    """The API key from the environment variable `cfg.endpoint_api_key_env` names (None when it names none)."""
    name = cfg.endpoint_api_key_env
    if not name:
        return None
    if not os.environ.get(name):
        raise ConfigError(f"endpoint_api_key_env (profile {cfg.profile}) names the environment variable {name}, "
                          f"which is not set: export {name}=<the key the servers were started with>")
    return os.environ[name]
