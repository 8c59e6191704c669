"""04_finetune, the paper's stage 5: the comparison arms, each the base model fine-tuned with LoRA (4-bit QLoRA by
default; lib/sft.py) on ED plus one choice of synthetic data, all with the same settings, once per training seed.

The budget is matched in passes, not steps: every adapter makes `epochs` passes over its own data, so every
synthetic example it is given is seen (the results count what the trainer consumed). `ed_plus_random`, the
control of the selection, has exactly as many examples as `synth_empathy` and so the same number of steps; `ed`
has fewer, as in the authors' runs. The quantity-quality sweep trains, at each extra threshold (or K-center
ratio), ED + the examples selected there and ED + as many random ones.
"""

from __future__ import annotations

import logging
import shutil

from .lib import sft
from .lib.arms import Run, plan, what
from .lib.stage import Stage
from .store import read_json, write_json

STAGE = Stage("04_finetune")
log = logging.getLogger(__name__)

def run_stage(cfg, store) -> dict:
    """Train every planned adapter with the same base, passes, learning rate, batch and length; a finished one
    (same inputs) is kept as it is, so a rerun or a new seed trains only what is missing."""
    runs = plan(cfg, store)
    summary: dict = {}
    evals = sft.validation_items(store.read("00_data", "eval.jsonl"), cfg.train_eval_records)
    system, transcript = sft.arm_input(cfg)
    ed_records = store.read("00_data", "train.jsonl")
    for run in runs:
        seeded = cfg.model_copy(update={"seed": run.seed})
        items, counts = sft.training_items(ed_records, list(run.synthetic), run.seed)
        out = store.path("04_finetune", run.folder)
        _reuse_discriminator(seeded, store, run, items, evals, system, transcript)
        record = sft.train_lora(seeded, items, out, store.work_dir("04_finetune") / run.folder, eval_items=evals,
                                name=f"{run.name} (seed {run.seed})", system=system, transcript=transcript)
        summary.setdefault(run.name, {"what": what(run.name), **counts, "seeds": {}})["seeds"][str(run.seed)] = {
            k: record.get(k) for k in ("steps", "consumed", "first_loss", "final_loss", "final_eval_loss",
                                       "train_seconds", "train_tokens", "tokens_per_s", "peak_memory_mb")}
    write_json(store.path("04_finetune", "summary.json"), summary)
    return summary


def _reuse_discriminator(cfg, store, run: Run, items, evals, system, transcript) -> None:
    """M_D of 02_quality is the `ed` arm's very training run when base, data, form, settings and seed agree:
    copy it instead of retraining."""
    if run.name != "ed":
        return
    fingerprint = sft.training_fingerprint(cfg, items, evals, system, None, transcript)
    disc, out = store.root / "02_quality" / "discriminator", store.path("04_finetune", run.folder)
    if sft.is_completed(disc, fingerprint) and not sft.is_completed(out, fingerprint):
        shutil.copytree(disc, out, dirs_exist_ok=True)
        log.info("arm ed (seed %d): reused the discriminator of stage 02 (identical training run)", run.seed)


def training_table(summary: dict) -> list[dict]:
    """One row per adapter (arm or sweep point, seed): data given, examples consumed, losses, speed."""
    rows = []
    for name, s in summary.items():
        for seed, r in s["seeds"].items():
            consumed = r.get("consumed") or {}
            rows.append({"adapter": name, "seed": seed, "ed": s["ed"], "synthetic": s["synthetic"],
                         "consumed_ed": consumed.get("ed", 0), "consumed_synthetic": consumed.get("synthetic", 0),
                         **{k: r.get(k) for k in ("steps", "first_loss", "final_loss", "final_eval_loss",
                                                  "train_seconds", "tokens_per_s", "peak_memory_mb")}})
    return rows


def loss_logs(store, summary: dict, seed: int) -> dict[str, list]:
    """{adapter: its trainer's log} for one training seed, for the loss figure."""
    return {name: read_json(store.path("04_finetune", f"{name}/seed-{seed}") / "training_log.json")
            for name, s in summary.items() if str(seed) in map(str, s["seeds"])}
