import json

import pytest

from synthempathy.chain import runner
from synthempathy.chain.cli import main
from synthempathy.chain.store import read_jsonl

pytestmark = pytest.mark.slow


def test_notebook_00_through_the_runner_then_skipped(tmp_path, run_overrides):
    lines = []
    store = runner.run("tiny", run_overrides, stop=0, echo=lines.append)
    assert lines[1].startswith("[1/1] 00_data: done") and lines[-1].startswith("report: ")
    train = read_jsonl(store.path("00_data", "train.jsonl"))
    assert len(train) == 40 and {"history", "response", "emotion"} <= set(train[0])
    assert (store.root / "notebooks" / "00_data.ipynb").exists(), "the executed copy is kept"
    assert (tmp_path / "figures" / "00_corpus.png").stat().st_size > 10_000
    manifest = json.loads(store.manifest_path.read_text())
    assert manifest["stages"]["00_data"]["seconds"] > 0 and "transformers" in manifest["packages"]

    lines.clear()
    runner.run("tiny", run_overrides, stop=0, echo=lines.append)
    assert lines[0] == "[1/1] 00_data: up to date, skipped" and len(lines) == 2

    lines.clear()
    runner.run("tiny", {**run_overrides, "max_seed_records": 20}, stop=0, echo=lines.append)
    assert lines[1].startswith("[1/1] 00_data: done")
    assert len(read_jsonl(store.path("00_data", "train.jsonl"))) == 20


def test_failing_stage_names_notebook_cell_and_error(tmp_path, run_overrides):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"conv_id": "c", "emotion": "sad", "situation": "s", "history": ["a"], "response": ""}\n')
    with pytest.raises(runner.StageFailed) as e:
        runner.run("tiny", {**run_overrides, "data_source": str(bad)}, stop=0, echo=lambda _: None)
    msg = str(e.value)
    assert "stage 00_data failed" in msg and "notebooks/00_data.ipynb" in msg
    assert "DataError" in msg and "field 'response'" in msg and str(bad) in msg


def test_cli_rejects_bad_override_before_running(tmp_path, capsys):
    code = main(["run", "--profile", "tiny", "-p", f"run_root={tmp_path}", "-p", "threshold=500"])
    assert code == 2
    assert "threshold" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists(), "nothing may be created for an invalid config"
