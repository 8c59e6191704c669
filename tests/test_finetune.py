"""Stage 04: two arms on the seed corpus train, save, reload, resume after a kill, and skip when complete."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from synthempathy import data, finetune
from synthempathy.config import load_config
from synthempathy.lib import sft
from synthempathy.store import RunStore, write_jsonl

pytestmark = pytest.mark.slow

MICRO = {"max_steps": 6, "train_batch_size": 2, "max_length": 96, "quantization": "none", "train_eval_records": 8,
         "arms": ["ed", "synth_empathy"]}


def micro_run(tmp_path, name):
    """A run folder with stage 00 done and a few synthetic examples standing where stage 03 puts D_a."""
    overrides = {**MICRO, "run_root": str(tmp_path / name), "figures_dir": str(tmp_path / "fig")}
    cfg = load_config("tiny", overrides)
    store = RunStore(cfg.run_dir)
    data.run_stage(cfg, store)
    synthetic = [{"id": f"s{i}", "history": ["I finally finished my thesis today.", "That is huge!", "I feel empty now."],
                  "output": "That is common after a big push. Give yourself a few days of rest.", "k": 1} for i in range(6)]
    write_jsonl(store.path("03_diversity", "selected.jsonl"), synthetic)
    return cfg, store, overrides


RUN = """
import json, sys
from synthempathy import finetune
cfg, store = finetune.STAGE.open("tiny", json.loads(sys.argv[1]))
finetune.run_stage(cfg, store)
"""


def test_two_arms_train_resume_after_kill_and_skip_when_done(tmp_path):
    cfg, store, overrides = micro_run(tmp_path, "a")
    summary = finetune.run_stage(cfg, store)
    assert set(summary) == {"ed", "synth_empathy"}
    assert summary["synth_empathy"]["synthetic"] == 6 and summary["ed"]["synthetic"] == 0
    assert summary["synth_empathy"]["total"] == summary["ed"]["total"] + 6
    for arm in ("ed", "synth_empathy"):
        folder = store.path("04_finetune", arm)
        card = (folder / "README.md").read_text()
        assert "LoRA adapter" in card and f"| examples | {summary[arm]['total']} |" in card
        assert summary[arm]["steps"] == 6 and summary[arm]["final_eval_loss"] is not None

    # same seed, a run killed mid-training, then resumed: the same adapters as the uninterrupted run
    cfg_b, store_b, overrides_b = micro_run(tmp_path, "b")
    proc = subprocess.Popen([sys.executable, "-c", RUN, json.dumps(overrides_b)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    work = store_b.root / "04_finetune" / "_work" / "ed"
    deadline = time.time() + 240
    # wait for a *complete* checkpoint: a folder appears before its trainer_state.json is written
    while time.time() < deadline and sft.last_checkpoint(work) is None and proc.poll() is None:
        time.sleep(0.2)
    assert sft.last_checkpoint(work), "no complete checkpoint appeared before the deadline"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not sft.is_completed(store_b.path("04_finetune", "ed"))
    resumed = finetune.run_stage(cfg_b, store_b)
    record = json.loads((store_b.path("04_finetune", "ed") / "completed.json").read_text())
    assert record["resumed"] is True
    for arm in ("ed", "synth_empathy"):
        assert resumed[arm]["final_loss"] == pytest.approx(summary[arm]["final_loss"], rel=1e-4)
    assert not work.exists(), "checkpoints are cleaned once the arm is complete"

    # a completed arm is skipped: nothing retrains, the adapter file is untouched
    adapter = store.path("04_finetune", "ed") / "adapter_model.safetensors"
    mtime = adapter.stat().st_mtime_ns
    t0 = time.time()
    again = finetune.run_stage(cfg, store)
    assert time.time() - t0 < 20 and adapter.stat().st_mtime_ns == mtime
    assert again["ed"]["final_loss"] == summary["ed"]["final_loss"]
