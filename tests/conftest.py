import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_ED = REPO.parent / "shared" / "ed"


@pytest.fixture
def shared_ed() -> Path:
    if not (SHARED_ED / "valid.jsonl").exists():
        pytest.skip(f"real ED copy not found at {SHARED_ED} (it sits beside the repo as ../shared/ed)")
    return SHARED_ED


@pytest.fixture
def run_overrides(tmp_path) -> dict:
    """Overrides that keep a test's run folder and figures out of the repo."""
    return {"run_root": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "figures")}
