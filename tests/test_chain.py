"""The whole chain through the runner, headless, on a shrunk tiny profile: every notebook executes, the
artifacts are there, the report is written, and a second run skips every stage as up to date."""

import json

import pytest

from synthempathy import evaluate, plots, runner
from synthempathy.config import load_config
from synthempathy.store import STAGES, read_jsonl

pytestmark = pytest.mark.slow

SHRUNK = {"gen_max_seeds": 10, "gen_max_new_tokens": 96, "gen_batch_size": 10, "threshold": 30.0,
          "disc_max_new_tokens": 32, "sanity_pairs": 4, "max_steps": 3, "train_batch_size": 2, "max_length": 128,
          "max_eval_records": 6, "eval_max_new_tokens": 16, "bootstrap_resamples": 50}


def test_whole_chain_runs_then_is_up_to_date(tmp_path, run_overrides):
    overrides = {**run_overrides, **SHRUNK}
    lines = []
    store = runner.run("tiny", overrides, echo=lines.append)
    assert [ln.split(":")[0] for ln in lines if ": done in" in ln] == [f"[{i}/6] {s}" for i, s in enumerate(STAGES, 1)]
    results = json.loads(store.path("05_evaluate", "results.json").read_text())
    assert set(results["arms"]) == {"base", "ed", "synth_empathy"}
    for arm in results["arms"].values():
        for key, (point, low, high) in arm["figures"].items():
            assert low <= point + 1e-9 and point <= high + 1e-9, key
    assert "synth_empathy_minus_ed" in results
    d_a = read_jsonl(store.path("03_diversity", "selected.jsonl"))
    assert results["arms"]["synth_empathy"]["synthetic_examples"] == len(d_a) > 0
    assert (store.root / "report" / "index.html").read_text().count(".html\">") == 6
    assert json.loads((store.root / "04_finetune" / "ed" / "completed.json").read_text())["name"].startswith("discriminator")

    lines.clear()
    runner.run("tiny", overrides, echo=lines.append)
    assert [ln for ln in lines if "skipped" in ln] == [f"[{i}/6] {s}: up to date, skipped" for i, s in enumerate(STAGES, 1)]

    # the quantity-quality sweep reuses the run's artifacts: one threshold and one K-center ratio
    cfg = load_config("tiny", {**overrides, "sweep_thresholds": [30.0], "sweep_ratios": [0.5]})
    rows = evaluate.sweep(cfg, store, progress=False)
    assert [(r["param"], r["value"]) for r in rows] == [("threshold", 30.0), ("kcenter_ratio", 0.5)]
    assert rows[0]["synthetic"] == len(d_a) and rows[1]["synthetic"] == max(1, round(0.5 * len(read_jsonl(
        store.path("02_quality", "selected.jsonl")))))
    n_ed = len(read_jsonl(store.path("00_data", "train.jsonl")))
    assert all(0 <= r["bleu1"] <= 100 and r["train_examples"] == r["synthetic"] + n_ed for r in rows)
    assert json.loads(store.path("05_evaluate", "sweep.json").read_text()) == rows
    plots.sweep_tradeoff(rows, "test", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 5_000
