"""02_quality, the paper's stage 3: quality selection with a discriminator, and the LLM judge.

M_D, the base model fine-tuned on ED alone, answers every synthetic prompt. The synthetic response E_G and
M_D's response E_D are embedded, and the example is kept when S = 100 * cos(E_D, E_G) >= T: a synthetic
reply that a model trained on real empathetic dialogue would plausibly give is taken as good. The LLM judge
then scores every synthetic example, selected or not, and a sanity panel of real and shuffled seed pairs says
how far its scores can be trusted.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .chain.store import JsonlCache, read_json, read_jsonl, write_json, write_jsonl
from .lib import judging, sft
from .lib.authors import texts_for
from .lib.backends import Request, Sampling, derived_seed, make_backend
from .lib.dialogue import chat_pairs, prompts
from .lib.embedding import embedder
from .lib.judging import CRITERIA, sanity_verdict, scores_from_logits  # noqa: F401 - notebook 02 shows them
from .lib.selection import select_quality, similarity
from .lib.stage import Stage

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


@STAGE.step
def train_discriminator(cfg, store) -> str:
    """Step 1. M_D: the base model fine-tuned on the profile's ED training records alone (or `disc_checkpoint`);
    returns a loadable spec. Training resumes from its last checkpoint after a crash."""
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


def training_losses(disc_spec: str) -> list[dict]:
    """M_D's training log, a row per step: its loss, and the held-out loss where it was evaluated."""
    log_path = Path(disc_spec) / "training_log.json"
    rows: dict[int, dict] = {}
    for h in read_json(log_path) if log_path.exists() else []:
        row = rows.setdefault(h["step"], {"step": h["step"]})
        row.update({k: round(h[k], 4) for k in ("loss", "eval_loss") if k in h})
    return list(rows.values())


@STAGE.step
def discriminator_answers(cfg, store, disc_spec: str, progress: bool = True) -> list[dict]:
    """Step 2. M_D answers every synthetic prompt (the authors' sampling); answers are cached as they arrive.
    Returns the synthetic examples, each with M_D's reply under "discriminator"."""
    examples = store.read("01_generate", "examples.jsonl")
    requests = discriminator_requests(examples, cfg, sft.model_identity(disc_spec))
    cache = JsonlCache(store.work_dir("02_quality") / "discriminator.cache.jsonl")
    backend = make_backend(cfg, disc_spec, cfg.disc_endpoints or None)
    backend.generate(requests, cache, progress=progress, desc="discriminator answering")
    return [{**ex, "discriminator": cache[r.key]["text"].strip()} for ex, r in zip(examples, requests)]


@STAGE.step
def embed_replies(cfg, store, answered: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Step 3a. (E_G, E_D): unit-norm embeddings of the synthetic replies and of M_D's replies, a row per example
    (cached in the run: a rerun loads no model)."""
    emb = embedder(cfg, store)
    return emb.encode([r["output"] for r in answered]), emb.encode([r["discriminator"] for r in answered])


def score(answered: list[dict], e_g: np.ndarray, e_d: np.ndarray) -> list[dict]:
    """Step 3b. S = 100 cos(E_D, E_G) for every example: the rows of scored.jsonl."""
    return [{"id": ex["id"], "instruction": ex["instruction"], "history": ex["history"], "output": ex["output"],
             "discriminator": ex["discriminator"], "similarity": float(s), "k": ex["k"], "emotion": ex["emotion"]}
            for ex, s in zip(answered, similarity(e_g, e_d))]


def cut(scored: list[dict], threshold: float, rule: str = "exact") -> tuple[list[dict], list[dict]]:
    """Step 4. (kept, dropped) at threshold T: kept when S >= T (select_quality)."""
    kept = select_quality(scored, threshold, rule)
    ids = {r["id"] for r in kept}
    return kept, [r for r in scored if r["id"] not in ids]


def selection_summary(scored: list[dict], threshold: float, rule: str, discriminator: str) -> dict:
    """How many S >= T keeps, at this T and at the paper's two, and the histogram of S in bins of 10."""
    sims = [r["similarity"] for r in scored]
    kept = select_quality(scored, threshold, rule)
    return {
        "discriminator": discriminator, "threshold": threshold,
        "examples": len(scored), "selected": len(kept), "kept_share": round(len(kept) / max(len(scored), 1), 4),
        "kept_at": {f"{t:g}": len(select_quality(scored, t, rule)) for t in sorted({50.0, 60.0, threshold})},
        "similarity_mean": round(float(np.mean(sims)), 3) if sims else None,
        "histogram": dict(sorted(Counter(int(min(max(s, 0), 99.999) // 10) * 10 for s in sims).items())),
    }


@STAGE.step
def write_selection(store, scored: list[dict], threshold: float, rule: str = "exact",
                    discriminator: str = DISCRIMINATOR) -> dict:
    """Step 4, recorded: scored.jsonl, selected.jsonl (S >= T, what 03 reads) and summary.json; returns the
    summary. A T that keeps nothing is refused before anything is written."""
    kept, _ = cut(scored, threshold, rule)
    if not kept:
        best = max((r["similarity"] for r in scored), default=None)
        raise ValueError(f"threshold {threshold}: keeps none of the {len(scored)} synthetic examples "
                         f"(highest S = {best}); lower `threshold` (the paper uses 50 or 60)")
    write_jsonl(store.path("02_quality", "scored.jsonl"), scored)
    write_jsonl(store.path("02_quality", "selected.jsonl"), kept)
    summary = selection_summary(scored, threshold, rule, discriminator)
    write_json(store.path("02_quality", "summary.json"), summary)
    return summary


@STAGE.step
def judge(cfg, store, scored: list[dict], selected_ids: set[str], progress: bool = True) -> dict:
    """Step 5. The LLM judge scores every synthetic example (selected or not) and the sanity panel of real and
    shuffled seed pairs; writes judge.jsonl, judge_sanity.jsonl and judge_summary.json."""
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


def judge_rows(store) -> tuple[list[dict], list[dict]]:
    """(the judge's rows for the synthetic examples, its rows for the sanity panel), as step 5 wrote them."""
    return (read_jsonl(store.path("02_quality", "judge.jsonl")),
            read_jsonl(store.path("02_quality", "judge_sanity.jsonl")))


def discriminator_name(cfg, disc_spec: str) -> str:
    return disc_spec if cfg.disc_checkpoint else DISCRIMINATOR


def run_stage(cfg, store, progress: bool = True) -> dict:
    """The steps in order, as notebook 02 takes them: {selection, discriminator, judge, verdict}, where
    discriminator is M_D's training record (empty when `disc_checkpoint` is used)."""
    disc = train_discriminator(cfg, store)
    answered = discriminator_answers(cfg, store, disc, progress)
    scored = score(answered, *embed_replies(cfg, store, answered))
    selection = write_selection(store, scored, cfg.threshold, cfg.similarity_cut, discriminator_name(cfg, disc))
    kept, _ = cut(scored, cfg.threshold, cfg.similarity_cut)
    judged = judge(cfg, store, scored, {r["id"] for r in kept}, progress)
    return {"selection": selection, "discriminator": training_record(cfg, disc),
            "judge": judged, "verdict": sanity_verdict(judged, cfg.judge_model)}


def training_record(cfg, disc_spec: str) -> dict:
    """M_D's training record (completed.json), or {} for a given `disc_checkpoint`."""
    return {} if cfg.disc_checkpoint else read_json(Path(disc_spec) / sft.COMPLETED)
