"""Run the numbered notebooks in order with papermill, skipping stages that are up to date.

A stage is up to date when the manifest holds it with the same fingerprint: the config keys it reads (as
config.py declares them), the outputs of every earlier stage, its notebook and the helper package's source.
Executed notebooks are kept in runs/<profile>/notebooks/ so a failed cell can be read where it failed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import report
from .config import (
    NOT_FINGERPRINTED,
    REPO_ROOT,
    Config,
    keys_read_by,
    load_config,
    parse_override,
    profile_path,
)
from .progress import shown
from .store import STAGES, RunStore, hash_file, hash_obj, package_versions

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole package: its source is fingerprinted


class StageFailed(RuntimeError):
    pass


def stage_config(cfg: Config, stage: str) -> dict[str, Any]:
    """The values of the keys the stage reads (config.py declares them), except where the run goes."""
    return {k: getattr(cfg, k) for k in keys_read_by(stage) if k not in NOT_FINGERPRINTED}


def code_fingerprint() -> str:
    files = sorted(p for p in PACKAGE_DIR.rglob("*") if p.is_file() and p.suffix in (".py", ".txt", ".yaml"))
    return hash_obj({p.relative_to(PACKAGE_DIR).as_posix(): hash_file(p) for p in files})


def stage_fingerprint(cfg: Config, store: RunStore, stage: str) -> str:
    upstream = {s: store.stage_outputs(s) for s in STAGES[: STAGES.index(stage)]}
    return hash_obj({
        "config": stage_config(cfg, stage),
        "upstream": upstream,
        "notebook": hash_file(nb) if (nb := NOTEBOOK_DIR / f"{stage}.ipynb").exists() else None,
        "code": code_fingerprint(),
    })


def select_stages(start: int | str | None, stop: int | str | None) -> list[str]:
    def index(x: int | str | None, default: int) -> int:
        if x is None:
            return default
        n = int(str(x)[:2])
        if not 0 <= n < len(STAGES):
            raise ValueError(f"stage {x!r}: stages are numbered 0..{len(STAGES) - 1}")
        return n

    return list(STAGES[index(start, 0): index(stop, len(STAGES) - 1) + 1])


def available_stages() -> list[str]:
    return [s for s in STAGES if (NOTEBOOK_DIR / f"{s}.ipynb").exists()]


def run(profile: str = "tiny", overrides: dict[str, Any] | list[str] | None = None, start=None, stop=None,
        force: bool = False, echo=print, progress=None) -> RunStore:
    """Execute stages start..stop (all by default) of `profile`; returns the run's store. While a stage runs, its
    cells and progress bars are shown on `progress` (default stderr; progress.py)."""
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    cfg = load_config(profile, overrides)  # validate before anything runs
    overrides = {k: getattr(cfg, k) for k in overrides or {}}  # as validated, e.g. "0.5" -> 0.5
    store = RunStore(cfg.run_dir)
    # one run at a time per run folder; the notebooks' kernels inherit the lock (store.py)
    with store.lock(f"synthempathy run --profile {profile}"):
        store.root.mkdir(parents=True, exist_ok=True)
        store.update_manifest(profile=cfg.profile, config=cfg.model_dump(), seed=cfg.seed,
                              packages=package_versions())
        # Notebooks run from notebooks/, so a profile given as a file path is passed on absolute.
        nb_profile = str(profile_path(profile)) if profile.endswith((".yaml", ".yml")) else profile
        executed_dir = store.root / "notebooks"
        executed_dir.mkdir(exist_ok=True)
        wanted = [s for s in select_stages(start, stop) if s in available_stages()]
        with visible_gpu(cfg.in_process_gpu, echo):
            run_stages(cfg, store, wanted, executed_dir, {"profile": nb_profile, "overrides": overrides}, force,
                       echo, progress)
        index = report.render(store, cfg.figures)
        echo(f"report: {index}")
    return store


def run_stages(cfg: Config, store: RunStore, wanted: list[str], executed_dir: Path, parameters: dict, force: bool,
               echo, progress) -> None:
    """Execute each wanted stage that is not up to date, recording it in the manifest."""
    for i, stage in enumerate(wanted, 1):
        fingerprint = stage_fingerprint(cfg, store, stage)
        if not force and store.is_up_to_date(stage, fingerprint):
            echo(f"[{i}/{len(wanted)}] {stage}: up to date, skipped")
            continue
        echo(f"[{i}/{len(wanted)}] {stage}: running notebooks/{stage}.ipynb ...")
        t0 = time.time()
        execute(stage, executed_dir / f"{stage}.ipynb", parameters, progress)
        seconds = time.time() - t0
        store.record_stage(stage, fingerprint, seconds)
        echo(f"[{i}/{len(wanted)}] {stage}: done in {seconds:.1f} s")


@contextmanager
def visible_gpu(gpu: int | None, echo=print) -> Iterator[None]:
    """While the stages run, CUDA_VISIBLE_DEVICES names only the profile's in_process_gpu: each notebook's kernel
    inherits this process's environment when papermill starts it, so the chain's models land on that GPU and
    never on a server's. Restored afterwards; None leaves the variable as it is."""
    if gpu is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    replaced = f", replacing CUDA_VISIBLE_DEVICES={before}" if before not in (None, str(gpu)) else ""
    echo(f"in-process models on GPU {gpu} (in_process_gpu: the notebooks see CUDA_VISIBLE_DEVICES={gpu}{replaced})")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def execute(stage: str, out: Path, parameters: dict, progress=None) -> None:
    """Run notebooks/<stage>.ipynb into `out` with papermill, its cells and bars shown on `progress`; what its
    steps write to the terminal is kept beside it (`out` with .log)."""
    import papermill as pm

    source = NOTEBOOK_DIR / f"{stage}.ipynb"
    cells = len(json.loads(source.read_text(encoding="utf-8"))["cells"]) + 1  # + papermill's parameters cell
    try:
        with shown(stage, cells, progress, feed=out.with_suffix(".log")):
            pm.execute_notebook(str(source), str(out), parameters=parameters, cwd=str(NOTEBOOK_DIR),
                                kernel_name="python3", progress_bar=False, log_output=True)
    except pm.PapermillExecutionError as e:
        raise StageFailed(f"stage {stage} failed in cell {e.exec_count} of notebooks/{stage}.ipynb "
                          f"(executed copy: {out}):\n{e.ename}: {e.evalue}") from None
