"""The one configuration schema, and the YAML profiles in configs/ that fill it.

A profile is a flat YAML mapping of keys defined below; anything it leaves out takes the default here.
Keys are flat (not nested) so that `-p key=value` on the command line and papermill parameters address them
directly. Each key belongs to a stage; the runner fingerprints a stage with its own keys only, so changing
the threshold T does not rerun generation.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"

PACKAGED_LM = "packaged:smollm2-135m-instruct"
PACKAGED_EMBEDDER = "packaged:all-minilm-l6-v2"


class ConfigError(ValueError):
    """A profile or override is wrong; the message names the key and where it came from."""


def stage(name: str, default: Any, doc: str, **kw: Any) -> Any:
    return Field(default, description=doc, json_schema_extra={"stage": name}, **kw)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- run-wide -------------------------------------------------------------------------------------------
    profile: str = stage("run", "tiny", "Name of the profile (configs/<profile>.yaml).")
    seed: int = stage("run", 0, "Seed for every random choice in the chain.")
    run_root: str = stage("run", "runs", "Folder holding runs/<profile>/; relative paths are from the repo root.")
    figures_dir: str = stage("run", "figures", "Where the notebooks save their figures (relative to the repo root).")
    device: Literal["auto", "cpu", "cuda"] = stage("run", "auto", "auto = CUDA when present, else CPU.")

    # -- 00 data --------------------------------------------------------------------------------------------
    data_source: str = stage(
        "00_data", "packaged:seed",
        "Where ED comes from: packaged:seed (data/seed), a folder or file in any ED form, or hf:<dataset id>.")
    train_split: str = stage("00_data", "train", "Split used as seeds for generation and as ED training data.")
    eval_split: str = stage("00_data", "test", "Split used for evaluation; falls back to 'valid' when absent.")
    max_seed_records: int | None = stage("00_data", None, "Use only the first N training records (None = all).", ge=1)

    # -- models ---------------------------------------------------------------------------------------------
    generator_model: str = stage("01_generate", PACKAGED_LM, "Generator LLM: packaged:..., a local path or a hub id.")
    base_model: str = stage("04_finetune", PACKAGED_LM, "Vanilla LLM that the discriminator and every arm fine-tune.")
    judge_model: str = stage("02_quality", PACKAGED_LM, "LLM judge for naturalness / coherence / empathy.")
    embedder: str = stage("02_quality", PACKAGED_EMBEDDER, "sentence-transformers embedder for S and diversity.")
    embedder_prompt_name: str | None = stage("02_quality", None, "prompt_name passed to the embedder (paper: query).")

    # -- 01 generation --------------------------------------------------------------------------------------
    gen_backend: Literal["transformers", "openai"] = stage("01_generate", "transformers", "Generation backend.")
    gen_endpoints: list[str] = stage("01_generate", [], "OpenAI-compatible base URLs (round-robin) for gen_backend=openai.")
    gen_max_seeds: int | None = stage("01_generate", None, "Generate from the first N seed records only (None = all).", ge=1)
    passes: int = stage("01_generate", 1, "Full passes over the seed records (paper: 5).", ge=1)
    temperature: float = stage("01_generate", 0.8, "Sampling temperature.", ge=0)
    top_p: float = stage("01_generate", 0.9, "Nucleus sampling mass.", gt=0, le=1)
    gen_max_new_tokens: int = stage("01_generate", 300, "Max new tokens per generated dialogue.", ge=1)
    gen_batch_size: int = stage("01_generate", 16, "Prompts per batch in the transformers backend.", ge=1)
    format_example: bool = stage("01_generate", False, "Add a one-shot format example to the prompt (off in paper).")
    prefill: bool = stage("01_generate", False, "Prefill the reply with 'Round 1:\\nContext:' (off in paper).")
    max_k: int = stage("01_generate", 3, "Turn sampling: k earlier rounds drawn from 1..max_k.", ge=1)
    authors_target: Literal["next", "last"] = stage(
        "01_generate", "next", "next = response of the round ending the prompt; last = the authors' script.")

    # -- 02 quality -----------------------------------------------------------------------------------------
    threshold: float = stage("02_quality", 60.0, "Keep an example when S = 100*cos >= threshold (README 60, script 50).")
    disc_checkpoint: str | None = stage("02_quality", None, "Use this discriminator instead of training one.")
    disc_endpoints: list[str] = stage("02_quality", [], "OpenAI-compatible URLs serving disc_checkpoint (else in process).")
    disc_temperature: float = stage("02_quality", 0.8, "Sampling temperature of the discriminator's answer.", ge=0)
    disc_top_p: float = stage("02_quality", 0.9, "Nucleus mass of the discriminator's answer.", gt=0, le=1)
    disc_max_new_tokens: int = stage("02_quality", 128, "Max new tokens of the discriminator's answer.", ge=1)
    judge_endpoints: list[str] = stage("02_quality", [], "OpenAI-compatible URLs serving judge_model (else in process).")
    judge_batch_size: int = stage("02_quality", 16, "Items per forward pass of the in-process judge.", ge=1)
    sanity_pairs: int = stage("02_quality", 32, "Real and shuffled seed pairs in the judge's sanity panel.", ge=2)

    # -- 03 diversity ---------------------------------------------------------------------------------------
    kcenter_ratio: float = stage("03_diversity", 0.9, "Share of the quality-kept set that K-Center-Greedy keeps.")

    # -- 04 fine-tuning -------------------------------------------------------------------------------------
    arms: list[str] = stage("04_finetune", ["ed", "synth_empathy"], "Which comparison arms to train.")
    quantization: Literal["4bit", "none"] = stage("04_finetune", "4bit", "4bit = QLoRA (nf4); none = plain LoRA.")
    lora_r: int = stage("04_finetune", 8, "LoRA rank.", ge=1)
    lora_alpha: int = stage("04_finetune", 32, "LoRA alpha.", ge=1)
    lora_dropout: float = stage("04_finetune", 0.1, "LoRA dropout.", ge=0, lt=1)
    learning_rate: float = stage("04_finetune", 1e-4, "Learning rate.", gt=0)
    epochs: float = stage("04_finetune", 1.0, "Training epochs (ignored when max_steps is set).", gt=0)
    max_steps: int | None = stage("04_finetune", None, "Stop after this many optimizer steps.", ge=1)
    train_batch_size: int = stage("04_finetune", 4, "Examples per optimizer step.", ge=1)
    max_length: int = stage("04_finetune", 512, "Max tokens per training example.", ge=16)
    train_eval_records: int = stage("04_finetune", 32, "Evaluation records for the validation loss during training.",
                                    ge=1)

    # -- 05 evaluation --------------------------------------------------------------------------------------
    eval_max_new_tokens: int = stage("05_evaluate", 64, "Max new tokens per evaluated response.", ge=1)
    max_eval_records: int | None = stage("05_evaluate", None, "Evaluate only the first N records.", ge=1)
    sweep_thresholds: list[float] = stage("05_evaluate", [], "Quantity-quality sweep: thresholds T to retrain and evaluate.")
    sweep_ratios: list[float] = stage("05_evaluate", [], "Quantity-quality sweep: K-center ratios to retrain and evaluate.")
    bootstrap_resamples: int = stage("05_evaluate", 1000, "Bootstrap resamples for confidence intervals.", ge=10)

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, v: float) -> float:
        if not 0 <= v <= 100:
            raise ValueError(f"must be within 0..100 (S is 100 x cosine), got {v}")
        return v

    @field_validator("kcenter_ratio")
    @classmethod
    def _ratio_in_range(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"must be within (0, 1], got {v}")
        return v

    # -- derived --------------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        root = Path(self.run_root)
        return (root if root.is_absolute() else REPO_ROOT / root) / self.profile

    @property
    def figures(self) -> Path:
        path = Path(self.figures_dir)
        path = path if path.is_absolute() else REPO_ROOT / path
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stage_keys(self, stage_name: str) -> dict[str, Any]:
        """The values of the keys belonging to one stage (and the run-wide seed)."""
        keys = [k for k, f in Config.model_fields.items() if (f.json_schema_extra or {}).get("stage") == stage_name]
        return {k: getattr(self, k) for k in ["seed", *keys]}


def stage_of(key: str) -> str:
    return (Config.model_fields[key].json_schema_extra or {})["stage"]


def parse_override(item: str) -> tuple[str, Any]:
    """'key=value' -> (key, value); the value is read as a Python/YAML literal when it is one."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
    return key, value


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<profile>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown key '{key}'")
        else:
            lines.append(f"{origin}: key '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def profile_path(profile: str) -> Path:
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        return path if path.is_absolute() else Path.cwd() / path
    return CONFIG_DIR / f"{profile}.yaml"


def read_profile(profile: str) -> dict[str, Any]:
    path = profile_path(profile)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"profile '{profile}': no file {path} (known profiles: {known})")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of key: value, got {type(values).__name__}")
    values.setdefault("profile", path.stem)
    return values


def load_config(profile: str = "tiny", overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Read configs/<profile>.yaml, apply overrides, validate; errors name the key and the file."""
    values = read_profile(profile)
    origin = str(profile_path(profile))
    try:
        cfg = Config(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    for key, value in (overrides or {}).items():
        if key not in Config.model_fields:
            raise ConfigError(f"override: unknown key '{key}' (profile {origin})")
        try:
            setattr(cfg, key, value)
        except ValidationError as e:
            raise ConfigError(_format_errors(e, f"override {key}={value!r} (profile {origin})")) from None
    return cfg


def describe(cfg: Config, stage_name: str) -> list[dict[str, Any]]:
    """Rows (key, value, meaning) of one stage's parameters, for the notebooks' parameter tables."""
    rows = []
    for key, field in Config.model_fields.items():
        if (field.json_schema_extra or {}).get("stage") == stage_name:
            rows.append({"key": key, "value": getattr(cfg, key), "meaning": field.description})
    return rows
