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


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The shrunk tiny chain, run once for the session with the network refused to every process of it:
    (overrides, store, runner output lines, network log). Tests copy it; none may change it."""
    from chain import no_network, overrides_for

    from synthempathy.chain import runner

    root = tmp_path_factory.mktemp("reference")
    overrides, lines, log = overrides_for(root), [], root / "network.log"
    # what a terminal would show while the stages run, in its log form (beside the run folder: progress.log)
    with no_network(log), open(root / "progress.log", "w") as progress:
        store = runner.run("tiny", overrides, echo=lines.append, progress=progress)
    return overrides, store, lines, log
