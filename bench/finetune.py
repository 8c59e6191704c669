"""The training step: 4-bit QLoRA against plain LoRA, and the package's CPU step against the one before it.

Variants, each in its own subprocess (so peak RSS is its own), one after the other, on the seed corpus:
quantization `none` or `4bit`, times the step
- `before`: trl's loss, whose fused head on a CPU scores every position and recomputes them in its backward, and
  torch's dropout masks (the package before lib/cpu_step.py);
- `head`: the head on the reply's tokens only (lib/cpu_step.py's loss), torch's dropout masks;
- `padded`: that, LoRA's dropout masks from numpy, and (4-bit) the adapters kept in fp32, the layers run on the
  padded batch (the package before `cpu_step.packed`);
- `after`: the package now: `padded`, but the batch's examples packed into one row without padding, each attending
  to itself only (`cpu_step.packed`, `cpu_step.packed_attention`).
trl turns a quantized model's adapters into bf16; `before` and `head` keep that.
For each: training tokens/s through `sft.train_lora` (the stage's own path), peak RSS,
then one step taken apart on a batch of the same data (torch.profiler: the output head, 4-bit dequantization,
attention, the optimizer, the other matmuls, the rest), its FLOPs (torch's FlopCounterMode: the matmuls and
attention; a 4-bit step is counted on the plain model, as the counter does not see into bitsandbytes) and their
rate as a share of this CPU's own fp32 matmul rate, measured first (the roofline).
    python bench/finetune.py [--steps 8] [--batch 4] [--max-length 256] [--variants none:trl,...] [--avx2]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile

from machine import AVX2_ONLY, cpu_flags

VARIANTS = ("none:before", "none:padded", "none:after", "4bit:before", "4bit:head", "4bit:padded", "4bit:after")
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"}


def matmul_rate() -> float:
    """This CPU's fp32 matrix-multiply rate (GFLOP/s): the best of a few shapes a training step of the model uses
    (its hidden size 576, MLP 1536, a batch of ~512 tokens) and one square product."""
    import time

    import torch

    best = 0.0
    for m, k, n in ((512, 576, 1536), (512, 1536, 576), (512, 576, 576), (1024, 1024, 1024)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < 1.0:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
    return best


def category(event, vocab: int) -> str:
    """Where an op's own time belongs: the first of its ancestors (or itself) that names a part of the step."""
    chain, e = [], event
    while e is not None:
        chain.append(e)
        e = e.cpu_parent
    names = [c.name.lower() for c in chain]
    if any(n.startswith("optimizer.") for n in names):
        return "optimizer"
    if any("attention" in n for n in names):
        return "attention"
    if any(vocab in shape for c in chain for shape in (c.input_shapes or []) if isinstance(shape, list)):
        return "output head"
    if event.name in MATMUL_OPS:
        return "matmuls of the layers"  # a 4-bit layer's too, once its weights are dequantized
    if any("bitsandbytes" in n or "dequantize" in n for n in names):
        return "4-bit dequantization"
    return "the rest"


def take_apart(quantization: str, batch_size: int, max_length: int) -> dict:
    """One training step of the variant on a fixed batch: median seconds of 3 steps, its FLOPs, the profile."""
    import statistics
    import time

    import datasets
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode
    from trl import SFTConfig, SFTTrainer

    from synthempathy.chain.config import load_config
    from synthempathy.lib import sft
    from synthempathy.lib.dialogue import prompts
    from synthempathy.lib.ed import load_ed

    cfg = load_config("tiny", {"quantization": quantization})
    items = [r.to_dict() for r in load_ed("packaged:seed", "train")]
    model, tok, _ = sft.load_base_for_training(cfg.base_model, "cpu", quantization)
    with tempfile.TemporaryDirectory() as out:
        trainer = sft.counting_trainer(SFTTrainer)(
            model=model, processing_class=tok, peft_config=sft.lora_config(cfg),
            train_dataset=datasets.Dataset.from_list(sft.sft_rows(items, prompts()["system"])),
            args=SFTConfig(output_dir=out, per_device_train_batch_size=batch_size, max_length=max_length,
                           use_cpu=True, bf16=False, report_to="none", seed=cfg.seed, learning_rate=cfg.learning_rate))
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        optimizer = trainer.create_optimizer()
        labelled = int((batch["labels"][:, 1:] != -100).sum())

        def step():
            trainer.model.train()
            trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=labelled).backward()
            optimizer.step()
            optimizer.zero_grad()

        step()  # warm: first-call allocations and, in 4 bits, the weights' first unpacking
        seconds = []
        for _ in range(3):
            t = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - t)
        with FlopCounterMode(display=False) as flops:
            step()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
    vocab = model.get_output_embeddings().weight.shape[0]
    parts: dict[str, float] = {}
    for e in prof.events():
        parts[category(e, vocab)] = parts.get(category(e, vocab), 0.0) + e.self_cpu_time_total / 1e6
    total = sum(parts.values())
    return {"step_s": statistics.median(seconds), "tokens": int(batch["attention_mask"].sum()), "labelled": labelled,
            "gflop": flops.get_total_flops() / 1e9,
            "parts": {k: round(v / total, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}}


def child(payload: dict) -> dict:
    import resource

    from synthempathy.chain.config import load_config
    from synthempathy.lib import sft, trainer
    from synthempathy.lib.ed import load_ed

    if payload["step"] == "before":  # trl's fused head, every position scored
        trainer.plain_head_on_cpu = lambda model: False
    if payload["step"] in ("before", "head"):  # torch's bernoulli_ draws LoRA's dropout masks; trl's bf16 adapters
        trainer.swap_lora_dropout = lambda model: 0
        trainer.adapters_in_fp32 = lambda model: 0
    if payload["step"] == "padded":  # position ids given: the loss keeps the padded batch (cpu_step.loss_on_labels)
        trainer.loss_on_labels = functools.partial(padded_loss, trainer.loss_on_labels)
    cfg = load_config("tiny", {"quantization": payload["q"], "max_steps": payload["steps"],
                               "train_batch_size": payload["batch"], "max_length": payload["max_length"]})
    items = [r.to_dict() for r in load_ed("packaged:seed", "train")]
    rec = sft.train_lora(cfg, items, payload["out"] + "/adapter", payload["out"] + "/work", name=payload["q"])
    rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec["step"] = take_apart(payload["q"], payload["batch"], payload["max_length"])
    return rec


def padded_loss(loss, model, inputs: dict, num_items_in_batch=None):
    positions = inputs["attention_mask"].long().cumsum(-1).sub(1).clamp(min=0)  # a right-padded batch's own positions
    return loss(model, {**inputs, "position_ids": positions}, num_items_in_batch)


def child_env(args) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **(AVX2_ONLY if args.avx2 else {})}


def run(variant: str, args) -> dict:
    q, step = variant.split(":")
    with tempfile.TemporaryDirectory() as out:
        payload = json.dumps({"q": q, "step": step, "steps": args.steps, "batch": args.batch,
                              "max_length": args.max_length, "out": out})
        proc = subprocess.run([sys.executable, __file__, "--child", payload], capture_output=True, text=True,
                              env=child_env(args))
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
        return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--avx2", action="store_true", help="hold the kernels to AVX2 (bench/machine.py)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))))
        return
    print(f"# CPU: {cpu_flags(child_env(args))}; load average at start {os.getloadavg()[0]:.2f}")
    if args.avx2:
        os.environ.update(AVX2_ONLY)  # read when torch loads, below: the roofline under the same limit
    peak = matmul_rate()
    print(f"# fp32 matmul rate of this CPU (torch.mm, best of 4 shapes): {peak:.0f} GFLOP/s")
    res = {v: run(v, args) for v in args.variants.split(",")}
    for v, r in res.items():
        s, (q, step) = r["step"], v.split(":")
        # FlopCounterMode does not see into bitsandbytes' 4-bit matmul: the same step's FLOPs are the plain model's
        plain = f"none:{step if step in ('before', 'padded') else 'after'}"
        gflop = res[plain]["step"]["gflop"] if q == "4bit" and plain in res else s["gflop"]
        rate = gflop / s["step_s"]
        print(f"finetune {v:>11}: {r['steps']} steps x {args.batch} examples, {r['train_tokens']} tokens in "
              f"{r['train_seconds']} s = {r['tokens_per_s']} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"final loss {r['final_loss']:.4f}")
        print(f"  one step ({s['tokens']} tokens, {s['labelled']} labelled): {s['step_s']:.2f} s, {gflop:.0f} GFLOP "
              f"= {rate:.1f} GFLOP/s, {100 * rate / peak:.0f}% of the matmul rate; time: "
              + ", ".join(f"{k} {100 * p:.0f}%" for k, p in s["parts"].items()))
    for q in ("none", "4bit"):
        for step, base in (("head", "before"), ("padded", "before"), ("after", "before"), ("after", "padded")):
            if f"{q}:{base}" in res and f"{q}:{step}" in res:
                print(f"finetune {q} {step}/{base}: "
                      f"{res[f'{q}:{step}']['tokens_per_s'] / res[f'{q}:{base}']['tokens_per_s']:.2f}x tokens/s")
    for step in ("before", "after"):
        a, b = res.get(f"4bit:{step}"), res.get(f"none:{step}")
        if a and b:
            print(f"finetune 4bit/none ({step}): speed {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
                  f"peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")

if __name__ == "__main__":
    main()
