"""Supervised fine-tuning with LoRA, in 4 bits (QLoRA) or full precision: the one SFT helper of the package.

Used by 02_quality (the discriminator M_D: the base model fine-tuned on ED alone), 04_finetune (the arms) and
05_evaluate's sweep (an adapter per point). The recipe is QLoRA's (Dettmers et al., 2023): the frozen base
weights in 4-bit NormalFloat (nf4) with double quantization, computation in bf16 (fp32 on CPU), and LoRA
adapters on every linear projection of the transformer. Only the adapters (a few MB) are trained and saved.

Examples are chats: the dialogue history as alternating user (speaker) / assistant (listener) messages, and
the listener's response as the assistant completion; the loss covers the completion only.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter
from pathlib import Path

from ..chain.store import hash_obj, read_json, write_json, write_text
from .dialogue import chat, prompts
from .trainer import counting_trainer

log = logging.getLogger(__name__)
COMPLETED = "completed.json"


def sft_rows(items: list[dict], system: str, transcript: bool = False) -> list[dict]:
    """{history, response} items -> trl's conversational prompt/completion rows (loss on the completion), each
    with its source ("ed" or "synthetic"), which the trainer's data loader drops and the consumption count reads."""
    return [{"prompt": chat(it["history"], system, transcript), "completion": [{"role": "assistant", "content": it["response"]}],
             "source": it.get("source", "ed")} for it in items]


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def load_base_for_training(model_spec: str, device: str, quantization: str):
    """The base model, frozen, in 4 bits (nf4 + double quantization) or full precision.

    Returns (model, tokenizer, notes): notes say what was actually used (e.g. a double-quantization fallback).
    """
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from .models import bnb_4bit_config, keep_4bit_differentiable, load_tokenizer, pick_device, resolve

    device = pick_device(device)
    path = resolve(model_spec)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    notes: dict = {"device": device, "quantization": quantization, "compute_dtype": str(dtype).split(".")[-1]}
    if quantization == "4bit":
        qc = bnb_4bit_config(dtype)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, quantization_config=qc, device_map={"": device}, dtype=dtype)
            notes["double_quant"] = True
        except Exception as e:  # noqa: BLE001 - some backends lack nested quantization; fall back, say so
            log.warning("4-bit load with double quantization failed (%s); retrying without it", e)
            qc.bnb_4bit_use_double_quant = False
            model = AutoModelForCausalLM.from_pretrained(path, quantization_config=qc, device_map={"": device}, dtype=dtype)
            notes.update(double_quant=False, double_quant_error=str(e)[:300])
        keep_4bit_differentiable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=device == "cuda")
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    return model, load_tokenizer(model_spec), notes


def last_checkpoint(folder: Path) -> str | None:
    """The newest *complete* checkpoint: a kill during a save leaves a folder without trainer_state.json."""
    ckpts = sorted((p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()),
                   key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def training_fingerprint(cfg, train_items, eval_items, system, max_steps, transcript: bool = False) -> str:
    """Everything that determines a trained adapter: data, its prompt form, settings, base model, seed."""
    keys = ("base_model", "quantization", "lora_r", "lora_alpha", "lora_dropout", "learning_rate", "epochs",
            "max_steps", "train_batch_size", "max_length", "seed", "device")
    what = {"cfg": {k: getattr(cfg, k) for k in keys}, "max_steps": max_steps, "system": system,
            "train": train_items, "eval": eval_items}
    if transcript:  # only then, so adapters trained before the transcript form existed keep their fingerprint
        what["transcript"] = True
    return hash_obj(what)


def model_identity(spec: str) -> str:
    """What a model's cached answers are keyed by: a trained adapter by its training fingerprint, so the same
    adapter in another run folder shares keys (and batches, and sampled answers); any other model by its spec."""
    marker = Path(spec) / COMPLETED
    return f"adapter:{read_json(marker)['fingerprint']}" if marker.exists() else spec


def is_completed(out_dir: str | Path, fingerprint: str | None = None) -> bool:
    """A finished adapter (and, given a fingerprint, one trained from exactly those inputs)."""
    marker = Path(out_dir) / COMPLETED
    return marker.exists() and (fingerprint is None or read_json(marker).get("fingerprint") == fingerprint)


def _clear_stale(folder: Path, fingerprint: str) -> None:
    """Remove a folder left by a run with other inputs, so no stale checkpoint or adapter is resumed."""
    stamp = folder / "fingerprint.txt"
    if folder.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def train_lora(cfg, train_items: list[dict], out_dir: str | Path, work_dir: str | Path, *,
               eval_items: list[dict] | None = None, name: str = "model", system: str | None = None,
               max_steps: int | None = None, transcript: bool = False) -> dict:
    """Fine-tune `cfg.base_model` with LoRA on {history, response} items; save the adapter to `out_dir`.

    `system` is the system prompt (None: the project's; "": none); `transcript` shows each dialogue as one user
    message of Speaker/Listener lines instead of chat turns. Resumes from the last checkpoint in `work_dir`
    after an interruption; a finished `out_dir` (marker
    `completed.json`) is returned as it is. Returns the training record (losses, tokens/s, peak memory).
    """
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    system = prompts()["system"] if system is None else system
    fingerprint = training_fingerprint(cfg, train_items, eval_items, system, max_steps, transcript)
    if is_completed(out_dir, fingerprint):
        return read_json(out_dir / COMPLETED)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an adapter from other inputs, or half-saved
    _clear_stale(work_dir, fingerprint)
    import datasets
    import torch
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback
    from trl import SFTConfig, SFTTrainer
    model, tok, notes = load_base_for_training(cfg.base_model, cfg.device, cfg.quantization)
    steps = max_steps or cfg.max_steps
    planned = steps or math.ceil(cfg.epochs * math.ceil(len(train_items) / cfg.train_batch_size))
    args = SFTConfig(
        output_dir=str(work_dir), seed=cfg.seed, data_seed=cfg.seed,
        per_device_train_batch_size=cfg.train_batch_size, learning_rate=cfg.learning_rate,
        max_steps=steps or -1, num_train_epochs=cfg.epochs, lr_scheduler_type="linear",
        max_length=cfg.max_length, gradient_checkpointing=notes["device"] == "cuda",
        logging_steps=1, save_strategy="steps", save_steps=max(1, planned // 3), save_total_limit=1,
        eval_strategy="steps" if eval_items else "no", eval_steps=math.ceil(planned / 2),
        per_device_eval_batch_size=cfg.train_batch_size, prediction_loss_only=True,  # else it keeps every logit of the eval set
        use_cpu=notes["device"] == "cpu", bf16=notes["device"] == "cuda", report_to="none",
        disable_tqdm=False, dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
    )
    trainer = counting_trainer(SFTTrainer)(
        model=model, args=args, processing_class=tok, peft_config=lora_config(cfg),
        train_dataset=datasets.Dataset.from_list(sft_rows(train_items, system, transcript)),
        eval_dataset=datasets.Dataset.from_list(sft_rows(eval_items, system, transcript)) if eval_items else None,
    )
    # in a notebook kernel the trainer draws its bar as HTML, which only a browser shows; its tqdm bar shows in
    # JupyterLab too and reaches the runner's terminal and logs (progress.py)
    if trainer.pop_callback(NotebookProgressCallback) is not None:
        trainer.add_callback(ProgressCallback)
    resume = last_checkpoint(work_dir)
    trainer.consumption.restore(resume)
    if resume:
        log.info("%s: resuming from %s", name, resume)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - t0
    step = trainer.state.global_step
    if eval_items and not any("eval_loss" in h and h.get("step") == step for h in trainer.state.log_history):
        trainer.evaluate()  # the final eval loss, unless the schedule just computed it at this very step
    trainer.save_model(str(out_dir))
    tok.save_pretrained(str(out_dir))
    record = training_record(cfg, trainer, result, seconds, notes, name, len(train_items), steps, resumed=bool(resume))
    record.update(fingerprint=fingerprint, system_prompt=system, transcript=transcript,
                  consumed=trainer.consumption.counts, provided=_sources(train_items))
    write_model_card(out_dir, record)
    write_json(out_dir / "training_log.json", trainer.state.log_history)
    write_json(out_dir / COMPLETED, record)  # written last: its presence means everything above is on disk
    shutil.rmtree(work_dir, ignore_errors=True)
    del trainer, model
    release_memory()
    return record


def release_memory() -> None:
    """Hand a finished training's memory back to the system. The trainer and its callbacks refer to each other, so
    only the cycle collector frees them; glibc then keeps the freed heap (the steps' activations) in the process,
    and the next model would load on top of it (stage 02's peak was training, then M_D loaded to answer)."""
    import ctypes
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _sources(items: list[dict]) -> dict[str, int]:
    return dict(Counter(it.get("source", "ed") for it in items))


def peak_memory_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def training_record(cfg, trainer, result, seconds, notes, name, n_items, steps, resumed) -> dict:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = trainer.state.num_input_tokens_seen or None
    return {
        "name": name, "base_model": cfg.base_model, "examples": n_items, "steps": trainer.state.global_step,
        "max_steps": steps, "epochs": cfg.epochs, "batch_size": cfg.train_batch_size,
        "learning_rate": cfg.learning_rate, "max_length": cfg.max_length, "seed": cfg.seed,
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": "all-linear"},
        **notes, "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "final_eval_loss": evals[-1] if evals else None, "train_seconds": round(seconds, 1),
        "train_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1) if tokens and seconds else None,
        "peak_memory_mb": round(peak_memory_mb(), 1), "resumed": resumed,
    }


def write_model_card(out_dir: Path, record: dict) -> None:
    lines = [f"# {record['name']}: LoRA adapter on {record['base_model']}", "",
             "Trained by the Synth-Empathy reproduction package (`synthempathy.lib.sft.train_lora`).", "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if isinstance(v, dict) else v} |" for k, v in record.items() if k != "name"]
    lines += ["", "Load it with `synthempathy.lib.models.load_lm(\"<this folder>\")`, which puts it on its base model."]
    write_text(out_dir / "README.md", "\n".join(lines) + "\n")


# -- what an adapter is trained on ---------------------------------------------------------------------------

def training_items(ed_records: list[dict], synthetic: list[dict], seed: int) -> tuple[list[dict], dict]:
    """ED training records plus synthetic examples (their `output` as the response), shuffled with the seed;
    and the counts. Every adapter of the chain (M_D, the arms, the sweep) is trained on such a mix."""
    import random

    ed = [{"history": r["history"], "response": r["response"]} for r in ed_records]
    items = ed + [{"history": e["history"], "response": e["output"], "source": "synthetic"} for e in synthetic]
    random.Random(seed).shuffle(items)
    return items, {"ed": len(ed), "synthetic": len(synthetic), "total": len(items)}


def validation_items(eval_records: list[dict], n: int) -> list[dict]:
    """The evaluation records whose loss is the validation loss during training."""
    return eval_records[:n]


def arm_input(cfg) -> tuple[str, bool]:
    """(system prompt, transcript) of what the arms see in training and evaluation: chat turns after the project's
    system prompt, or (prompt_format authors) the Speaker/Listener transcript as one user message, no system."""
    return ("", True) if cfg.prompt_format == "authors" else (prompts()["system"], False)
