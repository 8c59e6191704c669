"""Stage 3 of the paper: quality selection with a discriminator.

M_D, the base model fine-tuned on ED alone, answers every synthetic prompt. The synthetic response E_G and
M_D's response E_D are embedded, and the example is kept when S = 100 * cos(E_D, E_G) >= T: a synthetic
reply that a model trained on real empathetic dialogue would plausibly give is taken as good.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .backends import OpenAIBackend, Request, Sampling, TransformersBackend, derived_seed
from .finetune import arm_items, chat, eval_items, model_identity, train_lora
from .generate import prompts
from .models import Embedder
from .store import JsonlCache, write_json, write_jsonl

DISCRIMINATOR = "discriminator"


def discriminator_requests(examples: list[dict], cfg, model_id: str) -> list[Request]:
    """The authors' settings: system prompt "You are a helpful assistant.", T 0.8, top-p 0.9, 128 new tokens."""
    sampling = Sampling(cfg.disc_temperature, cfg.disc_top_p, cfg.disc_max_new_tokens)
    return [Request.make(model_id, [(m["role"], m["content"]) for m in chat(ex["history"], prompts()["system"])],
                         "", sampling, derived_seed(cfg.seed, "disc", ex["id"])) for ex in examples]


def similarity(a, b) -> np.ndarray:
    """S = 100 x cosine of unit-norm row pairs, rounded so the stored value is the one selection compares."""
    return np.round(100.0 * np.einsum("ij,ij->i", a, b).astype(np.float64), 4)


def select(scored: list[dict], threshold: float) -> list[dict]:
    """Rows with S >= T (the boundary is kept, as in the authors' script)."""
    return [r for r in scored if r["similarity"] >= threshold]


def train_discriminator(cfg, store) -> str:
    """Train M_D on the profile's ED training records (or use `disc_checkpoint`); returns a loadable spec."""
    if cfg.disc_checkpoint:
        return cfg.disc_checkpoint
    items, _ = arm_items(cfg, store, "ed")  # exactly the `ed` arm of stage 04, which then reuses this adapter
    out = store.path("02_quality", DISCRIMINATOR)
    train_lora(cfg, items, out, store.work_dir("02_quality") / "discriminator-checkpoints",
               eval_items=eval_items(cfg, store), name="discriminator M_D (base fine-tuned on ED only)")
    return str(out)


def score(cfg, store, disc_spec: str, progress: bool = True) -> list[dict]:
    """M_D answers every synthetic prompt; returns the scored rows."""
    examples = store.read("01_generate", "examples.jsonl")
    requests = discriminator_requests(examples, cfg, model_identity(disc_spec))
    cache = JsonlCache(store.work_dir("02_quality") / "discriminator.cache.jsonl")
    backend = (OpenAIBackend(cfg.disc_endpoints, disc_spec) if cfg.disc_endpoints
               else TransformersBackend(disc_spec, cfg.device, cfg.gen_batch_size))
    backend.generate(requests, cache, progress=progress, desc="discriminator answering")
    answers = [cache[r.key]["text"].strip() for r in requests]
    embedder = Embedder(cfg.embedder, store.cache_dir, cfg.embedder_prompt_name, cfg.device)
    sims = similarity(embedder.encode([ex["output"] for ex in examples]), embedder.encode(answers))
    return [{"id": ex["id"], "instruction": ex["instruction"], "history": ex["history"], "output": ex["output"],
             "discriminator": ans, "similarity": float(s), "k": ex["k"], "emotion": ex["emotion"]}
            for ex, ans, s in zip(examples, answers, sims)]


def run_stage(cfg, store, progress: bool = True) -> dict:
    disc = train_discriminator(cfg, store)
    scored = score(cfg, store, disc, progress)
    selected = select(scored, cfg.threshold)
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
        "kept_at": {f"{t:g}": len(select(scored, t)) for t in sorted({50.0, 60.0, cfg.threshold})},
        "similarity_mean": round(float(np.mean(sims)), 3) if sims else None,
        "histogram": dict(sorted(Counter(int(min(max(s, 0), 99.999) // 10) * 10 for s in sims).items())),
    }
    write_json(store.path("02_quality", "summary.json"), summary)
    return summary
