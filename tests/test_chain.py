"""The whole chain through the runner, headless, on a shrunk tiny profile.

One reference run (conftest.py), with the network refused to every process of it (the notebooks' kernels included), is
compared against: 00 and 03 rerun with the same seed (every data output byte-identical), and runs killed with
SIGKILL at a random point inside notebooks 01, 02 and 04, then rerun (the killed stage's data outputs, computed
from nothing, byte-identical; after 04, the same results.json).
"""

import contextlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from authors_fixture import released_file
from chain import COMPARED, no_network, overrides_for

from synthempathy import plots
from synthempathy.chain import runner
from synthempathy.chain.store import STAGES, read_jsonl
from synthempathy.lib import sft
from synthempathy.lib.ed import load_ed

pytestmark = pytest.mark.slow

def test_the_offline_guard_reaches_child_processes(tmp_path):
    log = tmp_path / "network.log"
    probe = ("import socket\n"
             "server = socket.create_server(('127.0.0.1', 0))\n"
             "socket.create_connection(server.getsockname(), timeout=5).close()  # loopback stays open\n"
             "for target in (lambda: socket.create_connection(('192.0.2.1', 80), timeout=5),\n"
             "               lambda: socket.getaddrinfo('huggingface.co', 443)):\n"
             "    try:\n        target()\n    except OSError as e:\n        print(e)\n")
    with no_network(log):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.count("offline guard: network access refused") == 2, out
    assert "192.0.2.1" in log.read_text() and "huggingface.co" in log.read_text()


def test_whole_chain_runs_offline_then_is_up_to_date(reference, tmp_path):
    overrides, store, lines, log = reference
    assert [ln.split(":")[0] for ln in lines if ": done in" in ln] == [f"[{i}/6] {s}" for i, s in enumerate(STAGES, 1)]
    assert not log.exists(), f"the chain tried to reach the network:\n{log.read_text()}"
    results = json.loads(store.path("05_evaluate", "results.json").read_text())
    assert set(results["arms"]) == {"base", "ed", "synth_empathy", "ed_plus_random"}
    for arm in results["arms"].values():
        for key, (point, low, high) in arm["figures"].items():
            assert low <= point + 1e-9 and point <= high + 1e-9, key
    d_a = read_jsonl(store.path("03_diversity", "selected.jsonl"))
    for arm in ("synth_empathy", "ed_plus_random"):
        assert results["arms"][arm]["synthetic_examples"] == len(d_a) > 0
        # every seed was trained and its consumption counted (3 steps of 2 examples here)
        assert sorted(results["arms"][arm]["consumed"]) == ["0", "1"]
        assert all(sum(c.values()) == 6 for c in results["arms"][arm]["consumed"].values())
    assert set(results["comparisons"]) == {"synth_empathy - ed", "synth_empathy - ed_plus_random"}
    for diff in results["comparisons"].values():
        assert all(d["detectable"] >= 0 and d["low"] <= d["high"] for d in diff.values())
    assert set(results["ab"]) == {"synth_empathy vs ed", "synth_empathy vs ed_plus_random"}
    for ab in results["ab"].values():
        for c in ("naturalness", "coherence", "empathy"):
            assert ab[c]["pairs"] == 4 * 2 and abs(ab[c]["win"][0] + ab[c]["tie"][0] + ab[c]["lose"][0] - 1) < 1e-3
    # while the stages ran, their own bars reached the runner's display, the trainer's steps included
    shown = (Path(overrides["run_root"]).parent / "progress.log").read_text()
    assert "\r" not in shown and re.search(r"04_finetune · cell \d+/\d+ · steps: \d+/\d+", shown), shown[-2000:]
    assert re.search(r"01_generate · cell \d+/\d+ · \w[^:]*: \d+/\d+", shown), shown[-2000:]
    # the report's landing page links every stage's page (the site itself is checked in tests/test_report.py)
    site = store.root / "report"
    linked = set(re.findall(r'href="(\d\d_\w+\.html)"', (site / "index.html").read_text()))
    assert linked == {f"{s}.html" for s in STAGES} and all((site / page).is_file() for page in linked)
    for seed in (0, 1):
        assert (store.root / "05_evaluate" / "predictions" / f"ed_plus_random.seed-{seed}.jsonl").exists()
    assert json.loads((store.root / "04_finetune" / "ed" / "seed-0" / "completed.json").read_text())["name"].startswith("discriminator")

    again = []
    runner.run("tiny", overrides, echo=again.append)
    assert [ln for ln in again if "skipped" in ln] == [f"[{i}/6] {s}: up to date, skipped" for i, s in enumerate(STAGES, 1)]

    # the quantity-quality sweep and the authors' released data (on a copy, seed 0 alone): adding a point trains
    # only its adapters, selected and random, adding the arm authors_data only its own; every adapter there
    # already is left untouched, and results.md sets their selection beside ours
    theirs = released_file(tmp_path / "mix.json", load_ed("packaged:seed", "train")[:3])
    mine = {**overrides_for(tmp_path), "sweep_thresholds": [20.0], "train_seeds": [0],
            "authors_selection": str(tmp_path / "mix.json"), "arms": ["ed", "synth_empathy", "ed_plus_random", "authors_data"]}
    shutil.copytree(store.root, Path(mine["run_root"]) / "tiny")
    trained = {m: m.stat().st_mtime_ns for m in (Path(mine["run_root"]) / "tiny").glob("04_finetune/*/seed-*/completed.json")}
    store = runner.run("tiny", mine, start="04", echo=lambda _: None)
    assert {m: m.stat().st_mtime_ns for m in trained} == trained
    assert sorted(m.parent.parent.name for m in store.root.glob("04_finetune/*/seed-*/completed.json")
                  if m not in trained) == ["authors_data", "sweep_T20", "sweep_T20_random"]
    results = json.loads(store.path("05_evaluate", "results.json").read_text())
    assert results["arms"]["authors_data"]["synthetic_examples"] == results["authors_data"]["synthetic"] == len(theirs)
    assert "## The authors' released data" in store.path("05_evaluate", "results.md").read_text()
    rows = json.loads(store.path("05_evaluate", "results.json").read_text())["sweep"]
    point = {r["kind"]: r for r in rows if r["value"] == 20.0}
    assert set(point) == {"selected", "random"} and point["selected"]["synthetic"] == point["random"]["synthetic"] > 0
    assert {r["name"] for r in rows if r["param"] == "profile"} == {"ed", "synth_empathy", "ed_plus_random"}
    assert all(r["figures"]["bleu1"][1] <= r["figures"]["bleu1"][0] <= r["figures"]["bleu1"][2] for r in rows)
    plots.sweep_tradeoff(rows, "test", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 5_000


def _data_outputs(root: Path, stage: str) -> dict:
    """{file: sha256} of what `stage` recorded in the manifest, adapter folders aside: a training resumed from a
    checkpoint ends with weights equal to the last bits only, and its cards carry timings and paths."""
    outputs = json.loads((root / "manifest.json").read_text())["stages"][stage]["outputs"]
    return {rel: h for rel, h in outputs.items() if not (root / stage / rel).parent.joinpath("adapter_config.json").exists()}


def test_same_seed_gives_byte_identical_selections_and_metrics(reference, tmp_path):
    # 00 and 03 again from nothing, with the reference's 01 and 02 in place: every data output byte-identical to
    # the reference run's, and 01 and 02 up to date on 00's new bytes. 01 and 02 are recomputed from nothing
    # (killed, then resumed) and compared byte for byte by the kill tests below; 04 and 05 by the stage-04 one.
    _, ref, _, _ = reference
    root = Path(overrides_for(tmp_path)["run_root"]) / "tiny"
    root.mkdir(parents=True)
    for stage in STAGES[1:3]:
        shutil.copytree(ref.root / stage, root / stage)
    manifest = json.loads((ref.root / "manifest.json").read_text())
    manifest["stages"] = {s: e for s, e in manifest["stages"].items() if s in STAGES[1:3]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    lines = []
    store = runner.run("tiny", overrides_for(tmp_path), stop="03", echo=lines.append)
    assert [ln for ln in lines if "skipped" in ln] == [f"[{i}/4] {s}: up to date, skipped" for i, s in enumerate(STAGES[:4], 1)
                                                        if s in STAGES[1:3]]
    for stage in STAGES[:4]:  # the selection of 03 among them
        assert _data_outputs(store.root, stage) == _data_outputs(ref.root, stage), stage


# Points inside a notebook where a crash is interesting: a file that appears, or grows, mid-stage. The test
# picks one at random and kills after a random extra delay; the stage must then still be unfinished.
def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


KILLED_ARM = "synth_empathy/seed-0"  # the adapter the stage-04 kill lands in
MILESTONES = {
    "01_generate": {"a generation batch is cached": lambda r: _lines(r / "01_generate/_work/generations.cache.jsonl") >= 1},
    "02_quality": {
        "a discriminator checkpoint is saved":
            lambda r: sft.last_checkpoint(r / "02_quality/_work/discriminator-checkpoints") is not None,
        "a batch of the discriminator's answers is cached":
            lambda r: _lines(r / "02_quality/_work/discriminator.cache.jsonl") >= 1,
        "a batch of judge scores is cached": lambda r: _lines(r / "02_quality/_work/judge.cache.jsonl") >= 1,
    },
    "04_finetune": {"a synth_empathy checkpoint is saved":
                    lambda r: sft.last_checkpoint(r / "04_finetune/_work" / KILLED_ARM) is not None},
}


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the runner and every process under it (the notebook's kernel), all at once, like a crash."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:  # the runner already ended
        family = []
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
    proc.wait(30)
    psutil.wait_procs(family, timeout=30)


def _reference_work_beside_the_killed_arm(ref: Path, root: Path) -> None:
    """The reference's other adapters and 05's caches, less the killed arm's answers, as a kill late in 04 would
    leave them: the rerun trains only the killed arm (resumed) and 05 answers only with it, so results.json
    still compares what the resumed adapter answers (the other adapters train as its first steps did)."""
    for marker in (ref / "04_finetune").glob("*/seed-*/completed.json"):
        if marker.parent.relative_to(ref / "04_finetune").as_posix() != KILLED_ARM:
            shutil.copytree(marker.parent, root / marker.parent.relative_to(ref))
    killed_cache = f"predictions.{KILLED_ARM.replace('/', '.')}.cache.jsonl"
    shutil.copytree(ref / "05_evaluate" / "_work", root / "05_evaluate" / "_work",
                    ignore=lambda _, names: [n for n in names if n in (killed_cache, "usage.jsonl")])


@pytest.mark.parametrize("stage", list(MILESTONES))
def test_killed_inside_a_notebook_then_rerun_gives_the_same_results(reference, tmp_path, stage):
    overrides, ref, _, _ = reference
    mine = overrides_for(tmp_path)
    root = Path(mine["run_root"]) / "tiny"
    # the stages before the killed one come from the reference run, so only the interesting part is rerun
    root.mkdir(parents=True)
    for earlier in STAGES[: STAGES.index(stage)]:
        shutil.copytree(ref.root / earlier, root / earlier)
    if stage == "04_finetune":
        _reference_work_beside_the_killed_arm(ref.root, root)
    manifest = json.loads((ref.root / "manifest.json").read_text())
    manifest["stages"] = {s: e for s, e in manifest["stages"].items() if STAGES.index(s) < STAGES.index(stage)}
    (root / "manifest.json").write_text(json.dumps(manifest))

    rng = random.Random()
    name, reached = rng.choice(sorted(MILESTONES[stage].items()))
    delay = rng.uniform(0.0, 1.5)
    print(f"kill inside {stage} after: {name}, then {delay:.2f} s")
    cmd = [sys.executable, "-m", "synthempathy", "run", "--profile", "tiny",
           *sum((["-p", f"{k}={json.dumps(v) if isinstance(v, list) else v}"] for k, v in mine.items()), [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not reached(root) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert reached(root), f"{name}: not reached (runner exit code {proc.poll()})"
        time.sleep(delay)
    finally:
        kill_tree(proc)
    recorded = json.loads((root / "manifest.json").read_text()).get("stages", {})
    assert stage not in recorded, f"the kill came after {stage} had finished"

    # 01 and 02 rerun up to the killed stage: every data output equals the uninterrupted run's, byte for byte.
    # 04's outputs are adapters (resumed weights agree to the last bits only), so after it the chain runs on
    # and the final results.json must equal the uninterrupted run's.
    lines = []
    to_the_end = stage == "04_finetune"
    store = runner.run("tiny", mine, stop=None if to_the_end else stage, echo=lines.append)
    assert any(f"] {stage}: done in" in ln for ln in lines), lines
    if to_the_end:
        for rel in COMPARED:
            assert (store.root / rel).read_bytes() == (ref.root / rel).read_bytes(), rel
    else:  # the selection of 02 among them; the earlier stages are the reference's own files
        assert _data_outputs(store.root, stage) == _data_outputs(ref.root, stage)
