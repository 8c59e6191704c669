"""04_finetune, the paper's stage 5: the comparison arms, each the base model fine-tuned with LoRA (4-bit QLoRA by
default; lib/sft.py) on ED plus one choice of synthetic data, all with the same settings and seed.
"""

from __future__ import annotations

import logging
import shutil

from .lib import sft
from .lib.stage import Stage
from .store import read_json, write_json

STAGE = Stage("04_finetune")
log = logging.getLogger(__name__)

ARMS = {
    # arm: (what it tests, where its synthetic data comes from)
    "ed": ("the paper's F.T. baseline: ED only", None),
    "synth_empathy": ("the paper's model: ED + D_a (quality- and diversity-selected)", ("03_diversity", "selected.jsonl")),
    "ed_plus_all": ("ablation: ED + every parsed synthetic example", ("01_generate", "examples.jsonl")),
    "ed_plus_quality": ("ablation: ED + quality-selected only", ("02_quality", "selected.jsonl")),
}


def arm_items(cfg, store, arm: str) -> tuple[list[dict], dict]:
    """The shuffled training items of one arm, and its data counts."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")
    source = ARMS[arm][1]
    return sft.training_items(store.read("00_data", "train.jsonl"), store.read(*source) if source else [], cfg.seed)


def run_stage(cfg, store) -> dict:
    """Train every arm in cfg.arms with the same base, steps, learning rate, batch, length and seed."""
    summary = {}
    evals = sft.validation_items(store.read("00_data", "eval.jsonl"), cfg.train_eval_records)
    system, transcript = sft.arm_input(cfg)
    for arm in cfg.arms:
        items, counts = arm_items(cfg, store, arm)
        out = store.path("04_finetune", arm)
        fingerprint = sft.training_fingerprint(cfg, items, evals, system, None, transcript)
        disc = store.root / "02_quality" / "discriminator"
        if arm == "ed" and sft.is_completed(disc, fingerprint) and not sft.is_completed(out, fingerprint):
            # M_D of 02_quality is this very training run (same base, data, settings, seed): reuse, do not retrain.
            shutil.copytree(disc, out, dirs_exist_ok=True)
            log.info("arm ed: reused the discriminator of stage 02 (identical training run)")
        record = sft.train_lora(cfg, items, out, store.work_dir("04_finetune") / arm, eval_items=evals, name=f"arm {arm}",
                                system=system, transcript=transcript)
        summary[arm] = {"what": ARMS[arm][0], **counts, **{k: record.get(k) for k in (
            "steps", "first_loss", "final_loss", "final_eval_loss", "train_seconds", "train_tokens", "tokens_per_s",
            "peak_memory_mb", "quantization", "double_quant")}}
        summary[arm]["log"] = read_json(out / "training_log.json")
    write_json(store.path("04_finetune", "summary.json"), {a: {k: v for k, v in s.items() if k != "log"} for a, s in summary.items()})
    return summary
