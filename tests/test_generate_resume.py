"""Stage 01 survives a kill: the real stage with the packaged SmolLM2 on the seed corpus, tiny settings shrunk.

A run killed with SIGKILL after some batches and then rerun must redo only the missing batches, leave no
duplicate rows in its cache, and end with artifacts byte-identical to an uninterrupted run. A torn last cache
line (the process died mid-write) is reported, dropped and regenerated.

The stage runs in a subprocess (so it can be killed); every wait is bounded.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthempathy import data, generate
from synthempathy.chain.config import load_config
from synthempathy.chain.store import RunStore, read_jsonl

pytestmark = pytest.mark.slow

SHRUNK = {"gen_max_seeds": 6, "gen_batch_size": 2, "gen_max_new_tokens": 64}
N = SHRUNK["gen_max_seeds"]
RUN_TIMEOUT = 300  # one subprocess run of stage 01 (about 15-25 s on an idle 2-core machine)
CACHE = ("01_generate", "_work", "generations.cache.jsonl")

# What notebook 01 does: open the stage (config, seeds, logging), run it, report the summary on stdout.
STAGE_CODE = """
import json, sys
from synthempathy import generate
cfg, store = generate.STAGE.open("tiny", json.loads(sys.argv[1]))
summary = generate.run_stage(cfg, store, progress=False)
print("SUMMARY " + json.dumps(summary), flush=True)
"""


def overrides_for(root: Path) -> dict:
    return {"run_root": str(root / "runs"), "figures_dir": str(root / "figures"), **SHRUNK}


def prepared_run(root: Path) -> tuple[dict, RunStore]:
    """A run folder with stage 00 done."""
    overrides = overrides_for(root)
    cfg = load_config("tiny", overrides)
    store = RunStore(cfg.run_dir)
    data.run_stage(cfg, store)
    return overrides, store


def start(overrides: dict, log_dir: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_dir / f"{name}.out", "w") as out, open(log_dir / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-c", STAGE_CODE, json.dumps(overrides)], env=env,
                                stdout=out, stderr=err)


def finish(proc: subprocess.Popen, log_dir: Path, name: str) -> tuple[dict, str]:
    """Wait (bounded) for a run; its summary and its stderr (the log)."""
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"stage 01 run {name} did not finish within {RUN_TIMEOUT} s")
    out, err = (log_dir / f"{name}.out").read_text(), (log_dir / f"{name}.err").read_text()
    assert proc.returncode == 0, f"run {name} failed (exit {proc.returncode}):\n{err[-3000:]}"
    summary = next(json.loads(line[8:]) for line in out.splitlines() if line.startswith("SUMMARY "))
    return summary, err


def run_stage(overrides: dict, log_dir: Path, name: str) -> tuple[dict, str]:
    return finish(start(overrides, log_dir, name), log_dir, name)


def complete_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.endswith("\n")]


def request_keys(store: RunStore, overrides: dict) -> list[str]:
    cfg = load_config("tiny", overrides)
    seeds = read_jsonl(store.require("00_data", "train.jsonl"))[: cfg.gen_max_seeds]
    return [r.key for *_, r in generate.generation_requests(seeds, cfg)]


def outputs(store: RunStore) -> dict[str, bytes]:
    return {name: store.path("01_generate", name).read_bytes() for name in ("generations.jsonl", "examples.jsonl")}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """The uninterrupted reference run."""
    root = tmp_path_factory.mktemp("run_a")
    overrides, store = prepared_run(root)
    summary, _ = run_stage(overrides, root, "a")
    assert summary["throughput"]["generated"] == N == summary["generations"]
    gens = read_jsonl(store.path("01_generate", "generations.jsonl"))
    assert len(gens) == N and all(g["raw"].startswith("Round 1:\nContext:") for g in gens)
    assert sum(bool(g["rounds"]) for g in gens) >= 1, "no output parsed at all: the comparison would be vacuous"
    return store, outputs(store)


def test_killed_run_resumes_to_the_same_artifacts(run_a, tmp_path):
    store_a, expected = run_a
    overrides, store = prepared_run(tmp_path)
    cache = store.root.joinpath(*CACHE[:-1]) / CACHE[-1]
    keys = request_keys(store, overrides)
    assert len(keys) == N

    proc = start(overrides, tmp_path, "b1")
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while True:
            n = len(complete_lines(cache))
            if 1 <= n < N:
                break
            assert proc.poll() is None, (
                f"run b1 ended (exit {proc.returncode}) before it could be killed with {n} of {N} rows cached:\n"
                + (tmp_path / "b1.err").read_text()[-3000:])
            assert time.monotonic() < deadline, f"no finished batch in {cache} within {RUN_TIMEOUT} s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    cached_at_kill = len(complete_lines(cache))
    assert 1 <= cached_at_kill < N, f"{cached_at_kill} of {N} rows cached when killed"
    examples = store.path("01_generate", "examples.jsonl")
    assert not examples.exists() or examples.read_bytes() != expected["examples.jsonl"], \
        "the killed run must not have finished its artifacts"

    summary, _ = run_stage(overrides, tmp_path, "b2")

    assert summary["throughput"]["generated"] == N - cached_at_kill, "only the unfinished batches are redone"
    rows = [json.loads(line) for line in complete_lines(cache)]
    assert cache.read_text(encoding="utf-8").endswith("\n")
    row_keys = [r["key"] for r in rows]
    assert len(row_keys) == len(set(row_keys)), "duplicate keys in the cache"
    assert set(row_keys) == set(keys), "every request is in the cache, and nothing else"
    cache_a = store_a.root.joinpath(*CACHE)
    assert sorted(complete_lines(cache)) == sorted(complete_lines(cache_a))
    assert outputs(store) == expected, "a resumed run ends with exactly the artifacts of an uninterrupted one"


def test_torn_last_cache_line_is_dropped_and_regenerated(run_a, tmp_path):
    store_a, expected = run_a
    root = tmp_path / "torn"
    shutil.copytree(store_a.root.parent.parent, root)  # .../run_a<N>/ holds runs/tiny/...
    overrides = overrides_for(root)
    store = RunStore(load_config("tiny", overrides).run_dir)
    cache = store.root.joinpath(*CACHE)
    lines = complete_lines(cache)
    assert len(lines) == N
    torn_key = json.loads(lines[-1])["key"]
    # The process died while appending the last batch's row, before the stage wrote its artifacts.
    cache.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
    for name in ("generations.jsonl", "examples.jsonl", "summary.json"):
        store.path("01_generate", name).unlink()

    summary, log = run_stage(overrides, tmp_path, "torn")

    assert "dropped 1 unreadable line(s) [6]" in log and "generations.cache.jsonl" in log, log[-3000:]
    generated = summary["throughput"]["generated"]
    assert 1 <= generated <= SHRUNK["gen_batch_size"], "only the batch holding the torn item is redone"
    after = complete_lines(cache)
    assert after[:-1] == lines[:-1], "the intact rows are kept as they were"
    assert json.loads(after[-1])["key"] == torn_key and after[-1] == lines[-1], \
        "the torn item is regenerated, identical to the uninterrupted run's"
    assert len(after) == N
    assert outputs(store) == expected
