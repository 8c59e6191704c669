"""What every notebook does first: resolve the config, seed everything once, open the stage's run folder; and
what every step that writes the stage's files runs inside.

Each stage module holds one `STAGE = Stage("NN_name")`; its notebook calls `STAGE.open(profile, overrides)` and
shows `STAGE.parameters(cfg)`, the keys the stage reads. Its steps that write are decorated with `@STAGE.step`.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import Any

from ..chain.config import ConfigError, StageConfig, describe, load_config
from ..chain.store import LOCK_ENV, PAPER_STAGES, STAGES, RunStore
from .backends import USAGE
from .terminal import off_the_page


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Stage:
    name: str

    def __post_init__(self):
        if self.name not in STAGES:
            raise ValueError(f"unknown stage {self.name!r} (stages: {', '.join(STAGES)})")

    @property
    def paper(self) -> str:
        return PAPER_STAGES[self.name]

    def open(self, profile: str = "tiny", overrides: dict[str, Any] | list[str] | None = None
             ) -> tuple[StageConfig, RunStore]:
        """(config as this stage sees it, the run's store), everything seeded with the config's seed.

        Opening takes nothing: an idle notebook holds no lock, so every notebook of a run can be open at once
        and `run` works beside them. A step that writes holds the run folder while it runs (`step`).

        Outside the runner (JupyterLab, a script) figures go to the run folder's figures/, so an interactive run
        leaves the committed figures of the default run alone; the runner writes the profile's `figures_dir`.
        """
        self._check_parameters(profile, overrides)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
        cfg = load_config(profile, overrides)
        if not os.environ.get(LOCK_ENV) and "figures_dir" not in _given(overrides):
            cfg = cfg.model_copy(update={"figures_dir": str(cfg.run_dir / "figures")})
        store = RunStore(cfg.run_dir)
        seed_everything(cfg.seed)
        store.stage_dir(self.name)
        USAGE.attach(store.usage_path(self.name))  # the requests and tokens this stage's backends spend
        return StageConfig(cfg, self.name), store

    def step(self, fn):
        """A step of this stage that writes its files: while it runs it holds the run folder (released when it
        returns, so an idle notebook holds nothing; under `run` the run's lock covers it), and what it writes to
        stdout and stderr (bars, logs, warnings) goes to the terminal, not into the notebook's cell."""

        @functools.wraps(fn)
        def step(*args, **kwargs):
            store = next((a for a in (*args, *kwargs.values()) if isinstance(a, RunStore)), None)
            if store is None:
                raise TypeError(f"step {fn.__name__} of {self.name} writes the run folder: pass it the run's store")
            with store.lock(self._lock_owner(fn.__name__), inherit=True), off_the_page():
                return fn(*args, **kwargs)

        return step

    def _lock_owner(self, step: str) -> str:
        """What holds the run folder, as a process refused it is told."""
        if "ipykernel" in sys.modules:
            notebook = os.environ.get("JPY_SESSION_NAME") or f"notebooks/{self.name}.ipynb"  # JupyterLab sets it
            return f"notebook {notebook} (a Jupyter kernel running step {step} of stage {self.name})"
        return f"stage {self.name} (step {step} in a Python process)"

    def parameters(self, cfg) -> list[dict[str, Any]]:
        """Rows (key, value, meaning) of the keys this stage reads, for the notebook's parameter table."""
        return describe(cfg, self.name)

    def _check_parameters(self, profile, overrides) -> None:
        """The notebook's tagged parameters, as papermill or a user set them: a clear error instead of a deep one."""
        where = f"notebooks/{self.name}.ipynb, parameters cell"
        if not isinstance(profile, str):
            raise ConfigError(f"{where}: `profile` must be a profile name or a .yaml path (a string), "
                              f"got {type(profile).__name__} {profile!r}")
        if overrides is not None and not isinstance(overrides, (dict, list)):
            raise ConfigError(f"{where}: `overrides` must be a dict of key: value (e.g. {{\"max_steps\": 3}}) or a "
                              f"list of \"key=value\" strings, got {type(overrides).__name__} {overrides!r}")


def _given(overrides) -> dict[str, Any]:
    if isinstance(overrides, list):
        from ..chain.config import parse_override

        return dict(parse_override(o) for o in overrides)
    return dict(overrides or {})
