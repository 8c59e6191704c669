import json

import pytest

from synthempathy.chain import store as st
from synthempathy.chain.config import load_config
from synthempathy.chain.runner import stage_fingerprint
from synthempathy.chain.store import RunStore


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "rows.jsonl"
    st.write_jsonl(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        st.write_jsonl(path, rows())
    assert st.read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"], "no temp file may be left behind"


def test_corrupt_artifact_error_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"x.jsonl: line 2"):
        st.read_jsonl(path)


def test_missing_upstream_artifact_says_which_stage_to_run(tmp_path):
    store = RunStore(tmp_path / "tiny")
    with pytest.raises(FileNotFoundError, match="run stage 01_generate first"):
        store.require("01_generate", "examples.jsonl")


def test_stage_is_up_to_date_until_config_output_or_upstream_changes(tmp_path, run_overrides):
    cfg = load_config("tiny", run_overrides)
    store = RunStore(cfg.run_dir)
    st.write_jsonl(store.path("00_data", "train.jsonl"), [{"x": 1}])
    st.write_jsonl(store.path("02_quality", "selected.jsonl"), [{"x": 1}])
    (store.work_dir("02_quality") / "cache.jsonl").write_text("scratch\n")
    store.record_stage("00_data", stage_fingerprint(cfg, store, "00_data"), 1.0)
    fp = stage_fingerprint(cfg, store, "02_quality")
    store.record_stage("02_quality", fp, 2.0)
    assert store.is_up_to_date("02_quality", fp)

    # work files (caches, checkpoints) are not outputs
    (store.work_dir("02_quality") / "cache.jsonl").write_text("more scratch\n")
    assert store.is_up_to_date("02_quality", fp)

    # a key of this stage changes the fingerprint; a key of a later stage does not
    assert stage_fingerprint(load_config("tiny", {**run_overrides, "threshold": 50}), store, "02_quality") != fp
    assert stage_fingerprint(load_config("tiny", {**run_overrides, "eval_max_new_tokens": 8}), store, "02_quality") == fp

    # an upstream output that changed makes it stale
    st.write_jsonl(store.path("00_data", "train.jsonl"), [{"x": 2}])
    store.record_stage("00_data", stage_fingerprint(cfg, store, "00_data"), 1.0)
    assert stage_fingerprint(cfg, store, "02_quality") != fp

    # an output edited or deleted by hand makes it stale
    store.record_stage("02_quality", fp, 2.0)
    store.path("02_quality", "selected.jsonl").write_text("{}\n")
    assert not store.is_up_to_date("02_quality", fp)


def test_manifest_survives_a_torn_write(tmp_path):
    store = RunStore(tmp_path / "tiny")
    store.root.mkdir(parents=True)
    store.manifest_path.write_text('{"stages": {"00_data": ')
    assert store.manifest() == {}
    store.update_manifest(profile="tiny")
    assert json.loads(store.manifest_path.read_text())["profile"] == "tiny"
