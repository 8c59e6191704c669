"""One writer at a time per run folder (issues #14, #24): a second process is refused at once, naming the folder and
the process holding it; a lock left by a killed process is taken over; the notebook kernels a run starts write under
its lock; a notebook holds the folder only while one of its steps runs (Stage.step), never while it is merely open.

The other processes are real (`python -c`, torch-free: seeding is stubbed out); every wait is bounded.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from synthempathy.chain.store import LOCK_ENV, LOCK_FILE, RunLocked, RunStore

TIMEOUT = 60  # one child process, start to end (about 1 s on an idle machine)

# A process that takes the lock (mode "lock"), opens a stage as its notebook does (mode "open"), or opens it and
# runs a step of it (mode "step"); it reports {"held": ...} or {"locked": message} with the seconds it took, and
# with "stay" stays (in the step, for "step") until its stdin is closed.
CHILD = """
import json, sys, time
import synthempathy.lib.stage as stage
from synthempathy.chain.store import RunLocked, RunStore
stage.seed_everything = lambda seed: None  # no torch: the lock is what is tested
mode, arg = sys.argv[1], json.loads(sys.argv[2])
t0 = time.time()

def report_and_stay():
    print(json.dumps({"held": True, "seconds": time.time() - t0}), flush=True)
    if arg.get("stay"):
        sys.stdin.read()

try:
    if mode == "lock":
        held = RunStore(arg["run_dir"]).lock(arg["owner"])  # kept: collected, it would release
        held.__enter__()
    elif mode == "step":
        this = stage.Stage(arg["stage"])
        cfg, store = this.open("tiny", arg["overrides"])
        this.step(lambda store: report_and_stay())(store)
        sys.exit(0)
    else:
        stage.Stage(arg["stage"]).open("tiny", arg["overrides"])
except RunLocked as e:
    print(json.dumps({"locked": str(e), "seconds": time.time() - t0}), flush=True)
    sys.exit(3)
report_and_stay()
"""


def child_env(token: str | None = "inherit") -> dict:
    env = {**os.environ}
    if token != "inherit":
        env.pop(LOCK_ENV, None)
        if token is not None:
            env[LOCK_ENV] = token
    return env


def run_child(mode: str, arg: dict, token: str | None = "inherit") -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, json.dumps(arg)], env=child_env(token),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.stdout.strip(), f"child failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def holder():
    """start(mode, arg): a child process holding the lock (it reported so); stopped at the test's end."""
    procs = []

    def start(mode: str, arg: dict, token: str | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, json.dumps({**arg, "stay": True})],
                                env=child_env(token), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()  # the child reports once it holds (or fails): bounded by its own run
        assert line and json.loads(line).get("held"), f"holder did not take the lock: {line}{proc.stderr.read()}"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)


def lock_info(store: RunStore) -> dict:
    text = (store.root / LOCK_FILE).read_text()
    return json.loads(text) if text.strip() else {}


def stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(TIMEOUT) == 0, proc.stderr.read()


def test_a_second_process_is_refused_at_once_with_the_folder_the_pid_and_the_holder(tmp_path):
    store = RunStore(tmp_path / "tiny")
    with store.lock("synthempathy run --profile tiny"):
        info = lock_info(store)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["owner"] == "synthempathy run --profile tiny" and info["started"] and info["command"]
        assert os.environ[LOCK_ENV] == info["token"], "the token is passed on to child processes"
        # the child inherits the token, but a lock (a run) never borrows one: only a stage's kernel does
        code, out = run_child("lock", {"run_dir": str(store.root), "owner": "a second run"})
    assert code == 3 and out["seconds"] < 2, out
    message = out["locked"]
    for fragment in (str(store.root), f"pid {os.getpid()}", socket.gethostname(),
                     "synthempathy run --profile tiny", "One writer at a time", f"kill {os.getpid()}", "run_root="):
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_the_lock_is_released_when_its_block_exits(tmp_path):
    store = RunStore(tmp_path / "tiny")
    before = os.environ.get(LOCK_ENV)
    with store.lock("first"):
        pass
    assert (store.root / LOCK_FILE).read_text() == "", "a clean release leaves nothing that looks stale"
    assert os.environ.get(LOCK_ENV) == before, "the token is withdrawn with the lock"
    code, out = run_child("lock", {"run_dir": str(store.root), "owner": "second"})
    assert code == 0 and out["held"]
    with pytest.raises(ValueError), store.lock("raises inside"):
        raise ValueError("a failing run")
    assert (store.root / LOCK_FILE).read_text() == "", "released on an error too"


def test_one_process_may_take_its_own_lock_again(tmp_path):
    store = RunStore(tmp_path / "tiny")
    with store.lock("outer"):
        token = os.environ[LOCK_ENV]
        with store.lock("inner"):
            assert lock_info(store)["owner"] == "outer" and os.environ[LOCK_ENV] == token
        assert lock_info(store)["pid"] == os.getpid(), "still held after the inner block"
    assert lock_info(store) == {}


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder, caplog):
    store = RunStore(tmp_path / "tiny")
    proc = holder("lock", {"run_dir": str(store.root), "owner": "a run to be killed"})
    with pytest.raises(RunLocked, match=f"pid {proc.pid}"), store.lock("too early"):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(TIMEOUT)
    assert lock_info(store)["pid"] == proc.pid, "the killed run left its lock file behind"
    t0 = time.time()
    with caplog.at_level("WARNING"), store.lock("the next run"):
        assert time.time() - t0 < 2
        assert lock_info(store)["pid"] == os.getpid() and lock_info(store)["owner"] == "the next run"
    assert f"taking over the lock left by a run to be killed (pid {proc.pid}" in caplog.text


def test_a_stale_lock_naming_another_host_is_taken_over_once_its_flock_is_free(tmp_path, caplog):
    store = RunStore(tmp_path / "tiny")
    store.root.mkdir(parents=True)
    (store.root / LOCK_FILE).write_text(json.dumps({"pid": 4321, "host": "elsewhere", "owner": "a run",
                                                    "started": "2024-01-01T00:00:00+00:00", "token": "x"}))
    with caplog.at_level("WARNING"), store.lock("here"):
        assert lock_info(store)["host"] == socket.gethostname()
    assert "pid 4321 on elsewhere" in caplog.text


def test_a_step_in_a_kernel_started_by_the_run_writes_under_the_runs_lock(tmp_path, run_overrides):
    store = RunStore(tmp_path / "runs" / "tiny")
    arg = {"stage": "02_quality", "overrides": run_overrides}
    with store.lock("synthempathy run --profile tiny"):
        code, out = run_child("step", arg)  # inherits the run's token, as papermill's kernels do
        assert code == 0 and out["held"], out
        assert lock_info(store)["pid"] == os.getpid(), "the kernel took nothing: the run still holds it"
        code, out = run_child("step", arg, token="someone-elses-token")
        assert code == 3 and f"pid {os.getpid()}" in out["locked"], "a token that is not the holder's counts for nothing"


def test_a_step_is_refused_at_once_while_another_process_holds_the_folder(tmp_path, run_overrides, holder):
    store = RunStore(tmp_path / "runs" / "tiny")
    proc = holder("lock", {"run_dir": str(store.root), "owner": "synthempathy run --profile tiny"})
    code, out = run_child("open", {"stage": "02_quality", "overrides": run_overrides}, token=None)
    assert code == 0, "opening a stage takes nothing: a notebook opens beside a run"
    code, out = run_child("step", {"stage": "02_quality", "overrides": run_overrides}, token=None)
    assert code == 3 and out["seconds"] < 2, out
    assert str(store.root) in out["locked"] and f"pid {proc.pid}" in out["locked"]
    assert "synthempathy run --profile tiny" in out["locked"]
    stop(proc)


def test_an_open_notebook_holds_nothing_and_a_step_only_while_it_runs(tmp_path, run_overrides, holder, caplog):
    """Notebook 02 open in JupyterLab, then `make run` in a terminal: the run goes ahead; while one of the notebook's
    steps runs, the run is refused, naming the notebook's stage and step; once the step returns, the folder is free."""
    store = RunStore(tmp_path / "runs" / "tiny")
    opened = holder("open", {"stage": "02_quality", "overrides": run_overrides})
    with store.lock("synthempathy run --profile tiny"):
        pass
    stop(opened)
    proc = holder("step", {"stage": "02_quality", "overrides": run_overrides})
    with pytest.raises(RunLocked) as refused, store.lock("synthempathy run --profile tiny"):
        pass
    assert f"pid {proc.pid}" in str(refused.value) and "stage 02_quality (step <lambda>" in str(refused.value)
    stop(proc)  # the step returns
    assert lock_info(store) == {}, "released cleanly: nothing to take over"
    with caplog.at_level("WARNING"), store.lock("synthempathy run --profile tiny"):
        pass
    assert "taking over" not in caplog.text


def test_runner_run_on_a_folder_in_use_fails_fast_and_writes_nothing(tmp_path, run_overrides, holder, monkeypatch):
    from synthempathy.chain import runner

    def no_stage(*args, **kwargs):
        raise AssertionError("runner.run started a stage in a run folder another process holds")

    monkeypatch.setattr("papermill.execute_notebook", no_stage)
    store = RunStore(tmp_path / "runs" / "tiny")
    proc = holder("step", {"stage": "02_quality", "overrides": run_overrides})  # a step of notebook 02 running
    t0 = time.time()
    with pytest.raises(RunLocked) as refused:
        runner.run("tiny", run_overrides, start=0, stop=0, echo=lambda _: None)
    assert time.time() - t0 < 30
    assert str(store.root) in str(refused.value) and f"pid {proc.pid}" in str(refused.value)
    assert not store.manifest_path.exists(), "a refused run writes nothing"
    stop(proc)
