"""What every notebook does first: resolve the config, seed everything once, open the stage's run folder.

Each stage module holds one `STAGE = Stage("NN_name")`; its notebook calls `STAGE.open(profile, overrides)` and
shows `STAGE.parameters(cfg)`, the keys the stage reads.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, StageConfig, describe, load_config
from ..store import PAPER_STAGES, STAGES, RunStore
from .backends import USAGE


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

        The run folder is this process's until it ends (RunStore.hold): a notebook open in JupyterLab keeps it
        until its kernel is shut down, and a `run` started meanwhile is refused, naming the notebook. Under
        `run`, whose lock the notebook's kernel inherits (LOCK_ENV), nothing more is taken.
        """
        self._check_parameters(profile, overrides)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
        cfg = load_config(profile, overrides)
        store = RunStore(cfg.run_dir)
        store.hold(self._lock_owner())  # before anything slow, so that a refusal comes at once
        seed_everything(cfg.seed)
        store.stage_dir(self.name)
        USAGE.attach(store.usage_path(self.name))  # the requests and tokens this stage's backends spend
        return StageConfig(cfg, self.name), store

    def _lock_owner(self) -> str:
        """What holds the run folder, as a process refused it is told."""
        if "ipykernel" in sys.modules:
            notebook = os.environ.get("JPY_SESSION_NAME") or f"notebooks/{self.name}.ipynb"  # JupyterLab sets it
            return f"notebook {notebook} (a Jupyter kernel, which keeps the folder until it is shut down)"
        return f"stage {self.name} (STAGE.open in a Python process, which keeps the folder until it exits)"

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
