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

from .chain.store import read_json, write_json
from .lib import sft
from .lib.arms import Run, plan, what
from .lib.cpu_step import loss_on_labels, packed  # noqa: F401 - notebook 04 shows the loss
from .lib.models import bnb_4bit_config, load_tokenizer  # noqa: F401 - notebook 04 shows the 4-bit recipe
from .lib.sft import lora_config  # noqa: F401 - notebook 04 shows it
from .lib.stage import Stage

STAGE = Stage("04_finetune")
log = logging.getLogger(__name__)

def settings(cfg) -> list[dict]:
    """Step 2. The LoRA and 4-bit settings every adapter is trained with, a row each (key, value)."""
    rows = {"base model": cfg.base_model, "quantization": cfg.quantization, "LoRA rank r": cfg.lora_r,
            "LoRA alpha": cfg.lora_alpha, "LoRA dropout": cfg.lora_dropout, "LoRA on": "every linear projection",
            "learning rate": cfg.learning_rate, "epochs (passes over the arm's data)": cfg.epochs,
            "batch": cfg.train_batch_size, "max length (tokens)": cfg.max_length, "device": cfg.device}
    if cfg.quantization == "4bit":
        rows.update({"4-bit type": "nf4 (NormalFloat)", "double quantization": True,
                     "compute dtype": "bf16 on a GPU, fp32 on a CPU",
                     "LoRA weights": "in the compute dtype (lib/cpu_step.adapters_in_fp32 on a CPU)"})
    return [{"setting": k, "value": str(v)} for k, v in rows.items()]


def masked_example(cfg, store) -> dict:
    """Step 2. The first ED training record as the trainer sees it: the chat rendered by the base model's
    template, split where the loss starts. trl's prompt/completion form: the prompt's tokens carry no loss (their
    labels are masked), the listener's reply does."""
    system, transcript = sft.arm_input(cfg)
    record = store.read("00_data", "train.jsonl")[0]
    (row,) = sft.sft_rows([{"history": record["history"], "response": record["response"]}], system, transcript)
    tok = load_tokenizer(cfg.base_model)
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    n_prompt, n_full = len(tok(prompt, add_special_tokens=False)["input_ids"]), len(tok(full, add_special_tokens=False)["input_ids"])
    return {"masked (no loss)": prompt, "trained (loss)": full[len(prompt):], "tokens": n_full,
            "tokens with loss": n_full - n_prompt}


@STAGE.step
def train_arm(cfg, store, run: Run) -> dict:
    """Step 3. One adapter: the base model fine-tuned with LoRA on ED + the run's synthetic examples, shuffled with
    the run's seed, with the same settings as every other; a finished one (same inputs) is kept as it is, so a rerun
    or a new seed trains only what is missing. Returns its training record."""
    seeded = cfg.model_copy(update={"seed": run.seed})
    items, _ = sft.training_items(store.read("00_data", "train.jsonl"), list(run.synthetic), run.seed)
    evals = sft.validation_items(store.read("00_data", "eval.jsonl"), cfg.train_eval_records)
    system, transcript = sft.arm_input(cfg)
    _reuse_discriminator(seeded, store, run, items, evals, system, transcript)
    return sft.train_lora(seeded, items, store.path("04_finetune", run.folder), store.work_dir("04_finetune") / run.folder,
                          eval_items=evals, name=f"{run.name} (seed {run.seed})", system=system, transcript=transcript)


@STAGE.step
def write_summary(store, runs: list[Run], records: list[dict]) -> dict:
    """Step 3, recorded: summary.json, per adapter its data and, per seed, steps, examples consumed, losses, speed."""
    summary: dict = {}
    ed = len(store.read("00_data", "train.jsonl"))
    for run, record in zip(runs, records):
        counts = {"ed": ed, "synthetic": len(run.synthetic), "total": ed + len(run.synthetic)}
        summary.setdefault(run.name, {"what": what(run.name), **counts, "seeds": {}})["seeds"][str(run.seed)] = {
            k: record.get(k) for k in ("steps", "consumed", "first_loss", "final_loss", "final_eval_loss",
                                       "train_seconds", "train_tokens", "tokens_per_s", "peak_memory_mb")}
    write_json(store.path("04_finetune", "summary.json"), summary)
    return summary


def run_stage(cfg, store) -> dict:
    """The steps in order, as notebook 04 takes them: train every planned adapter, then summary.json."""
    runs = plan(cfg, store)
    return write_summary(store, runs, [train_arm(cfg, store, run) for run in runs])


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
