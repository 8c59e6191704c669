"""Releasing a run (synthempathy.tools.export): the dataset and the adapters load back with `datasets` and `peft` and
match the run; a re-export gives the same bytes; a foreign folder, an unfinished or edited run are refused; and
--push-to-hub fails at once offline, before any Hub call."""

import json
import time

import pytest
from chain import no_network

from synthempathy.chain.config import load_config
from synthempathy.chain.store import RunStore, hash_tree, write_json, write_jsonl
from synthempathy.lib import arms
from synthempathy.tools import export

CONFIGS = ("selected", "scored", "train_mix")
RELEASED = ("00_data", "02_quality", "03_diversity", "04_finetune", "05_evaluate")


def outputs(store) -> dict:
    return {s: hash_tree(store.root / s) for s in RELEASED if (store.root / s).is_dir()}


def fake_run(cfg) -> RunStore:
    """A run folder with the files the export reads, and one 'adapter' whose weights are just bytes: enough to
    release without loading a model."""
    store = RunStore(cfg.run_dir)
    train = [{"id": f"c{i}:2", "conv_id": f"c{i}", "emotion": "sad", "situation": "s", "history": [f"I lost my keys {i}."],
              "response": "That is annoying. Did you find them?"} for i in range(5)]
    scored = [{"id": f"g{i}", "instruction": "Speaker: hi\nListener: ", "history": [f"It rained on my picnic {i}."],
               "output": f"Oh no, what a shame ({i}).", "discriminator": "That is sad.", "similarity": 20.0 + 10 * i,
               "k": 1, "emotion": "sad"} for i in range(4)]
    quality = [r for r in scored if r["similarity"] >= cfg.threshold]
    write_jsonl(store.path("00_data", "train.jsonl"), train)
    write_jsonl(store.path("02_quality", "scored.jsonl"), scored)
    write_jsonl(store.path("02_quality", "selected.jsonl"), quality)
    write_json(store.path("02_quality", "summary.json"), {"examples": len(scored), "selected": len(quality)})
    write_jsonl(store.path("03_diversity", "selected.jsonl"), [{**quality[0], "kcenter_rank": 0}])
    write_json(store.path("03_diversity", "metrics.json"), {"kept": 1, "discarded": len(quality) - 1})
    adapter = store.path("04_finetune", "synth_empathy/seed-0")
    adapter.mkdir(parents=True, exist_ok=True)
    write_json(adapter / "adapter_config.json", {"base_model_name_or_path": "/a/folder/of/this/machine"})
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "training_args.bin").write_bytes(b"a pickle")
    write_json(adapter / "completed.json", {"seed": 0, "steps": 2, "fingerprint": "f", "provided": {"ed": 5, "synthetic": 1}})
    write_json(store.path("04_finetune", "summary.json"),
               {"synth_empathy": {"what": arms.what("synth_empathy"), "ed": 5, "synthetic": 1, "total": 6, "seeds": {"0": {}}}})
    return store


@pytest.fixture
def run(run_overrides):
    cfg = load_config("tiny", run_overrides)
    return cfg, fake_run(cfg)


def test_a_re_export_gives_the_same_bytes_and_leaves_the_run_as_it_was(run, tmp_path):
    cfg, store = run
    before = outputs(store)
    first = export.export(cfg, store, tmp_path / "a")
    again = export.export(cfg, store, tmp_path / "b")
    over = export.export(cfg, store, tmp_path / "a")  # over the previous export: replaced
    assert first == again == over
    written = hash_tree(tmp_path / "a", skip=())
    assert written == hash_tree(tmp_path / "b", skip=())
    assert {f: h for f, h in written.items() if f != "export.json"} == first["files"]
    assert outputs(store) == before
    released = tmp_path / "a" / "adapters" / "synth_empathy-seed-0"
    assert sorted(p.name for p in released.iterdir()) == ["README.md", "adapter_config.json",
                                                          "adapter_model.safetensors", "completed.json"]
    assert json.loads((released / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert first["counts"]["train_mix"] == 6 and first["licence"] == "mit"


def test_a_foreign_or_added_to_folder_is_refused_and_left_alone(run, tmp_path):
    cfg, store = run
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(export.ExportError, match="not a previous export"):
        export.export(cfg, store, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    done = tmp_path / "release"
    export.export(cfg, store, done)
    (done / "dataset" / "mine.txt").write_text("added")
    with pytest.raises(export.ExportError, match="files added since.*mine.txt"):
        export.export(cfg, store, done)
    with pytest.raises(export.ExportError, match="inside the run folder"):
        export.export(cfg, store, store.root / "release")


def test_an_unfinished_edited_or_differently_configured_run_is_refused(run, run_overrides, tmp_path):
    cfg, store = run
    (store.root / "04_finetune" / "summary.json").unlink()
    with pytest.raises(export.ExportError, match="04_finetune.*--to 04"):
        export.export(cfg, store, tmp_path / "x")
    store = fake_run(cfg)
    store.update_manifest(config=cfg.model_dump())
    for stage in RELEASED[:4]:
        store.record_stage(stage, "fingerprint", 1.0)
    other = load_config("tiny", {**run_overrides, "threshold": 50.0})
    with pytest.raises(export.ExportError, match=r"threshold=40.0 \(now 50.0\)"):
        export.export(other, store, tmp_path / "x")
    write_jsonl(store.path("03_diversity", "selected.jsonl"), [])
    with pytest.raises(export.ExportError, match="03_diversity: its files changed"):
        export.export(cfg, store, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_the_cards_carry_the_seed_datas_licence_for_the_hub(run, tmp_path):
    cfg, store = run
    export.export(cfg, store, tmp_path / "release")
    card = (tmp_path / "release" / "dataset" / "README.md").read_text()
    model = (tmp_path / "release" / "adapters" / "synth_empathy-seed-0" / "README.md").read_text()
    assert card.startswith("---\nlicense: mit\n") and "configs:\n- config_name: selected" in card
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlibrary_name: peft\nlicense: mit" in model
    assert export.licence(load_config("small"))[0] == export.licence(load_config("paper"))[0] == "cc-by-nc-4.0"


@pytest.fixture
def no_hub_calls(monkeypatch):
    """Every Hub call that writes fails the test: the offline checks must come first."""
    from huggingface_hub import HfApi

    def reached(*a, **kw):
        raise AssertionError("a Hub call was reached")

    for name in ("create_repo", "upload_folder", "upload_file", "create_commit"):
        monkeypatch.setattr(HfApi, name, reached)


def pushed(folder, **kw) -> tuple[float, str]:
    """(seconds, message) of a push that must fail."""
    t0 = time.time()
    with pytest.raises(export.ExportError) as e:
        export.push_to_hub(folder, "someone/synth-empathy-tiny", **kw)
    return time.time() - t0, str(e.value)


def test_push_to_hub_fails_at_once_offline_before_any_hub_call(run, tmp_path, monkeypatch, no_hub_calls):
    from huggingface_hub import constants

    cfg, store = run
    assert "export a run there first" in pushed(tmp_path)[1]
    folder = tmp_path / "release"
    export.export(cfg, store, folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seconds, message = pushed(folder, token="hf_x")
    assert "HF_HUB_OFFLINE" in message and seconds < 2
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert "hf auth login" in pushed(folder)[1]
    log = tmp_path / "network.log"
    with no_network(log):
        seconds, message = pushed(folder, token="hf_x")
    assert "cannot be reached" in message and seconds < 5
    assert all("name lookup of 'huggingface.co'" in line for line in log.read_text().splitlines())


@pytest.mark.slow
def test_an_export_loads_back_with_datasets_and_peft_and_matches_the_run(reference, tmp_path):
    import torch
    from datasets import List, Value, load_dataset
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from synthempathy.lib.models import resolve

    overrides, store, _, _ = reference
    cfg, before, to = load_config("tiny", overrides), outputs(store), tmp_path / "release"
    manifest = export.export(cfg, store, to)
    assert outputs(store) == before
    data = {c: load_dataset(str(to / "dataset"), c, split="train", cache_dir=str(tmp_path / "hf")) for c in CONFIGS}
    d_a, scored = store.read("03_diversity", "selected.jsonl"), store.read("02_quality", "scored.jsonl")
    assert data["selected"].to_list() == d_a
    assert [{k: r[k] for k in scored[0]} for r in data["scored"]] == scored
    quality = {r["id"] for r in store.read("02_quality", "selected.jsonl")}
    assert [r["id"] for r in data["scored"] if r["quality_kept"]] == [r["id"] for r in scored if r["id"] in quality]
    assert {r["id"] for r in data["scored"] if r["in_d_a"]} == {r["id"] for r in d_a}
    assert data["scored"].features["similarity"] == Value("float64")
    assert data["scored"].features["history"] == List(Value("string"))

    def pairs(rows, response):
        return sorted((tuple(r["history"]), r[response]) for r in rows)

    mix, given = data["train_mix"], arms.training_summary(store)["synth_empathy"]
    assert pairs([r for r in mix if r["source"] == "synthetic"], "response") == pairs(d_a, "output")
    assert pairs([r for r in mix if r["source"] == "ed"], "response") == pairs(store.read("00_data", "train.jsonl"), "response")
    assert (len(mix), sum(r["source"] == "synthetic" for r in mix)) == (given["total"], given["synthetic"])
    card = (to / "dataset" / "README.md").read_text()
    assert "license: mit" in card and f"S >= {cfg.threshold:g}" in card
    assert f"| parsed synthetic examples, scored | {len(scored)} |" in card and f"= D_a / dropped | {len(d_a)} /" in card

    summary = arms.training_summary(store)
    trained = [(name, int(seed)) for name, s in summary.items() for seed in s["seeds"]]
    assert manifest["adapters"] == [f"{n}-seed-{s}" for n, s in trained] + [f"discriminator-seed-{cfg.seed}"]
    base = AutoModelForCausalLM.from_pretrained(resolve(cfg.base_model), dtype=torch.float32)  # loaded once
    model = None
    for name, seed in trained:
        folder = to / "adapters" / f"{name}-seed-{seed}"
        assert "library_name: peft" in (folder / "README.md").read_text()
        tag = f"{name}_{seed}"
        if model is None:
            model = PeftModel.from_pretrained(base, str(folder), adapter_name=tag)
        else:
            model.load_adapter(str(folder), adapter_name=tag)
        ran = load_file(store.root / "04_finetune" / name / f"seed-{seed}" / "adapter_model.safetensors")
        loaded = get_peft_model_state_dict(model, adapter_name=tag, save_embedding_layers=False)
        assert set(loaded) == set(ran) and all(torch.equal(loaded[k], ran[k]) for k in ran), name
