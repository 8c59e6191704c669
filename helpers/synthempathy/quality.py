"""02_quality, the paper's stage 3: quality selection with a discriminator, and the LLM judge.

M_D, the base model fine-tuned on ED alone, answers every synthetic prompt. The synthetic response E_G and
M_D's response E_D are embedded, and the example is kept when S = 100 * cos(E_D, E_G) >= T: a synthetic
reply that a model trained on real empathetic dialogue would plausibly give is taken as good. The LLM judge
then scores every synthetic example, selected or not, and a sanity panel of real and shuffled seed pairs says
how far its scores can be trusted.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .lib import judging, sft
from .lib.authors import texts_for
from .lib.backends import Request, Sampling, derived_seed, make_backend
from .lib.dialogue import chat_pairs, prompts
from .lib.embedding import embedder
from .lib.judging import CRITERIA  # noqa: F401 - notebook 02 plots the judge's criteria
from .lib.selection import select_quality, similarity
from .lib.stage import Stage
from .store import JsonlCache, read_json, write_json, write_jsonl

STAGE = Stage("02_quality")
DISCRIMINATOR = "discriminator"


def discriminator_input(cfg) -> tuple[str, bool]:
    """(system prompt, transcript) of M_D's input. chat: the project's system prompt and the dialogue as chat
    turns (M_D is then the `ed` arm); authors: their system prompt and the Speaker/Listener transcript as one
    user message, in training as in answering."""
    if cfg.disc_input == "authors":
        return texts_for(cfg).discriminator_system, True
    return prompts()["system"], False


def discriminator_requests(examples: list[dict], cfg, model_id: str) -> list[Request]:
    """The authors' settings: T 0.8, top-p 0.9, 128 new tokens, a system prompt, the example's dialogue."""
    sampling = Sampling(cfg.disc_temperature, cfg.disc_top_p, cfg.disc_max_new_tokens)
    system, transcript = discriminator_input(cfg)
    return [Request.make(model_id, chat_pairs(ex["history"], system, transcript), "", sampling,
                         derived_seed(cfg.seed, "disc", ex["id"])) for ex in examples]


def train_discriminator(cfg, store) -> str:
    """Train M_D on the profile's ED training records (or use `disc_checkpoint`); returns a loadable spec."""
    if cfg.disc_checkpoint:
        return cfg.disc_checkpoint
    # with chat input exactly the `ed` arm of 04_finetune (same data, settings and seed), which reuses it
    items, _ = sft.training_items(store.read("00_data", "train.jsonl"), [], cfg.seed)
    out = store.path("02_quality", DISCRIMINATOR)
    system, transcript = discriminator_input(cfg)
    sft.train_lora(cfg, items, out, store.work_dir("02_quality") / "discriminator-checkpoints",
                   eval_items=sft.validation_items(store.read("00_data", "eval.jsonl"), cfg.train_eval_records),
                   name="discriminator M_D (base fine-tuned on ED only)", system=system, transcript=transcript)
    return str(out)


def score(cfg, store, disc_spec: str, progress: bool = True) -> list[dict]:
    """M_D answers every synthetic prompt; returns the scored rows."""
    examples = store.read("01_generate", "examples.jsonl")
    requests = discriminator_requests(examples, cfg, sft.model_identity(disc_spec))
    cache = JsonlCache(store.work_dir("02_quality") / "discriminator.cache.jsonl")
    backend = make_backend(cfg, disc_spec, cfg.disc_endpoints or None)
    backend.generate(requests, cache, progress=progress, desc="discriminator answering")
    answers = [cache[r.key]["text"].strip() for r in requests]
    emb = embedder(cfg, store)
    sims = similarity(emb.encode([ex["output"] for ex in examples]), emb.encode(answers))
    return [{"id": ex["id"], "instruction": ex["instruction"], "history": ex["history"], "output": ex["output"],
             "discriminator": ans, "similarity": float(s), "k": ex["k"], "emotion": ex["emotion"]}
            for ex, ans, s in zip(examples, answers, sims)]


def select(cfg, store, disc: str, scored: list[dict]) -> tuple[list[dict], dict]:
    """Keep S >= T; write scored.jsonl, selected.jsonl and summary.json; return the kept rows and the summary."""
    selected = select_quality(scored, cfg.threshold, cfg.similarity_cut)
    if not selected:
        best = max((r["similarity"] for r in scored), default=None)
        raise ValueError(f"threshold {cfg.threshold}: keeps none of the {len(scored)} synthetic examples "
                         f"(highest S = {best}); lower `threshold` (the paper uses 50 or 60)")
    write_jsonl(store.path("02_quality", "scored.jsonl"), scored)
    write_jsonl(store.path("02_quality", "selected.jsonl"), selected)
    sims = [r["similarity"] for r in scored]
    summary = {
        "discriminator": disc if cfg.disc_checkpoint else DISCRIMINATOR, "threshold": cfg.threshold,
        "examples": len(scored), "selected": len(selected),
        "kept_share": round(len(selected) / max(len(scored), 1), 4),
        "kept_at": {f"{t:g}": len(select_quality(scored, t, cfg.similarity_cut))
                    for t in sorted({50.0, 60.0, cfg.threshold})},
        "similarity_mean": round(float(np.mean(sims)), 3) if sims else None,
        "histogram": dict(sorted(Counter(int(min(max(s, 0), 99.999) // 10) * 10 for s in sims).items())),
    }
    write_json(store.path("02_quality", "summary.json"), summary)
    return selected, summary


def judge(cfg, store, scored: list[dict], selected_ids: set[str], progress: bool = True) -> dict:
    """Judge every scored synthetic example (selected or not) and the sanity panel; write judge*.jsonl."""
    judge_model = judging.make_judge(cfg)
    cache = JsonlCache(store.work_dir("02_quality") / "judge.cache.jsonl")
    items = [{"id": r["id"], "history": r["history"], "response": r["output"]} for r in scored]
    rows = [{**row, "selected": row["id"] in selected_ids}
            for row in judging.score_items(judge_model, items, cache, progress)]
    real, fake = judging.shuffled_pairs(store.read("00_data", "train.jsonl"), cfg.sanity_pairs, cfg.seed)
    panel = judging.score_items(judge_model, real + fake, cache, progress)
    write_jsonl(store.path("02_quality", "judge.jsonl"), rows)
    write_jsonl(store.path("02_quality", "judge_sanity.jsonl"), panel)
    summary = judging.sanity_summary(rows, panel)
    write_json(store.path("02_quality", "judge_summary.json"), summary)
    return summary


def run_stage(cfg, store, progress: bool = True) -> dict:
    """M_D, S for every synthetic example, the selection at T, and the judge: {selection, discriminator, judge,
    verdict}, where discriminator is M_D's training record (empty when `disc_checkpoint` is used)."""
    disc = train_discriminator(cfg, store)
    scored = score(cfg, store, disc, progress)
    selected, selection = select(cfg, store, disc, scored)
    judged = judge(cfg, store, scored, {r["id"] for r in selected}, progress)
    marker = store.path("02_quality", DISCRIMINATOR) / sft.COMPLETED
    return {"selection": selection, "discriminator": read_json(marker) if not cfg.disc_checkpoint else {},
            "judge": judged, "verdict": judging.sanity_verdict(judged, cfg.judge_model)}
