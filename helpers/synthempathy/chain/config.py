"""The one configuration schema, and the YAML profiles in configs/ that fill it.

A profile is a flat YAML mapping of keys defined below; anything it leaves out takes the default here.
Keys are flat (not nested) so that `-p key=value` on the command line and papermill parameters address them
directly. Each key declares the stages that read it (`reads`); the runner fingerprints a stage with exactly
those keys, so changing the threshold T does not rerun generation, and a stage that reads a key it does not
declare fails at once (StageConfig).

The file is over 300 lines because it is the one schema: every key of every stage, with its readers and its
meaning, sits here so that a user finds all of them in one place.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .store import STAGES

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO_ROOT / "configs"

PACKAGED_LM = "packaged:smollm2-135m-instruct"
PACKAGED_EMBEDDER = "packaged:all-minilm-l6-v2"
# The comparison arms (04_finetune.ARMS says what each tests and where its synthetic data come from).
ARM_NAMES = ("ed", "synth_empathy", "ed_plus_random", "ed_plus_all", "ed_plus_quality", "authors_data")


class ConfigError(ValueError):
    """A profile or override is wrong; the message names the key and where it came from."""


# Which stages read a key (each key below names one of these):
ALL = STAGES  # run-wide
DATA, GEN, QUALITY, EVAL = ("00_data",), ("01_generate",), ("02_quality",), ("05_evaluate",)
IN_PROCESS = ("01_generate", "02_quality", "05_evaluate")  # every stage whose models answer chats in process
SFT = ("02_quality", "04_finetune", "05_evaluate")  # every adapter's training: M_D, the arms, the sweep's
JUDGED = ("02_quality", "05_evaluate")  # the judge
SELECTED = ("02_quality", "04_finetune", "05_evaluate")  # the threshold and its cut (the sweep points vary it)
EMBEDDED = ("02_quality", "03_diversity", "04_finetune", "05_evaluate")  # the embedder
DIVERSE = ("03_diversity", "04_finetune", "05_evaluate")  # the K-center ratio (the sweep points vary it)
ARMS = ("04_finetune", "05_evaluate")  # which arms, seeds and sweep points are trained, and evaluated
AUTHORED = ("01_generate", "02_quality", "05_evaluate")  # every stage with a switch that can take the authors' texts
ALL_KEYS = ("profile", "seed", "run_root", "figures_dir", "device")
# where a run goes, or how it reaches a server: not what it computes
NOT_FINGERPRINTED = {"profile", "run_root", "figures_dir", "endpoint_timeout", "endpoint_retries", "endpoint_api_key_env"}
# where a part runs (which GPU, how much of it a server takes): a model on GPU 4 computes what it would on GPU 0
NOT_FINGERPRINTED |= {"in_process_gpu", "servers"}


def key(reads: tuple[str, ...], default: Any, doc: str, **kw: Any) -> Any:
    """A config key, with the stages that read it: a stage's fingerprint covers exactly the keys it reads."""
    unknown = [s for s in reads if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r} in reads (stages: {', '.join(STAGES)})")
    return Field(default, description=doc, json_schema_extra={"reads": list(reads)}, **kw)


# -- placement ---------------------------------------------------------------------------------------------
MODELLED = STAGES[1:]  # every stage that loads a model


@dataclass(frozen=True)
class Server:
    """One `servers` entry: the URL a vLLM server answers at, the GPUs it sees and the share of each it takes."""

    url: str
    gpus: tuple[int, ...]
    utilization: float


def parse_server(entry: str) -> Server:
    """'<url> gpus=0,1 utilization=0.9' -> Server; a ValueError says what is wrong with the entry."""
    url, *fields = str(entry).split() or [""]
    form = "'<url> gpus=<CUDA_VISIBLE_DEVICES, e.g. 0,1> utilization=<fraction of each GPU, e.g. 0.9>'"
    pairs = dict(f.split("=", 1) if "=" in f else (f, None) for f in fields)
    if not url.startswith(("http://", "https://")) or set(pairs) != {"gpus", "utilization"}:
        raise ValueError(f"{entry!r}: expected {form}")
    try:
        gpus = tuple(int(g) for g in pairs["gpus"].split(","))
        utilization = float(pairs["utilization"])
    except (AttributeError, ValueError):
        raise ValueError(f"{entry!r}: expected {form}") from None
    if min(gpus) < 0 or len(set(gpus)) != len(gpus):
        raise ValueError(f"{entry!r}: gpus must be distinct CUDA indices (0, 1, ...)")
    if not 0 < utilization <= 1:
        raise ValueError(f"{entry!r}: utilization is vLLM's --gpu-memory-utilization, within (0, 1]")
    return Server(url, gpus, utilization)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- run-wide -------------------------------------------------------------------------------------------
    profile: str = key(ALL, "tiny", "Name of the profile (configs/<profile>.yaml).")
    seed: int = key(ALL, 0, "Seed for every random choice in the chain.")
    run_root: str = key(ALL, "runs", "Folder holding runs/<profile>/; relative paths are from the repo root.")
    figures_dir: str = key(ALL, "figures", "Where the notebooks save their figures (relative to the repo root).")
    device: Literal["auto", "cpu", "cuda"] = key(ALL, "auto", "auto = CUDA when present, else CPU.")

    # -- 00_data ---------------------------------------------------------------------------------------------
    data_source: str = key(
        DATA, "packaged:seed",
        "Where ED comes from: packaged:seed (data/seed), a folder or file in any ED form, or hf:<dataset id>.")
    train_split: str = key(DATA, "train", "Split used as seeds for generation and as ED training data.")
    eval_split: str = key(DATA, "test", "Split used for evaluation; falls back to 'valid' when absent.")
    max_seed_records: int | None = key(DATA, None, "Use only the first N training records (None = all).", ge=1)
    eval_source: str | None = key(DATA, None, "Evaluate on this source instead of data_source's eval split: e.g. the "
                                  "authors' preprocessed ED test file (any ED form load_ed reads).")
    authors_source: str = key(AUTHORED, "github", "Where the authors' exact texts come from when a switch asks for them: "
                              "github (their scripts at the pinned commit, checksummed, cached) or a local clone.")

    # -- models ---------------------------------------------------------------------------------------------
    generator_model: str = key(GEN, PACKAGED_LM, "Generator LLM: packaged:..., a local path or a hub id.")
    base_model: str = key(SFT, PACKAGED_LM, "Vanilla LLM that the discriminator and every arm fine-tune.")
    judge_model: str = key(JUDGED, PACKAGED_LM, "LLM judge for naturalness / coherence / empathy.")
    embedder: str = key(EMBEDDED, PACKAGED_EMBEDDER, "sentence-transformers embedder for S and diversity.")
    embedder_prompt_name: str | None = key(EMBEDDED, None, "prompt_name passed to the embedder (paper: query).")

    # -- 01_generate ---------------------------------------------------------------------------------------
    gen_backend: Literal["transformers", "openai"] = key(GEN, "transformers", "Generation backend.")
    gen_endpoints: list[str] = key(GEN, [], "OpenAI-compatible base URLs (round-robin) for gen_backend=openai.")
    gen_max_seeds: int | None = key(GEN, None, "Generate from the first N seed records only (None = all).", ge=1)
    passes: int = key(GEN, 1, "Full passes over the seed records (paper: 5).", ge=1)
    temperature: float = key(GEN, 0.8, "Sampling temperature.", ge=0)
    top_p: float = key(GEN, 0.9, "Nucleus sampling mass.", gt=0, le=1)
    gen_max_new_tokens: int = key(GEN, 300, "Max new tokens per generated dialogue.", ge=1)
    gen_batch_size: int = key(IN_PROCESS, 16, "Prompts per batch in the transformers backend.", ge=1)
    endpoint_concurrency: int = key(IN_PROCESS, 8, "Requests in flight at once, over all the OpenAI-compatible URLs "
                                    "of one backend (generation, M_D, judge, evaluation).", ge=1)
    endpoint_timeout: float = key(IN_PROCESS, 120.0, "Seconds to wait for one reply from an OpenAI-compatible URL.", gt=0)
    endpoint_retries: int = key(IN_PROCESS, 3, "Retries of a failed request at one URL (backoff 1, 2, 4 ... s) before "
                                "the next URL is tried.", ge=0)
    endpoint_api_key_env: str | None = key(IN_PROCESS, None, "Name of the environment variable holding the API key of "
                                           "the OpenAI-compatible URLs (`vllm serve --api-key`); the key itself is never "
                                           "written to a config or a run.")
    gen_prompt: Literal["project", "authors"] = key(GEN, "project", "authors = their instruction text exactly, one "
                                                    "user message, no system prompt, no assistant header (their script).")
    format_example: bool = key(GEN, False, "Add a one-shot format example to the prompt (off in paper).")
    prefill: bool = key(GEN, False, "Prefill the reply with 'Round 1:\\nContext:' (off in paper).")
    parser: Literal["tolerant", "authors"] = key(GEN, "tolerant", "Round parser: tolerant (labels, markdown, quotes) "
                                                 "or authors (their Context/Response pattern, a cut-off last reply kept).")
    turn_sampling: Literal["uniform", "authors"] = key(GEN, "uniform", "k law: uniform in 1..min(max_k, rounds-1), "
                                                       "or authors: min(randint(1, max_k), rounds-1), one-round kept (k=0).")
    max_k: int = key(GEN, 3, "Turn sampling: k earlier rounds drawn from 1..max_k.", ge=1)
    authors_target: Literal["next", "last"] = key(
        GEN, "next", "next = response of the round ending the prompt; last = the authors' script.")

    # -- 02_quality -----------------------------------------------------------------------------------------
    threshold: float = key(SELECTED, 60.0, "Keep an example when S = 100*cos >= threshold (README 60, script 50).")
    disc_checkpoint: str | None = key(QUALITY, None, "Use this discriminator instead of training one.")
    disc_input: Literal["chat", "authors"] = key(QUALITY, "chat", "M_D's input: chat turns (and then M_D is the ed arm), "
                                                 "or authors: the Speaker/Listener transcript as one user message, "
                                                 "M_D trained on ED in that form.")
    similarity_cut: Literal["exact", "authors"] = key(SELECTED, "exact", "exact: keep S >= T; authors: int(S) >= T "
                                                      "(their script truncates S first).")
    disc_endpoints: list[str] = key(QUALITY, [], "OpenAI-compatible URLs serving disc_checkpoint (else in process).")
    disc_temperature: float = key(QUALITY, 0.8, "Sampling temperature of the discriminator's answer.", ge=0)
    disc_top_p: float = key(QUALITY, 0.9, "Nucleus mass of the discriminator's answer.", gt=0, le=1)
    disc_max_new_tokens: int = key(QUALITY, 128, "Max new tokens of the discriminator's answer.", ge=1)
    judge_prompt: Literal["project", "authors"] = key(JUDGED, "project", "authors = their three messages exactly "
                                                      "(system, rubric, history/response form), and their sampled text "
                                                      "answer recorded beside the expected score.")
    judge_endpoints: list[str] = key(JUDGED, [], "OpenAI-compatible URLs serving judge_model (else in process).")
    endpoint_label_constraint: Literal["structured_outputs", "guided_choice", "grammar", "none"] = key(
        JUDGED, "structured_outputs", "How a judge at judge_endpoints is held to answer with a label: vLLM's "
        "structured_outputs choice (v0.10.2 on), guided_choice (older vLLM), grammar (llama.cpp), or none.")
    judge_batch_size: int = key(JUDGED, 16, "Items per forward pass of the in-process judge.", ge=1)
    sanity_pairs: int = key(QUALITY, 32, "Real and shuffled seed pairs in the judge's sanity panel.", ge=2)

    # -- 03_diversity --------------------------------------------------------------------------------------
    kcenter_ratio: float = key(DIVERSE, 0.9, "Share of the quality-kept set that K-Center-Greedy keeps.")
    kcenter_bookkeeping: Literal["project", "authors"] = key(DIVERSE, "project", "project: the random first centre is "
                                                             "kept, round(ratio x n); authors: it is not, floor(ratio x n) "
                                                             "after it.")

    # -- 04_finetune ---------------------------------------------------------------------------------------
    arms: list[Literal[ARM_NAMES]] = key(ARMS, ["ed", "synth_empathy", "ed_plus_random"], "Which comparison arms to "
                                         "train: ed_plus_random (ED + |D_a| random parsed examples) is the control of "
                                         "the selection.")
    authors_selection: str | None = key(ARMS, None, "One of the authors' released files (selected_data/*.json of "
                                        "their repository at the pinned commit; README): the arm authors_data trains on "
                                        "ED + its records that are not ED, and 05 sets their selection beside ours.")
    train_seeds: list[int] = key(ARMS, [0], "Every arm (and sweep point) is trained once per seed; intervals resample "
                                 "the seeds and the evaluation examples.")
    quantization: Literal["4bit", "none"] = key(SFT, "4bit", "4bit = QLoRA (nf4); none = plain LoRA.")
    lora_r: int = key(SFT, 8, "LoRA rank.", ge=1)
    lora_alpha: int = key(SFT, 32, "LoRA alpha.", ge=1)
    lora_dropout: float = key(SFT, 0.1, "LoRA dropout.", ge=0, lt=1)
    learning_rate: float = key(SFT, 1e-4, "Learning rate.", gt=0)
    epochs: float = key(SFT, 1.0, "Passes over each adapter's own data: the matched budget under which every "
                        "synthetic example is seen (ignored when max_steps is set).", gt=0)
    max_steps: int | None = key(SFT, None, "Stop after this many optimizer steps instead (a quick check: then not "
                                "every example is seen; the results table counts what was).", ge=1)
    train_batch_size: int = key(SFT, 4, "Examples per optimizer step.", ge=1)
    max_length: int = key(SFT, 512, "Max tokens per training example.", ge=16)
    prompt_format: Literal["chat", "authors"] = key(SFT, "chat", "How the arms see a dialogue in training and "
                                                    "evaluation: chat turns after the system prompt, or authors: one user "
                                                    "message with the Speaker/Listener transcript, no system prompt.")
    train_eval_records: int = key(SFT, 32, "Evaluation records for the validation loss during training.", ge=1)

    # -- 05_evaluate ---------------------------------------------------------------------------------------
    eval_max_new_tokens: int = key(EVAL, 64, "Max new tokens per evaluated response.", ge=1)
    max_eval_records: int | None = key(EVAL, None, "Evaluate only the first N records.", ge=1)
    eval_endpoints: list[str] = key(EVAL, [], "OpenAI-compatible URLs (round-robin) that answer the evaluation: the "
                                    "base under base_model's name, each adapter as the LoRA module <arm>.seed-<s> "
                                    "(vLLM --enable-lora --lora-modules; configs/paper.yaml). Else in process.")
    sweep_thresholds: list[float] = key(ARMS, [], "Quantity-quality sweep: thresholds T; at each, ED + the examples "
                                        "selected at T and ED + as many random ones are trained and evaluated.")
    sweep_ratios: list[float] = key(ARMS, [], "Quantity-quality sweep: K-center ratios, likewise.")
    ab_pairs: list[str] | None = key(EVAL, None, "Pairwise A/B judge: 'x:y' compares arm x's replies with arm y's, "
                                     "in both orders (None = synth_empathy against ed and ed_plus_random, where "
                                     "trained; [] = none).")
    ab_records: int | None = key(EVAL, None, "A/B-judge only the first N evaluation records (None = all).", ge=1)
    bootstrap_resamples: int = key(EVAL, 1000, "Bootstrap resamples for confidence intervals.", ge=10)

    # -- placement: which GPUs each part uses (`plan` checks them and prints the launch lines) ---------------
    in_process_gpu: int | None = key(MODELLED, None, "The GPU (CUDA index) of the chain's own models: M_D's and the "
                                     "arms' training, the embedder, any model not behind an endpoint. The runner "
                                     "sets CUDA_VISIBLE_DEVICES to it for the notebooks (None: left as it is).", ge=0)
    servers: list[str] = key(IN_PROCESS, [], "The vLLM servers behind the endpoint URLs that run beside the chain, one "
                             "entry per URL: '<url> gpus=<CUDA_VISIBLE_DEVICES> utilization=<--gpu-memory-utilization>'; "
                             "a server holds that fraction of every GPU it sees from its start.")

    @field_validator("servers")
    @classmethod
    def _servers_readable(cls, v: list[str]) -> list[str]:
        urls = [parse_server(entry).url for entry in v]
        twice = sorted({u for u in urls if urls.count(u) > 1})
        if twice:
            raise ValueError(f"describes {twice[0]} twice: one entry per server")
        return v

    @model_validator(mode="after")
    def _in_process_gpu_needs_cuda(self) -> Config:
        if self.in_process_gpu is not None and self.device == "cpu":
            raise ValueError(f"in_process_gpu {self.in_process_gpu} is set but device is cpu: the chain's models run "
                             "on the CPU (set device: cuda, or in_process_gpu: null)")
        return self

    @property
    def placed_servers(self) -> list[Server]:
        """The `servers` entries, read."""
        return [parse_server(entry) for entry in self.servers]

    @model_validator(mode="after")
    def _authors_prompt_alone(self) -> Config:
        if self.gen_prompt == "authors" and (self.format_example or self.prefill):
            raise ValueError("gen_prompt 'authors' sends their instruction alone: set format_example and prefill "
                             "to false (they are the project's aids for small generators)")
        return self

    @model_validator(mode="after")
    def _authors_data_has_its_file(self) -> Config:
        if "authors_data" in self.arms and not self.authors_selection:
            raise ValueError("arms: 'authors_data' trains on the authors' released data: set authors_selection to "
                             "the file (README, `paper` section)")
        return self

    @model_validator(mode="after")
    def _ab_pairs_trained(self) -> Config:
        for pair in self.ab_pairs or []:
            names = pair.split(":")
            if len(names) != 2 or names[0] == names[1]:
                raise ValueError(f"ab_pairs: {pair!r} must name two different arms as 'x:y'")
            missing = [n for n in names if n not in self.arms]
            if missing:
                raise ValueError(f"ab_pairs: {pair!r} names arm {missing[0]!r}, which is not trained "
                                 f"(arms: {', '.join(self.arms)})")
        return self

    @field_validator("train_seeds")
    @classmethod
    def _seeds_given(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed (e.g. [0]); every arm is trained once per seed")
        if len(set(v)) != len(v):
            raise ValueError(f"has a seed twice ({v}): a repeated seed retrains the same adapter")
        return v

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
    def ab_comparisons(self) -> list[tuple[str, str]]:
        """The (x, y) arm pairs the A/B judge compares."""
        if self.ab_pairs is not None:
            return [tuple(p.split(":")) for p in self.ab_pairs]
        return [("synth_empathy", y) for y in ("ed", "ed_plus_random") if {"synth_empathy", y} <= set(self.arms)]

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



def readers(name: str) -> list[str]:
    """The stages that read config key `name`."""
    return (Config.model_fields[name].json_schema_extra or {})["reads"]


def keys_read_by(stage: str) -> list[str]:
    return [k for k in Config.model_fields if stage in readers(k)]


class StageConfig:
    """A Config as one stage sees it: reading a key the stage does not declare in `reads` is an error.

    This is what keeps the declarations true: the runner fingerprints a stage with exactly the keys it declares,
    so a key read but not declared would let a changed value go unnoticed. Everything else is the Config's.
    """

    def __init__(self, cfg: Config, stage: str):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_stage", stage)

    def __getattr__(self, name: str) -> Any:
        if name in Config.model_fields and self._stage not in readers(name):
            raise ConfigError(f"stage {self._stage} reads config key '{name}', which config.py declares read only "
                              f"by {', '.join(readers(name))}: add {self._stage} to the key's reads")
        return getattr(self._cfg, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a stage's config is read-only; pass overrides to the runner or open_stage")


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
        elif not e["loc"]:  # a rule across keys: its message names them
            lines.append(f"{origin}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{origin}: key '{key}': {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})")
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
    if not overrides:
        return cfg
    for key in overrides:
        if key not in Config.model_fields:
            raise ConfigError(f"override: unknown key '{key}' (profile {origin})")
    try:  # all at once: keys that must change together (gen_prompt and its aids) can
        return Config(**{**values, **overrides})
    except ValidationError as e:
        named = {k for k in overrides if any((err["loc"] and str(err["loc"][0]) == k) or k in err["msg"] for err in e.errors())}
        shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items() if k in named or not named)
        raise ConfigError(_format_errors(e, f"override {shown} (profile {origin})")) from None


def describe(cfg: Config, stage: str) -> list[dict[str, Any]]:
    """Rows (key, value, meaning) of the keys one stage reads, run-wide ones last, for the notebooks' tables."""
    own = [k for k in keys_read_by(stage) if k not in ALL_KEYS]
    return [{"key": k, "value": getattr(cfg, k), "meaning": Config.model_fields[k].description}
            for k in own + [k for k in ALL_KEYS if k not in NOT_FINGERPRINTED]]
