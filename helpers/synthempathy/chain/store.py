"""The artifact store: every file a stage produces lives under runs/<profile>/<NN_stage>/.

Stages talk to each other only through these files. Writes are atomic (temp file + rename), so a crash
never leaves half a file where a finished one is expected. Resumable work (caches, checkpoints) goes to
<stage>/_work/, which the fingerprint of a stage's outputs ignores. `manifest.json` records the config,
package versions, per-stage fingerprints, outputs and timings. One process at a time writes a run folder: the
runner holds `<run>/.lock` for its whole run, a notebook only while one of its steps writes (RunStore.lock).

(Over 300 lines on purpose: it is the one place where a run's files are written, read, hashed and cached, so
that no other module opens a run file its own way; and where a run folder is locked for one process.)
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked (RunStore.lock says so)
    fcntl = None

# The chain's stages, numbered as their notebooks and run folders are, each beside the stage of the paper it runs
# (../shared/PAPER.md, "Pipeline"). The one list of stages: everything else reads it from here.
PAPER_STAGES = {
    "00_data": "the seed data: EmpatheticDialogues",
    "01_generate": "paper stages 1-2: generation and turn sampling",
    "02_quality": "paper stage 3: quality selection (M_D, S >= T) and the LLM judge",
    "03_diversity": "paper stage 4: diversity selection (K-Center-Greedy)",
    "04_finetune": "paper stage 5: fine-tuning the arms",
    "05_evaluate": "paper stage 6: evaluation",
}
STAGES = tuple(PAPER_STAGES)
WORK = "_work"
TRACKED_PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "sentence-transformers",
                    "datasets", "umap-learn", "nltk", "rouge-score", "papermill", "numpy")


# -- atomic writes ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def write_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# The fields a later stage reads from each JSON-lines artifact (one place; RunStore.read checks them).
_EXAMPLE = ("id", "instruction", "history", "output", "k", "emotion")
ARTIFACT_FIELDS = {
    ("00_data", "train.jsonl"): ("id", "emotion", "history", "response"),
    ("00_data", "eval.jsonl"): ("id", "emotion", "history", "response"),
    ("01_generate", "examples.jsonl"): _EXAMPLE,
    ("02_quality", "scored.jsonl"): (*_EXAMPLE, "discriminator", "similarity"),
    ("02_quality", "selected.jsonl"): (*_EXAMPLE, "discriminator", "similarity"),
    ("03_diversity", "selected.jsonl"): ("id", "history", "output"),  # what the training arms read
}


log = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """A file that a stage wrote (or should have written) is corrupt, edited badly, or of the wrong shape."""


class JsonlLineError(ValueError):
    """A line of a JSON-lines file that cannot be read; the message names the file and the line."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}: line {line}: {problem}")


def jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSON-lines file: the one reader of the package.

    Blank lines are skipped but counted, so the numbers are an editor's. A line that is not UTF-8 or not JSON
    raises JsonlLineError; callers that know what the file is add what to do about it.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JsonlLineError(path, n, f"not UTF-8 text (byte {raw[e.start]:#x} at column {e.start + 1}); "
                                              "re-save the file as UTF-8") from None
            if not text.strip():
                continue
            try:
                yield n, json.loads(text)
            except json.JSONDecodeError as e:
                raise JsonlLineError(path, n, f"not valid JSON ({e.msg} at column {e.colno}; a truncated line?)") from None


def read_jsonl(path: str | os.PathLike, require: Sequence[str] = ()) -> list[dict]:
    """A finished artifact: every line must parse and carry the `require`d fields; errors name file, line, field."""
    rows = []
    try:
        for n, row in jsonl_lines(path):
            missing = [k for k in require if not isinstance(row, dict) or k not in row]
            if missing:
                raise ArtifactError(f"{path}: line {n}: field '{missing[0]}' is missing (a record needs "
                                    f"{', '.join(require)}); delete the file and rerun its stage")
            rows.append(row)
    except JsonlLineError as e:
        raise ArtifactError(f"{e}; the artifact is corrupt, delete it and rerun its stage") from None
    return rows


# -- fingerprints ---------------------------------------------------------------------------------------------

def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_obj(obj: Any) -> str:
    return hash_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def hash_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_tree(folder: str | os.PathLike, skip: tuple[str, ...] = (WORK,)) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`, except under the `skip` subfolders."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.parts[0] not in skip and not p.name.startswith("."):
            out[rel.as_posix()] = hash_file(p)
    return out


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


# -- one run at a time per run folder ---------------------------------------------------------------------------
#
# <run>/.lock is held with flock() by the process writing the folder, and says who that is (JSON) for the error
# a second process gets. The kernel drops a flock when its process dies, even by SIGKILL, so a lock left by a
# killed run is free and is taken over, without guessing from PIDs (they are reused, and another host's cannot
# be checked). A clean release empties the file; a holder in it with the flock free was a dead process. The file
# is never deleted: a deleted lock file would let two processes lock two different files.

LOCK_FILE = ".lock"
LOCK_ENV = "SYNTHEMPATHY_RUN_LOCK"  # a run's token, inherited by the notebook kernels it starts


class RunLocked(RuntimeError):
    """The run folder is in use by another process: a `run`, or a notebook's kernel."""


class _Hold:
    """This process's hold on one lock file: re-entrant (count); only the process that took it releases it."""

    def __init__(self, key: str, fd: int):
        self.key, self.fd, self.token, self.pid = key, fd, uuid.uuid4().hex, os.getpid()
        self.count = 1


_HELD: dict[str, _Hold] = {}  # resolved lock file -> hold


def _holder(fd: int) -> dict:
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _locked_message(lock: Path, info: dict) -> str:
    folder = lock.parent
    if not info.get("pid"):
        return (f"run folder {folder} is in use by another process (it holds {lock}; `fuser -v {lock}` names "
                "it). One run at a time per run folder: wait for it to finish, or stop it.")
    pid, host, since = info["pid"], info.get("host", "?"), info.get("started", "?")
    here = host == socket.gethostname()
    with contextlib.suppress(ValueError, TypeError):
        since += f", {max(1, round((time.time() - datetime.fromisoformat(since).timestamp()) / 60))} min ago"
    exited = (f" Process {pid} has exited, but a process it started still holds the lock "
              f"(`fuser -v {lock}` names it).") if here and not _alive(pid) else ""
    return (f"run folder {folder} is in use by {info.get('owner', '?')}: pid {pid} on host {host}, started "
            f"{since} (command: {info.get('command', '?')}).{exited} One writer at a time per run folder: wait for "
            "it to finish, or stop it (Ctrl-C in its terminal; for a notebook, Kernel > Interrupt Kernel in "
            f"JupyterLab; or `kill {pid}`{'' if here else ' on ' + host}), or give this run another folder "
            "(-p run_root=DIR).")


def _command_line() -> str:
    try:
        words = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        words = [sys.executable, *sys.argv]
    line = " ".join(" ".join(words).split())  # one line, even for `python -c "<a script>"`
    return line if len(line) <= 200 else line[:199] + "…"


def _acquire(root: Path, owner: str, inherit: bool) -> _Hold | None:
    """Take <root>/.lock or raise RunLocked. None: not held by this process (see RunStore.lock), or no flock."""
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_FILE
    key = str(lock.resolve())
    if (hold := _HELD.get(key)) and hold.pid == os.getpid():
        hold.count += 1
        return hold
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only run folder: nothing can be written to it anyway
        log.warning("cannot lock run folder %s (%s): a second run on it will not be stopped", root, e)
        return None
    try:
        if fcntl is None:
            raise OSError("no fcntl on this system")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _holder(fd)
        if not info:  # taken an instant ago: its holder writes who it is just after locking
            time.sleep(0.2)
            info = _holder(fd)
        os.close(fd)
        if inherit and info.get("token") and info.get("token") == os.environ.get(LOCK_ENV):
            return None  # held by the run that started this process (a notebook kernel of `run`)
        raise RunLocked(_locked_message(lock, info)) from None
    except OSError as e:  # file locks unsupported here (some network filesystems)
        os.close(fd)
        log.warning("cannot lock run folder %s (%s): a second run on it will not be stopped", root, e)
        return None
    if (stale := _holder(fd)).get("pid"):
        log.warning("run folder %s: taking over the lock left by %s (pid %s on %s, started %s), which is no "
                    "longer running", root, stale.get("owner", "?"), stale["pid"], stale.get("host", "?"),
                    stale.get("started", "?"))
    hold = _HELD[key] = _Hold(key, fd)
    info = {"pid": hold.pid, "host": socket.gethostname(), "owner": owner, "command": _command_line(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"), "token": hold.token}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info, ensure_ascii=False) + "\n").encode(), 0)
    return hold


def _release(hold: _Hold | None, everything: bool = False) -> None:
    if hold is None or hold.pid != os.getpid():  # a forked child must not unlock its parent
        return
    hold.count = 0 if everything else hold.count - 1
    if hold.count > 0:
        return
    _HELD.pop(hold.key, None)
    with contextlib.suppress(OSError):
        os.ftruncate(hold.fd, 0)  # released cleanly: nothing left to report as stale
        fcntl.flock(hold.fd, fcntl.LOCK_UN)
    os.close(hold.fd)


@atexit.register
def _release_all() -> None:
    for hold in list(_HELD.values()):
        _release(hold, everything=True)


# -- the run folder -------------------------------------------------------------------------------------------

class RunStore:
    """runs/<profile>/: one folder per stage plus manifest.json."""

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def work_dir(self, stage: str) -> Path:
        d = self.stage_dir(stage) / WORK
        d.mkdir(exist_ok=True)
        return d

    @property
    def cache_dir(self) -> Path:
        """Caches shared by the stages of one run (embeddings); not part of any stage's outputs."""
        d = self.root / "cache"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, stage: str, name: str) -> Path:
        return self.stage_dir(stage) / name

    def read(self, stage: str, name: str) -> list[dict]:
        """The records of an earlier stage's JSON-lines output, checked against ARTIFACT_FIELDS."""
        return read_jsonl(self.require(stage, name), ARTIFACT_FIELDS.get((stage, name), ()))

    def require(self, stage: str, name: str) -> Path:
        """An input produced by an earlier stage; a clear error when that stage has not run."""
        p = self.root / stage / name
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: run stage {stage} first "
                                    f"(python -m synthempathy run --profile {self.root.name} --to {stage[:2]})")
        return p

    # one process at a time (the section above)
    @contextlib.contextmanager
    def lock(self, owner: str, inherit: bool = False) -> Iterator[None]:
        """Hold the run folder for the block, or raise RunLocked at once, naming who holds it.

        `owner` says what this process is (shown to the one refused). Re-entrant within a process. While held,
        LOCK_ENV carries the lock's token to child processes. With `inherit` (a notebook's step), nothing is taken
        when the run that started this process holds the folder: a run's kernels write under its lock. A lock
        left by a dead process is taken over, with a warning.
        """
        hold = _acquire(self.root, owner, inherit=inherit)
        previous = os.environ.get(LOCK_ENV)
        if hold is not None:
            os.environ[LOCK_ENV] = hold.token
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = previous
            _release(hold)

    # manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        if self.manifest_path.exists():
            try:
                return read_json(self.manifest_path)
            except json.JSONDecodeError:
                return {}  # a torn manifest only costs a rerun of the stages
        return {}

    def update_manifest(self, **fields: Any) -> dict:
        m = self.manifest()
        m.update(fields)
        write_json(self.manifest_path, m)
        return m

    def record_stage(self, stage: str, fingerprint: str, seconds: float) -> None:
        m = self.manifest()
        stages = m.setdefault("stages", {})
        stages[stage] = {
            "fingerprint": fingerprint,
            "outputs": hash_tree(self.stage_dir(stage)),
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "usage": self.stage_usage(stage),
        }
        write_json(self.manifest_path, m)

    def usage_path(self, stage: str) -> Path:
        """Where a stage's backends append the requests and tokens they spend (lib/backends.py, Usage)."""
        return self.work_dir(stage) / "usage.jsonl"

    def stage_usage(self, stage: str) -> dict:
        """{"requests", "prompt_tokens", "completion_tokens", "by_model": {model: the same}} a stage's model calls
        actually spent, over all its runs in this folder (cache hits spend nothing; a torn last line is skipped)."""
        fields = ("requests", "prompt_tokens", "completion_tokens")
        total, by_model = dict.fromkeys(fields, 0), {}
        path = self.root / stage / WORK / "usage.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            try:
                row = json.loads(line)
                name, counts = str(row["model"]), {k: int(row[k]) for k in fields}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            model = by_model.setdefault(name, dict.fromkeys(fields, 0))
            for k, v in counts.items():
                model[k] += v
                total[k] += v
        return {**total, "by_model": by_model}

    def stage_outputs(self, stage: str) -> dict[str, str]:
        return self.manifest().get("stages", {}).get(stage, {}).get("outputs", {})

    def is_up_to_date(self, stage: str, fingerprint: str) -> bool:
        """Recorded with this fingerprint, and its outputs are still on disk unchanged."""
        entry = self.manifest().get("stages", {}).get(stage)
        if not entry or entry.get("fingerprint") != fingerprint:
            return False
        return (self.root / stage).is_dir() and hash_tree(self.root / stage) == entry.get("outputs")


# -- resumable caches ---------------------------------------------------------------------------------------

class JsonlCache:
    """An append-only {key: record} store on disk, flushed per write, for work that must survive a kill.

    Each line is one JSON object with a "key". A torn last line (the process died mid-write) or any other
    line that does not parse is reported, dropped, and the file rewritten without it; it is never fatal.
    """

    def __init__(self, path: str | os.PathLike):
        import logging

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped: list[int] = []
        self._data: dict[str, dict] = {}
        good_lines = []
        if self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    try:
                        row = json.loads(line)
                        self._data[row["key"]] = row
                        good_lines.append(line if line.endswith("\n") else line + "\n")
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.dropped.append(n)
        if self.dropped:
            logging.getLogger(__name__).warning(
                "%s: dropped %d unreadable line(s) %s (a torn write from an interrupted run); "
                "those items will be redone", self.path, len(self.dropped), self.dropped[:5])
            write_text(self.path, "".join(good_lines))

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> dict:
        return self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def rows(self) -> list[dict]:
        return list(self._data.values())

    def add(self, rows: Iterable[dict]) -> None:
        """Append rows (each with a "key") and make them durable before returning."""
        rows = [r for r in rows if r["key"] not in self._data]
        if not rows:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())
        self._data.update((r["key"], r) for r in rows)
