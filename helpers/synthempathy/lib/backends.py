"""Text generation backends behind one interface: `backend.generate(requests, cache)`.

- `TransformersBackend`: in process, batched with left padding and the KV cache, prompts sorted by length so a
  batch wastes little padding; CPU or CUDA.
- `OpenAIBackend`: any OpenAI-compatible chat endpoint (vLLM `vllm serve`, llama.cpp's server, TGI); several
  URLs are served round-robin with a concurrency limit, timeouts and retries with backoff. This is how the
  `paper` profile reaches a 70B generator and how a user scales past one machine.

Results go to a `JsonlCache` as {"key", "text", "tokens", "finished"} rows, durable per batch (or per
response), so an interrupted run redoes nothing that finished. A model is loaded only when work remains.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..store import JsonlCache, hash_obj
from .prefix import shared_prefix_batch

log = logging.getLogger(__name__)


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
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        torch.manual_seed(derived_seed(*(r.seed for r in batch)))  # this batch's draws depend on it alone
        with torch.inference_mode():
            # the prompts share the system prompt and the one-shot example (~60% of each): encoding that prefix
            # once per batch is what makes batching pay on a CPU (bench/generation.py)
            input_ids, mask, _, cache = shared_prefix_batch(model, ids, tok.pad_token_id)
            out = model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache, **kwargs)
        rows = []
        for req, new in zip(batch, out[:, input_ids.shape[1]:].tolist()):
            end = next((i for i, t in enumerate(new) if t in eos), None)
            n = len(new) if end is None else end + 1
            rows.append({"key": req.key, "text": tok.decode(new[:n], skip_special_tokens=True),
                         "tokens": n, "finished": end is not None})
        return rows


def as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


class OpenAIBackend:
    def __init__(self, endpoints: Sequence[str], model: str, concurrency: int = 8, timeout: float = 120.0,
                 retries: int = 3, backoff: float = 1.0):
        if not endpoints:
            raise EndpointError("gen_backend=openai needs at least one URL in gen_endpoints "
                                "(e.g. http://localhost:8000/v1 for `vllm serve`)")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.model, self.concurrency, self.timeout, self.retries, self.backoff = model, concurrency, timeout, retries, backoff
        self._warned_header = False

    def check(self) -> None:
        """Fail at once, naming every URL, when no endpoint answers."""
        import httpx

        errors = []
        for url in self.endpoints:
            try:
                httpx.get(f"{url}/models", timeout=min(self.timeout, 10.0)).raise_for_status()
                return
            except httpx.HTTPError as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
        raise EndpointError("no OpenAI-compatible endpoint answers:\n  " + "\n  ".join(errors))

    def body(self, req: Request) -> dict:
        if not req.generation_prompt and not self._warned_header:
            self._warned_header = True
            log.warning("%s: a chat endpoint always adds the assistant header; the authors' script did not "
                        "(see `python -m synthempathy fidelity`)", self.endpoints[0])
        messages = [{"role": role, "content": content} for role, content in req.messages]
        body = {"model": self.model, "messages": messages, "temperature": req.sampling.temperature,
                "top_p": req.sampling.top_p, "max_tokens": req.sampling.max_new_tokens, "seed": req.seed}
        if req.prefill:
            # vLLM's extension: continue the last assistant message instead of starting a new one.
            messages.append({"role": "assistant", "content": req.prefill})
            body.update(continue_final_message=True, add_generation_prompt=False)
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
                raise RequestRejected(f"{url}: request rejected: HTTP {e.response.status_code}: {e.response.text[:300]}") from None
            except httpx.HTTPError as e:
                err = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise EndpointError(f"{url}: failed after {self.retries + 1} attempts: {err}")

    def post_round_robin(self, client, i: int, body: dict) -> dict:
        """Request i goes to endpoint i mod n; if that one is down, to the next, so one dead server among
        live ones slows a run instead of failing it. A rejected request (HTTP 4xx) is not retried elsewhere."""
        errors = []
        n = len(self.endpoints)
        for url in (self.endpoints[(i + j) % n] for j in range(n)):
            try:
                return self.post(client, url, body)
            except RequestRejected:
                raise
            except EndpointError as e:
                errors.append(str(e))
        raise EndpointError("every endpoint failed:\n  " + "\n  ".join(errors))

    def next_token_logprobs(self, messages: list[dict], top: int = 20) -> dict[str, float]:
        """{token: logprob} of the most likely first tokens of the reply (for the judge)."""
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0.0,
                "logprobs": True, "top_logprobs": top}
        with httpx.Client() as client:
            data = self.post(client, self.endpoints[0], body)
        try:
            first = data["choices"][0]["logprobs"]["content"][0]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.endpoints[0]}: the reply carries no logprobs; the judge needs an endpoint "
                                "that returns them (vLLM, llama.cpp server)") from None
        return {t["token"]: t["logprob"] for t in first["top_logprobs"]}

    def generate(self, requests: Sequence[Request], cache: JsonlCache, progress: bool = True, desc: str = "") -> dict:
        import httpx

        todo = [r for r in requests if r.key not in cache]
        if not todo:
            return {"requests": len(requests), "generated": 0, "tokens": 0, "seconds": 0.0, "tokens_per_s": None}
        self.check()
        lock, tokens, t0 = threading.Lock(), [0], time.time()
        bar = _progress(len(todo), desc, progress)

        def one(i: int, req: Request, client) -> None:
            data = self.post_round_robin(client, i, self.body(req))
            choice = data["choices"][0]
            n = (data.get("usage") or {}).get("completion_tokens", 0)
            row = {"key": req.key, "text": choice["message"]["content"] or "", "tokens": n,
                   "finished": choice.get("finish_reason") != "length"}
            with lock:
                cache.add([row])
                tokens[0] += n
                bar.update(1)

        with httpx.Client() as client, ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(one, i, r, client) for i, r in enumerate(todo)]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in done:
                f.result()  # re-raise the first failure; what finished is already in the cache
        bar.close()
        seconds = time.time() - t0
        return {"requests": len(requests), "generated": len(todo), "tokens": tokens[0], "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens[0] / seconds, 2) if seconds > 0 else None}


def make_backend(cfg, model_spec: str, endpoints: Sequence[str] | None = None):
    """The one way a stage gets a model that answers chats: the OpenAI-compatible `endpoints` when given
    (round-robin, failover), else the model in this process on `cfg.device`, `cfg.gen_batch_size` per batch."""
    if endpoints is not None:
        return OpenAIBackend(endpoints, model_spec)
    return TransformersBackend(model_spec, cfg.device, cfg.gen_batch_size)
