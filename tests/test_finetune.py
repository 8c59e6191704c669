"""Stage 04: three arms on the seed corpus train one pass over their own data, count what they consume, save,
reload, resume after a kill (counting on), skip when complete, and add a seed without retraining the first."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from synthempathy import data, finetune
from synthempathy.chain.config import load_config
from synthempathy.chain.store import RunStore, write_jsonl
from synthempathy.lib import sft

pytestmark = pytest.mark.slow

MICRO = {"max_seed_records": 10, "epochs": 1, "train_batch_size": 2, "max_length": 160, "quantization": "none",
         "train_eval_records": 8, "arms": ["ed", "synth_empathy", "ed_plus_random"], "sweep_thresholds": []}


def micro_run(tmp_path, name, **more):
    """A run folder with stage 00 done and a few synthetic examples standing where stage 03 puts D_a."""
    overrides = {**MICRO, "run_root": str(tmp_path / name), "figures_dir": str(tmp_path / "fig"), **more}
    cfg = load_config("tiny", overrides)
    store = RunStore(cfg.run_dir)
    data.run_stage(cfg, store)
    synthetic = [{"id": f"s{i}", "instruction": "", "emotion": "sad",
                  "history": ["I finally finished my thesis today.", "That is huge!", "I feel empty now."],
                  "output": "That is common after a big push. Give yourself a few days of rest.", "k": 1} for i in range(6)]
    write_jsonl(store.path("03_diversity", "selected.jsonl"), synthetic)
    others = [{**s, "id": f"p{i}", "output": f"I hear you. Take it slowly, one day at a time ({i})."} for i, s in enumerate(synthetic * 2)]
    write_jsonl(store.path("01_generate", "examples.jsonl"), synthetic + others)  # the random control's pool
    return cfg, store, overrides


RUN = """
import json, sys
from synthempathy import finetune
cfg, store = finetune.STAGE.open("tiny", json.loads(sys.argv[1]))
finetune.run_stage(cfg, store)
"""


def test_arms_see_all_their_data_resume_after_kill_and_skip_when_done(tmp_path):
    cfg, store, overrides = micro_run(tmp_path, "a")
    summary = finetune.run_stage(cfg, store)
    assert set(summary) == {"ed", "synth_empathy", "ed_plus_random"}
    assert summary["synth_empathy"]["synthetic"] == summary["ed_plus_random"]["synthetic"] == 6
    assert summary["ed"]["synthetic"] == 0 and summary["synth_empathy"]["total"] == summary["ed"]["total"] + 6
    for arm in summary:
        run = summary[arm]["seeds"]["0"]
        # one pass over the arm's own data: every synthetic example reached the loss once, counted batch by batch
        assert run["consumed"].get("synthetic", 0) == summary[arm]["synthetic"], (arm, run["consumed"])
        assert 0 < run["consumed"]["ed"] <= summary[arm]["ed"] and "unmatched" not in run["consumed"]
        assert run["steps"] * 2 >= sum(run["consumed"].values()) > (run["steps"] - 1) * 2
        card = (store.path("04_finetune", f"{arm}/seed-0") / "README.md").read_text()
        assert "LoRA adapter" in card and f"| examples | {summary[arm]['total']} |" in card
        assert run["final_eval_loss"] is not None
    # the control has as many examples (hence steps) as synth_empathy, drawn from the pool, not D_a itself
    assert summary["ed_plus_random"]["seeds"]["0"]["steps"] == summary["synth_empathy"]["seeds"]["0"]["steps"]
    drawn = [r.synthetic for r in finetune.plan(cfg, store) if r.name == "ed_plus_random"][0]
    assert len(drawn) == 6 and any(e["id"].startswith("p") for e in drawn)

    # same seed, a run of the first arm killed mid-training, then resumed: the same adapter and the same counts
    # as uninterrupted
    cfg_b, store_b, overrides_b = micro_run(tmp_path, "b", arms=["ed"])
    proc = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(overrides_b)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    work = store_b.root / "04_finetune" / "_work" / "ed" / "seed-0"
    deadline = time.time() + 240
    # wait for a *complete* checkpoint: a folder appears before its trainer_state.json is written
    while time.time() < deadline and sft.last_checkpoint(work) is None and proc.poll() is None:
        time.sleep(0.2)
    assert sft.last_checkpoint(work), "no complete checkpoint appeared before the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not sft.is_completed(store_b.path("04_finetune", "ed/seed-0"))
    resumed = finetune.run_stage(cfg_b, store_b)
    record = json.loads((store_b.path("04_finetune", "ed/seed-0") / "completed.json").read_text())
    assert record["resumed"] is True
    assert set(resumed) == {"ed"}
    assert resumed["ed"]["seeds"]["0"]["final_loss"] == pytest.approx(summary["ed"]["seeds"]["0"]["final_loss"], rel=1e-4)
    assert resumed["ed"]["seeds"]["0"]["consumed"] == summary["ed"]["seeds"]["0"]["consumed"]
    assert not work.exists(), "checkpoints are cleaned once the arm is complete"

    # a completed arm is skipped: nothing retrains, the adapter file is untouched; a new seed trains only its own
    adapter = store.path("04_finetune", "ed/seed-0") / "adapter_model.safetensors"
    mtime = adapter.stat().st_mtime_ns
    t0 = time.time()
    again = finetune.run_stage(cfg, store)
    assert time.time() - t0 < 20 and adapter.stat().st_mtime_ns == mtime
    assert again["ed"]["seeds"]["0"]["final_loss"] == summary["ed"]["seeds"]["0"]["final_loss"]
    two = load_config("tiny", {**overrides, "train_seeds": [0, 1], "arms": ["ed"]})
    both = finetune.run_stage(two, store)
    assert adapter.stat().st_mtime_ns == mtime and set(both["ed"]["seeds"]) == {"0", "1"}
    assert both["ed"]["seeds"]["1"]["final_loss"] != both["ed"]["seeds"]["0"]["final_loss"]


def test_a_4bit_model_keeps_its_gradients_after_an_evaluation_pass():
    # The trainer evaluates mid-training in eval mode without gradients; on a CPU with AVX512-BF16 bitsandbytes
    # then repacked the 4-bit weights for a kernel with no backward, and layer 0's LoRA gradient fell 470-fold.
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = load_config("tiny", {})
    model, tok, _ = sft.load_base_for_training(cfg.base_model, "cpu", "4bit")
    torch.manual_seed(0)  # init_lora_weights=False: both LoRA matrices random, so layer 0's gradient is not 0
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids = tok(["I lost my dog yesterday and I feel awful about it."], return_tensors="pt").input_ids
    first = next(p for n, p in model.named_parameters() if "layers.0." in n and "lora_A" in n)

    def gradient():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return first.grad.clone()

    before = gradient()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = gradient()
    assert before.norm() > 0 and torch.allclose(after, before, rtol=1e-4, atol=1e-7), (before.norm(), after.norm())


@pytest.mark.parametrize("quantization", ["4bit", "none"])
def test_the_loss_on_the_labelled_positions_is_trls(tmp_path, quantization):
    """The package's loss (the output head on the reply's tokens only, the batch packed into one row without padding;
    lib/cpu_step.py) equals trl's, which scores every position of the padded batch on a CPU: the same loss to 1e-5
    and the same LoRA gradients, on a fixed batch of seed dialogues.
    The adapters stay in fp32, the CPU's compute dtype, though trl makes a quantized model's adapters bf16."""
    import datasets
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from synthempathy.lib.dialogue import prompts
    from synthempathy.lib.ed import load_ed

    cfg = load_config("tiny", {})
    items = [r.to_dict() for r in load_ed("packaged:seed", "train")][:4]
    model, tok, _ = sft.load_base_for_training(cfg.base_model, "cpu", quantization)
    torch.manual_seed(0)  # init_lora_weights=False: both LoRA matrices random, so every gradient is non-zero
    trainer = sft.counting_trainer(SFTTrainer)(
        model=model, processing_class=tok, train_dataset=datasets.Dataset.from_list(sft.sft_rows(items, prompts()["system"])),
        args=SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=cfg.max_length,
                       use_cpu=True, bf16=False, report_to="none", seed=0),
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < labelled < batch["labels"].numel() // 2, "the history is masked: most positions carry no label"
    assert not batch["attention_mask"].all(), "a padded batch: the package's loss packs it into one row, trl's pads"
    lora = [p for n, p in trainer.model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora), {p.dtype for p in lora}

    def loss_and_grads(compute):
        trainer.model.train()
        trainer.model.zero_grad()
        loss = compute(trainer.model, dict(batch), num_items_in_batch=labelled)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in lora]

    ours, ours_grads = loss_and_grads(trainer.compute_loss)
    theirs, their_grads = loss_and_grads(super(type(trainer), trainer).compute_loss)
    assert abs(float(ours) - float(theirs)) <= 1e-5 * abs(float(theirs)), (float(ours), float(theirs))
    ours_all, their_all = torch.cat([g.flatten() for g in ours_grads]), torch.cat([g.flatten() for g in their_grads])
    # trl's head and ours sum in another order: they differ in the last bits of fp32 (seen: 5e-5)
    tolerance = 1e-3
    difference = float((ours_all - their_all).norm() / their_all.norm())
    assert difference < tolerance, f"relative difference of the LoRA gradients: {difference:.2e}"


def test_packed_attention_is_each_examples_own_causal_attention():
    """lib/cpu_step.py attends example by example on a packed row: what transformers' SDPA gives with the
    block-diagonal causal mask of the same row (grouped query heads as SmolLM2's: 9 query heads on 3)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from synthempathy.lib.cpu_step import packed_attention

    torch.manual_seed(0)
    lengths = [5, 9, 3]
    n = sum(lengths)
    q, k, v = torch.randn(1, 9, n, 8), torch.randn(1, 3, n, 8), torch.randn(1, 3, n, 8)
    example = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    causal = torch.arange(n)[:, None] >= torch.arange(n)[None, :]
    mask = (causal & (example[:, None] == example[None, :]))[None, None]
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.training = 3, True, False
    bounds = torch.tensor([0, 5, 14, 17])
    ours, _ = packed_attention(module, q, k, v, None, scaling=0.5, cu_seq_lens_q=bounds)
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.5)
    assert ours.shape == theirs.shape == (1, n, 9, 8)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_lora_dropout_from_numpy_is_inverted_dropout_seeded_by_torch():
    """lib/cpu_step.py's dropout: zeros with probability p, the rest scaled by 1/(1-p), nothing in eval mode, and
    the same masks after torch.manual_seed (what a resumed run restores)."""
    import torch

    from synthempathy.lib.cpu_step import numpy_dropout_class

    drop, x = numpy_dropout_class()(0.1), torch.ones(400, 1000)
    torch.manual_seed(3)
    first = drop(x)
    zeros = float((first == 0).float().mean())
    assert abs(zeros - 0.1) < 0.003, zeros  # 400,000 draws: 5 standard deviations is 0.0024
    assert torch.allclose(first[first != 0], torch.full_like(first[first != 0], 1 / 0.9))
    torch.manual_seed(3)
    assert torch.equal(drop(x), first), "the masks follow torch's seed"
    assert not torch.equal(drop(x), first), "and differ from call to call"
    drop.eval()
    assert drop(x) is x


def test_every_lora_dropout_of_the_model_is_swapped_on_the_cpu():
    import torch
    from peft import get_peft_model

    from synthempathy.lib.cpu_step import numpy_dropout_class, swap_lora_dropout

    cfg = load_config("tiny", {"quantization": "none"})
    model, _, _ = sft.load_base_for_training(cfg.base_model, "cpu", "none")
    model = get_peft_model(model, sft.lora_config(cfg))
    layers = model.config.num_hidden_layers
    assert swap_lora_dropout(model) == 7 * layers, "q, k, v, o, gate, up and down of every layer"
    drops = [d for m in model.modules() for d in getattr(m, "lora_dropout", {}).values()]
    assert all(type(d) is numpy_dropout_class() and d.p == cfg.lora_dropout for d in drops)
    assert not any(type(m) is torch.nn.Dropout and m.p > 0 for m in model.modules())
