"""The LLM judge: naturalness, coherence and empathy of a reply, each on the authors' 1..3 rubric.

The authors asked the judge for "scores ONLY" and kept the raw text. Here the score is read from the judge's
next-token distribution at the answer position: with p1, p2, p3 the probabilities of the tokens "1", "2", "3"
(renormalized over those three), the expected score is 1*p1 + 2*p2 + 3*p3, and the argmax is reported too. In
process this comes from the logits; through an OpenAI-compatible endpoint, from the returned top logprobs.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..chain.store import JsonlCache, hash_obj
from .authors import texts_for
from .backends import (
    USAGE,
    OpenAIBackend,
    Request,
    Sampling,
    TransformersBackend,
    derived_seed,
    label_constraint,
    make_backend,
)
from .dialogue import listener_prompt, prompts, transcript
from .prefix import common_prefix_len, shared_prefix_batch

CRITERIA = ("naturalness", "coherence", "empathy")
LABELS = ("1", "2", "3")


def judge_messages(history: Sequence[str], response: str, criterion: str, authors=None) -> list[dict]:
    """The judge's chat for one reply and criterion: the project's one instruction, or with `authors` (their
    texts, lib/authors.py) their three messages: system prompt, rubric, then the history (as their data holds
    it, the transcript ending in the listener's label) and the reply in their evaluation form."""
    if authors is not None:
        rubric, form = authors.judge[criterion]
        return [{"role": "system", "content": authors.judge_system}, {"role": "user", "content": rubric},
                {"role": "user", "content": form.format(history=listener_prompt(history), response=response)}]
    p = prompts()["judge"]
    user = p["template"].format(history=transcript(history), response=response, criterion=criterion, rubric=p["criteria"][criterion])
    return [{"role": "system", "content": prompts()["system"]}, {"role": "user", "content": user}]


# The authors sampled the judge's answer (their generation settings) and kept the text; the expected score from
# the label probabilities is this package's reading. Under their prompts both are recorded.
AUTHORS_SAMPLING = Sampling(0.8, 0.9, 128)
FIRST_SCORE = re.compile(r"[1-3]")


def score_from_text(text: str) -> int | None:
    """A sampled answer read as a score: its first digit 1..3 (their form asks for the score only), else None."""
    m = FIRST_SCORE.search(text)
    return int(m.group()) if m else None


def scores_from_logits(logits: Sequence[float]) -> tuple[float | None, int | None]:
    """(expected score, argmax score) from the logits (or log-probs) of "1", "2", "3", renormalized over them.

    The expected score needs all three: where an endpoint's top logprobs leave a label out (-inf here), the item
    is unscored (None), in process and at an endpoint alike. Renormalizing over the labels that came would shift
    the score against a judge that reads all three. The argmax stays exact while one label came (a token outside
    the top list is less likely than every token in it); it is None when none came.
    """
    x = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(x).any():
        return None, None
    argmax = int(np.argmax(x)) + 1
    if not np.isfinite(x).all():
        return None, argmax
    p = np.exp(x - x.max())
    p /= p.sum()
    return float(p @ np.arange(1, 4)), argmax


class InProcessJudge:
    """The judge model in this process: one forward pass per prompt.

    The three criteria of one reply share everything up to the rubric (instruction, dialogue, reply): that
    shared prefix is encoded once and its KV cache reused for the three rubrics (bench/profile_stage.py)."""

    authors = None  # the authors' texts when the judge asks in their words (make_judge)

    def __init__(self, backend: TransformersBackend, batch_size: int = 16):
        self.backend, self.spec, self.batch_size = backend, backend.model_spec, batch_size
        self.tok = backend.tokenizer
        self.label_ids = [self._single_token(label) for label in LABELS]

    def _single_token(self, label: str) -> int:
        ids = self.tok.encode(label, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"judge {self.spec}: the label {label!r} is not one token ({ids}); cannot read its probability")
        return ids[0]

    @property
    def model(self):
        return self.backend.model

    def label_logits(self, messages_batch: list[list[dict]], labels: Sequence[str] = LABELS) -> list[list[float]]:
        """The next-token logits of `labels` (the scores, or the pairwise judge's letters) after each prompt."""
        label_ids = self.label_ids if tuple(labels) == LABELS else [self._single_token(label) for label in labels]
        texts = [self.tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages_batch]
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        out = []
        for group in _prefix_groups(ids):
            out += self._group_logits([ids[i] for i in group], label_ids)
        USAGE.record(self.spec, len(ids), sum(map(len, ids)), 0)  # logits read, no token generated
        return out

    def _group_logits(self, ids: list[list[int]], label_ids: list[int]) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            input_ids, mask, shared, cache = shared_prefix_batch(self.model, ids, self.tok.pad_token_id)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what `generate` derives itself; a forward call does not
            # the judge reads the next token after each prompt: the output head runs on the last position only
            logits = self.model(input_ids=input_ids[:, shared:], attention_mask=mask, position_ids=positions[:, shared:],
                                past_key_values=cache, logits_to_keep=1).logits[:, -1, :]
        return logits[:, label_ids].float().tolist()


def _prefix_groups(ids: list[list[int]]) -> list[list[int]]:
    """Consecutive prompts that share at least half of the first one's tokens (one reply's three criteria)."""
    groups: list[list[int]] = []
    for i, x in enumerate(ids):
        if groups and common_prefix_len([ids[groups[-1][0]], x]) * 2 >= len(ids[groups[-1][0]]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class EndpointJudge:
    """The judge behind OpenAI-compatible endpoints that return top logprobs (vLLM, llama.cpp server), through
    the backend's pool: its concurrency, round-robin over the URLs and failover, as generation."""

    authors = None
    streams = True  # label_logits takes on_result: each answer can be cached as it arrives (ask_missing)

    def __init__(self, backend, batch_size: int = 8, label_constraint: str = "structured_outputs"):
        self.backend, self.spec, self.batch_size = backend, backend.model, batch_size
        self.label_constraint = label_constraint  # how the server is held to a label (backends.label_constraint)

    def label_logits(self, messages_batch: list[list[dict]], labels: Sequence[str] = LABELS,
                     on_result=None) -> list[list[float]]:
        """Log-probs of `labels` among the top first tokens; a label not among them gets -inf. on_result(i, logits)
        is called (under the backend's lock) as each prompt's answer arrives."""
        def logits(top: dict[str, float]) -> list[float]:
            return [max((lp for tok, lp in top.items() if tok.strip() == label), default=-math.inf) for label in labels]

        each = None if on_result is None else (lambda i, top: on_result(i, logits(top)))
        return [logits(top) for top in self.backend.next_token_logprobs_many(
            messages_batch, label_constraint(self.label_constraint, labels), on_result=each)]


def ask_missing(judge, todo: list[tuple[str, list[dict]]], labels: Sequence[str], row_of, cache: JsonlCache,
                bar=None) -> None:
    """Cache row_of(key, logits of `labels`) for every (key, messages) of `todo`. At endpoints all prompts go
    through the backend's pool at once and each row is cached as its answer arrives; in process a batch at a
    time, each batch cached at once. Either way a kill loses only what was in flight, and nothing is asked twice."""
    if getattr(judge, "streams", False):
        def cached(i: int, logits: list[float]) -> None:
            cache.add([row_of(todo[i][0], logits)])
            if bar is not None:
                bar.update(1)

        judge.label_logits([m for _, m in todo], labels, on_result=cached)
        return
    for i in range(0, len(todo), judge.batch_size):
        chunk = todo[i: i + judge.batch_size]
        logits = judge.label_logits([m for _, m in chunk], labels=labels)
        cache.add([row_of(key, lg) for (key, _), lg in zip(chunk, logits)])
        if bar is not None:
            bar.update(len(chunk))


def _score_row(key: str, logits: list[float]) -> dict:
    expected, argmax = scores_from_logits(logits)
    return {"key": key, "logits": logits, "expected": expected, "argmax": argmax}


def score_items(judge, items: list[dict], cache: JsonlCache, progress: bool = True) -> list[dict]:
    """items: {id, history, response}. Returns one row per item with every criterion's expected and argmax score
    (and, under the authors' prompts, the sampled answer's text and the score read from it)."""
    keyed = []  # (item id, criterion, cache key, messages)
    for it in items:
        for c in CRITERIA:
            msgs = judge_messages(it["history"], it["response"], c, judge.authors)
            keyed.append((it["id"], c, hash_obj({"judge": judge.spec, "messages": msgs})[:24], msgs))
    todo = list({key: msgs for _, _, key, msgs in keyed if key not in cache}.items())
    bar = tqdm(total=len(todo), desc="judging", unit="item", disable=not progress, mininterval=1.0)
    try:
        ask_missing(judge, todo, LABELS, _score_row, cache, bar)
    finally:
        bar.close()
    sampled = sampled_answers(judge, {key: msgs for _, _, key, msgs in keyed}, cache, progress) if judge.authors else {}
    by_id: dict[str, dict] = {}
    for item_id, c, key, _ in keyed:
        row = by_id.setdefault(item_id, {"id": item_id})
        row[c] = None if cache[key]["expected"] is None else round(cache[key]["expected"], 4)
        row[f"{c}_argmax"] = cache[key]["argmax"]
        if key in sampled:
            row[f"{c}_text"] = sampled[key]
            row[f"{c}_sampled"] = score_from_text(sampled[key])
    return [by_id[it["id"]] for it in items]


def sampled_answers(judge, messages: dict[str, list[dict]], cache: JsonlCache, progress: bool = True) -> dict[str, str]:
    """{judge key: the judge's sampled answer} with the authors' sampling settings, through the judge's backend
    (so in process or at the endpoints, cached like every generation)."""
    requests = {key: Request.make(f"judge:{judge.spec}", [(m["role"], m["content"]) for m in msgs], "",
                                  AUTHORS_SAMPLING, derived_seed("judge", key)) for key, msgs in messages.items()}
    judge.backend.generate(list(requests.values()), cache, progress=progress, desc="judge answers (sampled)")
    return {key: cache[req.key]["text"] for key, req in requests.items()}


def shuffled_pairs(records: list[dict], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """n real (history, response) seed pairs, and the same responses moved to other dialogues (a derangement)."""
    rng = random.Random(seed)
    chosen = rng.sample(records, min(n, len(records)))
    perm = list(range(len(chosen)))
    while any(i == j for i, j in enumerate(perm)):
        rng.shuffle(perm)
    real = [{"id": f"real:{r['id']}", "history": r["history"], "response": r["response"]} for r in chosen]
    fake = [{"id": f"shuffled:{r['id']}", "history": r["history"], "response": chosen[j]["response"]}
            for r, j in zip(chosen, perm)]
    return real, fake


def separation(real: list[float | None], shuffled: list[float | None]) -> float | None:
    """P(score of a real pair > score of a shuffled pair), ties counting half: 0.5 = no separation (an AUC).
    Over the scored pairs only; None when one side has none."""
    real, shuffled = _scored(real), _scored(shuffled)
    if not real or not shuffled:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in real for b in shuffled)
    return wins / (len(real) * len(shuffled))


def make_judge(cfg):
    """The judge of the profile, on the one backend the config names (endpoints, or in process)."""
    backend = make_backend(cfg, cfg.judge_model, cfg.judge_endpoints or None)
    if isinstance(backend, OpenAIBackend):
        judge = EndpointJudge(backend, label_constraint=cfg.endpoint_label_constraint)
    else:
        judge = InProcessJudge(backend, cfg.judge_batch_size)
    if cfg.judge_prompt == "authors":
        judge.authors = texts_for(cfg)
    return judge


def sanity_summary(rows: list[dict], panel: list[dict]) -> dict:
    """Per criterion: mean score of all judged rows and of the selected ones, of the panel's real and shuffled
    halves, how well the judge separates those halves, and how many items it left unscored (rows and panel)."""
    n = len(panel) // 2
    summary = {}
    for c in CRITERIA:
        sep = separation([r[c] for r in panel[:n]], [r[c] for r in panel[n:]])
        summary[c] = {"all": _mean(r[c] for r in rows), "selected": _mean(r[c] for r in rows if r["selected"]),
                      "sanity_real": _mean(r[c] for r in panel[:n]), "sanity_shuffled": _mean(r[c] for r in panel[n:]),
                      "sanity_separation": None if sep is None else round(sep, 3),
                      "unscored": sum(r[c] is None for r in rows + panel)}
    return summary


def sanity_verdict(summary: dict, judge_model: str) -> str:
    """What the sanity panel says about how far the judge's scores can be trusted."""
    separations = {c: s["sanity_separation"] for c, s in summary.items() if s["sanity_separation"] is not None}
    unscored = sum(s.get("unscored", 0) for s in summary.values())
    note = (f" It left {unscored} items unscored (no probability for every label at its endpoint)."
            if unscored else "")
    if not separations:
        return f"The judge ({judge_model}) scored too few of the sanity panel's items to say how far it can be trusted.{note}"
    best = max(separations, key=separations.get)
    sep = separations[best]
    verdict = ("separates real from shuffled replies clearly" if sep >= 0.7 else
               "separates them only weakly" if sep >= 0.6 else "does not separate them better than chance")
    return (f"At this scale the judge ({judge_model}) {verdict}: best separation {sep:.2f} ({best}). "
            f"Read its scores of the synthetic data with that in mind.{note}")


def _scored(values) -> list[float]:
    """The values of the scored items (None marks an item the judge left unscored)."""
    return [v for v in values if v is not None]


def _mean(values) -> float | None:
    values = _scored(values)
    return round(float(np.mean(values)), 4) if values else None
