"""What the chain tests share: the shrunk tiny profile, the offline guard, and where a run goes."""

import contextlib
import importlib.util
import os
from pathlib import Path

SHRUNK = {"gen_max_seeds": 10, "gen_max_new_tokens": 96, "gen_batch_size": 4, "threshold": 30.0,
          "disc_max_new_tokens": 32, "sanity_pairs": 4, "max_steps": 3, "train_batch_size": 2, "max_length": 128,
          "train_eval_records": 8, "max_eval_records": 6, "eval_max_new_tokens": 16,
          "bootstrap_resamples": 50,
          "train_seeds": [0, 1], "ab_records": 4}
GUARD = Path(__file__).parent / "offline"
# The files whose bytes must not depend on anything but the seed: the two selections and the metrics.
COMPARED = ["02_quality/selected.jsonl", "03_diversity/selected.jsonl", "05_evaluate/results.json"]


def _guard_module():
    spec = importlib.util.spec_from_file_location("offline_guard", GUARD / "offline_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def no_network(log: Path):
    """Refuse non-loopback network in this process and in every Python process it starts."""
    guard, saved = _guard_module(), {k: os.environ.get(k) for k in ("PYTHONPATH", "OFFLINE_GUARD_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD), saved["PYTHONPATH"]]))
    os.environ["OFFLINE_GUARD_LOG"] = str(log)
    guard.install()
    try:
        yield
    finally:
        guard.uninstall()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def overrides_for(root: Path) -> dict:
    """The shrunk profile's overrides for a run kept under `root`."""
    return {"run_root": str(root / "runs"), "figures_dir": str(root / "figures"), **SHRUNK}
