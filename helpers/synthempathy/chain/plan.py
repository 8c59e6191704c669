"""`python -m synthempathy plan --profile P`: a dry run of a profile, offline and in seconds, that loads no
model and imports no torch. For each stage it says which models are loaded where (in this process on which
device, or at which OpenAI-compatible endpoints), a rough estimate of their memory, and how many requests and
tokens the stage sends; it flags an in-process model (or models held together) that cannot fit its device.

Model sizes, without loading anything (`model_size`): a local folder's config.json (a LoRA adapter folder:
its base model's), else a table of known models (KNOWN, matched on case-insensitive substrings of the spec),
else a size written in the name ("-7b", "135m", with a conservative Llama-like shape), else "unknown size":
reported as unknown, never as not fitting.

Memory of one model in process, in GiB (an estimate, not a measurement):
- weights = params x bytes/param: 2 (bf16) on CUDA, 4 (fp32) on CPU, as lib/models.load_lm and lib/sft load
  them; 0.55 for nf4 (4-bit QLoRA training, `quantization: 4bit`: 4-bit weights, double-quantized scales
  and the embeddings left in 16 bits, averaged). The sentence-transformers embedder counts 4 (fp32).
- inference (generation, M_D's answers, evaluation predictions): + KV cache = layers x 2 x kv_dim x
  (longest prompt + max_new_tokens) x batch x bytes, with kv_dim = kv_heads x head_dim from the
  architecture; the in-process judge adds its full-sequence logits (batch x prompt x vocab x bytes: it reads
  them at the end); the embedder adds batch 64 x 512 tokens x (4 hidden + intermediate) x 4 B of activations.
- LoRA training (M_D, the arms, the sweep): + the adapter (r x (in + out) per linear, 7 linears per layer)
  at 16 B/param (fp32 weight, gradient, two Adam moments) + activations for batch x max_length tokens: with
  gradient checkpointing (CUDA) the layer inputs (layers x hidden x b) and one layer recomputed
  (20 hidden + 3 intermediate) x b per token, without it (CPU) every layer's (16 hidden + 3 intermediate) x b,
  plus the logits and their fp32 loss copies (vocab x 10 B per token on CUDA, 12 B on CPU).
- + 1 GiB on CUDA for the CUDA context and allocator slack.
Models a stage holds together (M_D answering with the embedder; the in-process judge with the embedder in
05_evaluate) are also checked as a sum.

GPUs: where the profile places its parts (`in_process_gpu`, `servers`), the chain's in-process peak of each stage
and each server's share of every GPU it sees are added up per GPU (gpus.py), flagged where they exceed --gpu-gib, and
the launch lines printed, servers first.

Requests and tokens come from the profile and the data sizes: the seed and evaluation records are read when
the data are local (data/seed, a folder or file; for a hub copy of ED, ../shared/ed stands in for its size),
else the caps in the profile, and the plan says which. Prompt tokens are the characters of the prompts the
package builds / 4 (+4 per message of chat template); what exists only after a run (synthetic examples,
predictions) is estimated: a synthetic turn ~40 tokens (the generation prompt asks for <= 30 words), 2k+1
turns per example with k ~ (1 + max_k) / 2. Counts that depend on what a run keeps (parsed examples, D_a)
are upper bounds (<=): one example per generation at most. Reply tokens are upper bounds (max_new_tokens);
the judge answers 1 token. The authors' own texts (gen_prompt / judge_prompt / disc_input: authors) are not
fetched by a dry run: the project's wording of the same prompts stands in for their length.

Over 300 lines because it mirrors every stage's requests and models in one place (and the table of known
models), so that a user sees a whole profile's cost before running any of it.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..lib import arms, sft
from ..lib.dialogue import chat_pairs, generation_messages, prompts
from ..lib.ed import DataError, load_ed, resolve_source, split_available
from ..lib.judging import CRITERIA, judge_messages
from . import gpus
from .config import REPO_ROOT, load_config
from .store import STAGES

GIB = 2**30
SHARED_ED = REPO_ROOT.parent / "shared" / "ed"
NF4_BYTES = 0.55
CUDA_OVERHEAD_GIB = 1.0
SYN_TURN_TOKENS = 40
MSG_TOKENS = 4
AUTHORS_JUDGE_TOKENS = 128  # their sampled judge answers (judging.AUTHORS_SAMPLING), beside the 1-token score


@dataclass(frozen=True)
class Arch:
    params: float
    layers: int
    hidden: int
    kv_dim: int
    intermediate: int
    vocab: int
    source: str = "table"
    encoder: bool = False


# (substrings that must all occur in the lower-cased spec, architecture); the first match wins.
KNOWN: list[tuple[tuple[str, ...], Arch]] = [
    (("smollm2", "135m"), Arch(134.5e6, 30, 576, 192, 1536, 49152)),
    (("smollm2", "360m"), Arch(361.8e6, 32, 960, 320, 2560, 49152)),
    (("smollm2", "1.7b"), Arch(1.71e9, 24, 2048, 2048, 8192, 49152)),
    (("minilm-l6",), Arch(22.7e6, 6, 384, 384, 1536, 30522, encoder=True)),
    (("llama-3", "70b"), Arch(70.6e9, 80, 8192, 1024, 28672, 128256)),
    (("llama-3", "8b"), Arch(8.03e9, 32, 4096, 1024, 14336, 128256)),
    (("llama-3.2", "3b"), Arch(3.21e9, 28, 3072, 1024, 8192, 128256)),
    (("llama-3.2", "1b"), Arch(1.24e9, 16, 2048, 512, 8192, 128256)),
    (("llama-2", "70b"), Arch(69.0e9, 80, 8192, 1024, 28672, 32000)),
    (("llama-2", "13b"), Arch(13.0e9, 40, 5120, 5120, 13824, 32000)),
    (("llama-2", "7b"), Arch(6.74e9, 32, 4096, 4096, 11008, 32000)),
    (("mistral", "7b"), Arch(7.24e9, 32, 4096, 1024, 14336, 32768)),
    (("gte-qwen2", "7b"), Arch(7.61e9, 28, 3584, 512, 18944, 151646, encoder=True)),
    (("qwen2", "7b"), Arch(7.62e9, 28, 3584, 512, 18944, 152064)),
]
ENCODER_HINTS = ("minilm", "gte-", "bge-", "e5-", "mpnet", "sentence-transformers/")


def model_size(spec: str) -> Arch | None:
    """The architecture of a model spec without loading it, or None (unknown size)."""
    path = Path(spec).expanduser()
    if not spec.startswith("packaged:") and path.is_dir():
        if (path / "adapter_config.json").exists():
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
            return model_size(base) if base else None
        if (path / "config.json").exists():
            return _from_config(json.loads((path / "config.json").read_text()))
    low = spec.lower()
    for needles, arch in KNOWN:
        if all(n in low for n in needles):
            return arch
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)([bm])(?![a-z])", low)
    if m:  # a size in the name: a Llama-like shape of that size, no grouped KV heads (conservative)
        params = float(m.group(1)) * (1e9 if m.group(2) == "b" else 1e6)
        layers = 32 if params > 2e9 else 24
        hidden = int(math.sqrt(params / (12 * layers)))
        return Arch(
            params,
            layers,
            hidden,
            hidden,
            4 * hidden,
            32000,
            "name",
            encoder=any(h in low for h in ENCODER_HINTS),
        )
    return None


def _from_config(c: dict) -> Arch:
    c = c.get("text_config", c)
    hidden, layers = c.get("hidden_size") or c.get("d_model"), c.get("num_hidden_layers") or c.get("n_layer")
    heads = c.get("num_attention_heads") or 1
    head_dim = c.get("head_dim") or hidden // heads
    kv_dim = (c.get("num_key_value_heads") or heads) * head_dim
    inter, vocab = c.get("intermediate_size") or 4 * hidden, c.get("vocab_size") or 32000
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv_dim + 3 * hidden * inter
    params = layers * per_layer + vocab * hidden * (1 if c.get("tie_word_embeddings", True) else 2)
    encoder = not any("CausalLM" in a for a in c.get("architectures") or [])
    return Arch(params, layers, hidden, kv_dim, inter, vocab, "config.json", encoder)


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, asked of the driver (no torch)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


# -- memory -------------------------------------------------------------------------------------------------


def _inference_parts(a: Arch, b: float, batch: int, seq: int, logits_seq: int = 0) -> dict:
    parts = {"KV cache": a.layers * 2 * a.kv_dim * seq * batch * b}
    if logits_seq:
        parts["logits"] = batch * logits_seq * a.vocab * b
    return parts


def _training_parts(a: Arch, b: float, batch: int, seq: int, r: int, checkpointing: bool) -> dict:
    lora = a.layers * r * (4 * (a.hidden + a.hidden) + 3 * (a.hidden + a.intermediate))
    tokens = batch * seq
    if checkpointing:
        acts = tokens * (a.layers * a.hidden + 20 * a.hidden + 3 * a.intermediate) * b
    else:
        acts = tokens * a.layers * (16 * a.hidden + 3 * a.intermediate) * b
    return {"adapter+optimizer": lora * 16, "activations": acts, "logits+loss": tokens * a.vocab * (b + 8)}


def _estimate(
    arch: Arch | None, device: str, mode: str, cfg, batch: int = 1, seq: int = 0, logits_seq: int = 0
) -> tuple[float | None, dict]:
    """(GiB, parts in GiB) of one model in process; mode: infer | train | embed."""
    if arch is None:
        return None, {}
    b = 2 if device == "cuda" else 4
    wb = 4 if mode == "embed" else NF4_BYTES if mode == "train" and cfg.quantization == "4bit" else b
    parts = {f"weights ({wb:g} B/param)": arch.params * wb}
    if mode == "train":
        parts.update(
            _training_parts(arch, b, cfg.train_batch_size, cfg.max_length, cfg.lora_r, device == "cuda")
        )
    elif mode == "embed":
        parts["activations"] = 64 * 512 * (4 * arch.hidden + arch.intermediate) * 4
    else:
        parts.update(_inference_parts(arch, b, batch, seq, logits_seq))
    parts = {k: v / GIB for k, v in parts.items()}
    if device == "cuda":
        parts["CUDA context"] = CUDA_OVERHEAD_GIB
    return sum(parts.values()), parts


# -- data and prompts --------------------------------------------------------------------------------


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def chat_tokens(messages) -> int:
    return sum(tokens(c) + MSG_TOKENS for _, c in messages) + MSG_TOKENS


def _ed_stand_in(cfg) -> bool:
    """A hub copy of ED (and that profile's eval_source) is sized by the local copy of the same corpus."""
    return (
        cfg.data_source.startswith("hf:") and "empathetic" in cfg.data_source.lower() and SHARED_ED.is_dir()
    )


def _read(source: str, split: str, cfg, what: str) -> tuple[list | None, str]:
    src = resolve_source(source)
    stand_in = f"{source} is not read offline; ED from {SHARED_ED} stands in for its size"
    if isinstance(src, str) or not src.exists():
        if not _ed_stand_in(cfg):
            return (
                None,
                f"{source}: {'a hub data set, not read offline' if isinstance(src, str) else 'absent'}",
            )
        src, note = (
            SHARED_ED,
            stand_in if isinstance(src, str) else f"{source} absent; {stand_in.split('; ')[1]}",
        )
        split = split if split_available(src, split) else "valid"
        return [r.to_dict() for r in load_ed(src, split)], f"{note} ({split} split)"
    split = split if split_available(src, split) else "valid"
    try:
        return [r.to_dict() for r in load_ed(src, split)], f"{source} ({split} split)"
    except (DataError, OSError) as e:
        return None, f"{source}: unreadable ({e})"


def _capped(
    records: list | None, note: str, cap: int | None, key: str
) -> tuple[list | None, int | None, str]:
    if records is None:
        return None, cap, note + (f"; the cap {key}={cap} is used" if cap else "; size unknown")
    if cap and cap < len(records):
        return records[:cap], cap, f"first {cap} of {len(records)} records of {note} ({key})"
    return records, len(records), f"{len(records)} records of {note}"


def _mean(xs: list[int], default: int) -> int:
    return round(sum(xs) / len(xs)) if xs else default


# -- where models go --------------------------------------------------------------------------------


@dataclass
class Placement:
    """Where a profile's in-process models go and how much memory each device has; collects the warnings met
    while sizing them."""

    cfg: Any
    device: str  # "cuda" or "cpu", `device: auto` resolved
    device_note: str  # the device as the plan prints it, with how `auto` was resolved
    limits: dict[str, float]  # GiB per device
    warnings: list[str] = field(default_factory=list)

    @property
    def in_process(self) -> str:
        gpu = self.cfg.in_process_gpu
        return f"in process ({self.device}{'' if gpu is None or self.device != 'cuda' else f', GPU {gpu}'})"

    def where(self, endpoints: list[str]) -> str:
        return ", ".join(endpoints) if endpoints else self.in_process

    def model(self, role, spec, endpoints, mode="infer", batch=1, seq=0, logits_seq=0) -> dict:
        """One model of a stage: its size, and at endpoints (the server's memory) or in process with an
        estimate of its memory and whether that fits the device."""
        arch = model_size(spec)
        row = {
            "role": role,
            "model": spec,
            "params": arch.params if arch else None,
            "size_from": arch.source if arch else "unknown",
        }
        if endpoints:
            return {
                **row,
                "where": "endpoints " + ", ".join(endpoints),
                "device": None,
                "estimate_gib": None,
                "parts": {},
                "fits": None,
            }
        gib, parts = _estimate(arch, self.device, mode, self.cfg, batch, seq, logits_seq)
        if arch is None:
            self.warnings.append(
                f"{role} {spec}: unknown size (not in the table, no config.json, no size in the name): "
                "its memory is not estimated"
            )
        return {
            **row,
            "where": self.in_process,
            "device": self.device,
            "estimate_gib": gib,
            "parts": parts,
            "fits": None if gib is None else gib <= self.limits[self.device],
        }


def placement(cfg, gpu_gib: float, cpu_gib: float | None, gpu: bool | None) -> Placement:
    """The device in-process models go to (`device: auto`: cuda when a GPU is present), the memory limits, and
    a warning when the profile asks for cuda of a machine that shows no NVIDIA GPU."""
    if cpu_gib is None:
        import psutil

        cpu_gib = psutil.virtual_memory().total / GIB
    gpu = gpu_present() if gpu is None else gpu
    device = cfg.device if cfg.device != "auto" else ("cuda" if gpu else "cpu")
    seen = "an NVIDIA GPU is" if gpu else "no NVIDIA GPU"
    note = (
        f"auto -> {device} ({seen} seen here; cuda if present else cpu)" if cfg.device == "auto" else device
    )
    place = Placement(cfg, device, note, {"cuda": float(gpu_gib), "cpu": float(cpu_gib)})
    if device == "cuda" and not gpu:
        place.warnings.append(
            f"the profile asks for cuda and this machine shows no NVIDIA GPU: estimates are for a GPU of "
            f"{gpu_gib:g} GiB (--gpu-gib)"
        )
    return place


# -- what the stages share ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """The records a dry run sizes a profile by (None where not read here), their counts (None: unknown) and
    where they came from."""

    train: list | None
    n_train: int | None
    train_note: str
    evals: list | None
    n_eval: int | None
    eval_note: str
    seeds: list | None  # the training records generation starts from
    n_seeds: int | None


def read_data(cfg) -> Data:
    """The training and evaluation records as the profile caps them, and the seeds generation uses."""
    train, n_train, train_note = _capped(
        *_read(cfg.data_source, cfg.train_split, cfg, "train"), cfg.max_seed_records, "max_seed_records"
    )
    evals, n_eval, eval_note = _capped(
        *_read(cfg.eval_source or cfg.data_source, cfg.eval_split, cfg, "eval"),
        cfg.max_eval_records,
        "max_eval_records",
    )
    seeds = train[: cfg.gen_max_seeds] if train is not None and cfg.gen_max_seeds else train
    n_seeds = (
        len(seeds)
        if seeds is not None
        else (min(x for x in (n_train, cfg.gen_max_seeds) if x) if (n_train or cfg.gen_max_seeds) else None)
    )
    return Data(train, n_train, train_note, evals, n_eval, eval_note, seeds, n_seeds)


@dataclass(frozen=True)
class Shared:
    """What several stages' estimates build on: how many synthetic examples there are at most, their token
    length and an ED training example's, the judge's prompt template and batch."""

    n_ex: int | None  # synthetic examples, an upper bound: one per generation
    syn_hist: int  # tokens of a synthetic history (2k+1 turns)
    ed_tok: int  # tokens of an ED training example, as the trainer cuts it
    judge_tmpl: int  # tokens of the judge's longest template, without the history and reply
    judge_batch: int
    authors_judge: bool  # judge_prompt authors: the judge also samples an answer


def shared_estimates(cfg, data: Data) -> Shared:
    turns = 2 * (1 + cfg.max_k) / 2 + 1  # an example is k earlier rounds and the speaker's next turn
    syn_hist = round(turns * (SYN_TURN_TOKENS + MSG_TOKENS))
    system = prompts()["system"]
    ed_ex = [
        min(cfg.max_length, chat_tokens(chat_pairs(r["history"], system)) + tokens(r["response"]))
        for r in data.train or []
    ]
    templates = [
        chat_tokens([(m["role"], m["content"]) for m in judge_messages([], "", c)]) for c in CRITERIA
    ]
    authors_judge = cfg.judge_prompt == "authors"
    # the authors' judge samples an answer in generation's batches
    judge_batch = max(cfg.judge_batch_size, cfg.gen_batch_size) if authors_judge else cfg.judge_batch_size
    return Shared(
        n_ex=mul(data.n_seeds, cfg.passes),
        syn_hist=syn_hist,
        ed_tok=_mean(ed_ex, syn_hist),
        judge_tmpl=max(templates),
        judge_batch=judge_batch,
        authors_judge=authors_judge,
    )


def mul(*xs):
    """The product, or None (unknown) when a factor is."""
    return None if any(x is None for x in xs) else math.prod(xs)


def req(what, count, where, tin, tout, note="") -> dict:
    """One kind of request a stage sends: how many, where to, tokens in and out (None: unknown or none)."""
    return {"what": what, "count": count, "where": where, "tokens_in": tin, "tokens_out": tout, "note": note}


def stage_row(stage: str, models: list, requests: list, notes=(), together=()) -> dict:
    return {
        "stage": stage,
        "models": models,
        "requests": requests,
        "notes": list(notes),
        "together": list(together),
    }


def training_steps(cfg, records: int | None) -> int | None:
    """Optimizer steps of one training on `records` examples (max_steps, when set, wins)."""
    return cfg.max_steps or (
        math.ceil(cfg.epochs * math.ceil(records / cfg.train_batch_size)) if records else None
    )


def judge_model(place: Placement, sh: Shared, seq: int) -> dict:
    """The judge over prompts up to `seq` tokens; in process it also holds their full-sequence logits."""
    cfg = place.cfg
    return place.model(
        "judge", cfg.judge_model, cfg.judge_endpoints, batch=sh.judge_batch, seq=seq, logits_seq=seq
    )


def judge_requests(place: Placement, sh: Shared, items, hist_tokens, reply_tokens, label) -> list[dict]:
    """The judge's score requests for `items` replies, 3 criteria each (and with judge_prompt authors, their
    sampled answers beside the score)."""
    n = mul(items, len(CRITERIA))
    where = place.where(place.cfg.judge_endpoints)
    tokens_in = mul(n, sh.judge_tmpl + hist_tokens + reply_tokens)
    out = [req("judge scores", n, where, tokens_in, n, f"{label}, x 3 criteria, 1 token each")]
    if sh.authors_judge:
        out.append(
            req(
                "judge sampled answers",
                n,
                where,
                tokens_in,
                mul(n, AUTHORS_JUDGE_TOKENS),
                "judge_prompt authors: their sampled text, beside the score",
            )
        )
    return out


# -- the stages --------------------------------------------------------------------------------------


def data_stage(data: Data) -> dict:
    return stage_row("00_data", [], [], notes=[f"train: {data.train_note}", f"eval: {data.eval_note}"])


def generate_stage(place: Placement, data: Data, sh: Shared) -> dict:
    """01_generate: one generation per seed and pass."""
    cfg = place.cfg
    prompts_tokens = [
        chat_tokens(generation_messages(r["history"], r["response"], format_example=cfg.format_example))
        for r in data.seeds or []
    ]
    if not prompts_tokens:  # no seed text here: the instruction around a 3-turn seed
        turn = "x" * 4 * SYN_TURN_TOKENS
        one = chat_tokens(generation_messages([turn] * 2, turn, format_example=cfg.format_example))
        prompts_tokens = [one] * (data.n_seeds or 0)
    endpoints = cfg.gen_endpoints if cfg.gen_backend == "openai" else []
    generator = place.model(
        "generator",
        cfg.generator_model,
        endpoints,
        batch=cfg.gen_batch_size,
        seq=max(prompts_tokens, default=600) + cfg.gen_max_new_tokens,
    )
    generations = req(
        "generations",
        sh.n_ex,
        place.where(endpoints),
        mul(sum(prompts_tokens), cfg.passes) if prompts_tokens else None,
        mul(sh.n_ex, cfg.gen_max_new_tokens),
        f"{_q(data.n_seeds)} seeds x {cfg.passes} passes",
    )
    return stage_row("01_generate", [generator], [generations])


def quality_stage(place: Placement, data: Data, sh: Shared) -> dict:
    """02_quality: M_D (trained on ED unless a checkpoint is given) answers every example, held with the
    embedder; the judge scores the examples and the sanity pairs."""
    cfg, n_train = place.cfg, data.n_train
    judge_seq = (
        sh.judge_tmpl + sh.syn_hist + 2 * SYN_TURN_TOKENS + (AUTHORS_JUDGE_TOKENS if sh.authors_judge else 0)
    )
    # sized first, so that its warning (an unknown size) comes first, as the plan has always listed them
    judge = judge_model(place, sh, judge_seq)
    models, requests = [], []
    if not cfg.disc_checkpoint:  # M_D is trained here on ED
        models.append(place.model("M_D training", cfg.base_model, [], mode="train"))
        requests.append(md_training(place, data, sh))
    disc_in = sh.syn_hist + tokens(prompts()["system"]) + 2 * MSG_TOKENS
    models += [
        place.model(
            "M_D answering",
            cfg.disc_checkpoint or cfg.base_model,
            cfg.disc_endpoints,
            batch=cfg.gen_batch_size,
            seq=disc_in + cfg.disc_max_new_tokens,
        ),
        place.model("embedder", cfg.embedder, [], mode="embed"),
        judge,
    ]
    requests += [
        req(
            "M_D answers",
            sh.n_ex,
            place.where(cfg.disc_endpoints),
            mul(sh.n_ex, disc_in),
            mul(sh.n_ex, cfg.disc_max_new_tokens),
            "<= one per generation (parsed examples)",
        ),
        req("embeddings", mul(sh.n_ex, 2), place.where([]), None, None, "synthetic replies and M_D's"),
    ]
    n_sanity = 2 * min(cfg.sanity_pairs, n_train) if n_train else None
    items = None if sh.n_ex is None or n_sanity is None else sh.n_ex + n_sanity
    requests += judge_requests(
        place,
        sh,
        items,
        sh.syn_hist,
        SYN_TURN_TOKENS,
        f"<= {_q(sh.n_ex)} examples + {_q(n_sanity)} sanity pairs",
    )
    return stage_row("02_quality", models, requests, together=[["M_D answering", "embedder"]])


def md_training(place: Placement, data: Data, sh: Shared) -> dict:
    """The training steps of M_D, the discriminator, on the ED records."""
    cfg, n_train = place.cfg, data.n_train
    return req(
        "M_D training steps",
        training_steps(cfg, n_train),
        place.where([]),
        mul(n_train, sh.ed_tok, cfg.epochs),
        None,
        f"{_q(n_train)} ED records, batch {cfg.train_batch_size}, {cfg.epochs:g} epoch(s)",
    )


def diversity_stage(place: Placement, data: Data, sh: Shared) -> dict:
    """03_diversity: the embeddings of the examples and the seeds (cached from 02)."""
    n = None if sh.n_ex is None or data.n_train is None else sh.n_ex + data.n_train
    embedder = place.model("embedder", place.cfg.embedder, [], mode="embed")
    return stage_row(
        "03_diversity",
        [embedder],
        [req("embeddings", n, place.where([]), None, None, "<= synthetic examples + seeds (cached from 02)")],
    )


def finetune_stage(place: Placement, data: Data, sh: Shared) -> dict:
    """04_finetune: one LoRA adapter per arm and sweep run, per training seed, one at a time."""
    cfg = place.cfg
    sweep = arms.sweep_runs(cfg)
    seeds = len(cfg.train_seeds)
    n_adapters = (len(cfg.arms) + len(sweep)) * seeds
    requests = [arm_training(place, data, sh, name) for name in [*cfg.arms, *(s[0] for s in sweep)]]
    adapters = place.model(f"{n_adapters} LoRA adapters (one at a time)", cfg.base_model, [], mode="train")
    return stage_row(
        "04_finetune",
        [adapters],
        requests,
        notes=[
            f"{len(cfg.arms)} arms x {seeds} seeds + {len(sweep)} sweep runs x {seeds} seeds "
            f"= {n_adapters} adapters"
        ],
    )


def arm_training(place: Placement, data: Data, sh: Shared, name: str) -> dict:
    """The training steps of one arm (or sweep run) over every seed: ED plus, but for `ed`, the synthetic
    examples it keeps (at most all of them)."""
    cfg, n_train = place.cfg, data.n_train
    syn = 0 if name == "ed" else None if name == "authors_data" else sh.n_ex  # their file's size: unknown here
    known = n_train is not None and syn is not None
    steps = training_steps(cfg, n_train + syn if known else None)
    tokens_in = n_train * sh.ed_tok + syn * (sh.syn_hist + SYN_TURN_TOKENS) if known else None
    bound = "" if name == "ed" else "<= "
    seeds = len(cfg.train_seeds)
    return req(
        f"{name} steps",
        mul(steps, seeds),
        place.where([]),
        mul(tokens_in, cfg.epochs, seeds),
        None,
        f"{seeds} seed(s) x {bound}{_q(steps)} steps on {_q(n_train)} ED + {bound}{_q(syn)} synthetic",
    )


def evaluate_stage(place: Placement, data: Data, sh: Shared) -> dict:
    """05_evaluate: predictions of the base, every arm and sweep run on the evaluation records, their
    embeddings, the judge's scores (the sweep not judged) and the A/B judge's verdicts."""
    cfg, n_eval = place.cfg, data.n_eval
    endpoints = list(getattr(cfg, "eval_endpoints", []) or [])
    prompts_tokens = [chat_tokens(chat_pairs(r["history"], *sft.arm_input(cfg))) for r in data.evals or []]
    prompt_in = _mean(prompts_tokens, sh.syn_hist)
    longest = max(prompts_tokens, default=prompt_in)
    hist = _mean([tokens("\n".join(r["history"])) for r in data.evals or []], sh.syn_hist)
    reply = min(cfg.eval_max_new_tokens, 2 * SYN_TURN_TOKENS)
    judged = 1 + len(cfg.arms) * len(cfg.train_seeds)
    judge_seq = sh.judge_tmpl + longest + 2 * cfg.eval_max_new_tokens
    models = [
        place.model(
            "predictions",
            cfg.base_model,
            endpoints,
            batch=cfg.gen_batch_size,
            seq=longest + cfg.eval_max_new_tokens,
        ),
        place.model("embedder", cfg.embedder, [], mode="embed"),
        judge_model(place, sh, judge_seq),
    ]
    requests = [
        *prediction_requests(place, endpoints, n_eval, prompt_in, judged),
        *judge_requests(
            place,
            sh,
            mul(judged, n_eval),
            hist,
            reply,
            f"{judged} models x {_q(n_eval)} records; sweep not judged",
        ),
        ab_judge_request(place, sh, n_eval, hist, reply),
    ]
    return stage_row("05_evaluate", models, requests, together=[["embedder", "judge"]])


def prediction_requests(
    place: Placement, endpoints: list[str], n_eval, prompt_in: int, judged: int
) -> list[dict]:
    """The predictions of the base, every arm and every sweep run, and their embeddings (and the golds')."""
    cfg = place.cfg
    sweep_models = len(arms.sweep_runs(cfg)) * len(cfg.train_seeds)
    n_pred = mul(judged + sweep_models, n_eval)
    how = "" if endpoints else f"; each adapter merged into the base in turn, batch {cfg.gen_batch_size}"
    return [
        req(
            "predictions",
            n_pred,
            place.where(endpoints) + (" (LoRA modules <arm>.seed-<s>)" if endpoints else ""),
            mul(n_pred, prompt_in),
            mul(n_pred, cfg.eval_max_new_tokens),
            f"(base + {len(cfg.arms)} arms x {len(cfg.train_seeds)} seeds + {sweep_models} sweep) x "
            f"{_q(n_eval)} records" + how,
        ),
        req("embeddings", mul(n_pred, 2), place.where([]), None, None, "predictions and golds"),
    ]


def ab_judge_request(place: Placement, sh: Shared, n_eval, hist: int, reply: int) -> dict:
    """The A/B judge: each compared pair of arms, per seed, on ab_records histories, in both orders."""
    cfg = place.cfg
    ab_n = min(x for x in (cfg.ab_records, n_eval) if x) if (cfg.ab_records or n_eval) else None
    n_ab = mul(len(cfg.ab_comparisons), len(cfg.train_seeds), ab_n, 2, len(CRITERIA))
    return req(
        "A/B judge",
        n_ab,
        place.where(cfg.judge_endpoints),
        mul(n_ab, sh.judge_tmpl + hist + 2 * reply),
        n_ab,
        f"{len(cfg.ab_comparisons)} pairs x {len(cfg.train_seeds)} seeds x {_q(ab_n)} records x 2 orders "
        "x 3 criteria (<=: identical replies are not asked)",
    )


# -- the plan ----------------------------------------------------------------------------------------


def plan(
    cfg, gpu_gib: float = 80, cpu_gib: float | None = None, gpu: bool | None = None, params: list[str] | None = None
) -> dict:
    """The dry run of a profile: {"profile", "device", "limits", "data", "stages": [...], "gpus", "warnings"}.

    `gpu` says whether a GPU is present for `device: auto` (None: ask the driver). Each stage has "models"
    (role, spec, where, device, params, estimate_gib, parts, fits) and "requests" (what, count, where,
    tokens_in, tokens_out, note), and "together" (role groups held at once). "gpus" is the placement
    (gpu_placement); `params` are the overrides the launch lines pass on to `run`."""
    place = placement(cfg, gpu_gib, cpu_gib, gpu)
    data = read_data(cfg)
    sh = shared_estimates(cfg, data)
    stages = [
        data_stage(data),
        generate_stage(place, data, sh),
        quality_stage(place, data, sh),
        diversity_stage(place, data, sh),
        finetune_stage(place, data, sh),
        evaluate_stage(place, data, sh),
    ]
    placed = gpu_placement(place, stages, params or [])
    return {
        "profile": cfg.profile,
        "device": place.device_note,
        "limits": place.limits,
        "stages": stages,
        "gpus": placed,
        "warnings": list(dict.fromkeys(place.warnings + placed["notes"])),
        "data": {"train": data.n_train, "seeds": data.n_seeds, "eval": data.n_eval},
    }


def in_process_peak(st: dict) -> tuple[float, str]:
    """The most a stage holds on the GPU in process at once, (GiB, which models): its largest model, or a group
    it holds together (one CUDA context between them)."""
    cuda = [m for m in st["models"] if m["device"] == "cuda" and m["estimate_gib"]]
    options = [(m["estimate_gib"], m["role"]) for m in cuda]
    for group in st["together"]:
        held = [m for m in cuda if m["role"] in group]
        if len(held) > 1:
            options.append((held_total(held), " + ".join(m["role"] for m in held)))
    return max(options, default=(0.0, ""))


def held_total(held: list[dict]) -> float:
    """GiB of models one process holds together: their estimates, with the CUDA context counted once."""
    return sum(m["estimate_gib"] for m in held) - CUDA_OVERHEAD_GIB * (len(held) - 1) * (held[0]["device"] == "cuda")


def gpu_placement(place: Placement, stages: list[dict], params: list[str]) -> dict:
    """Which GPUs the servers and the chain's process use, what each GPU holds per stage (gpus.py adds it up),
    each server's weights per GPU, and the launch lines; empty when the profile places nothing on a GPU."""
    cfg, gpu_gib = place.cfg, place.limits["cuda"]
    found = gpus.servers(cfg)
    notes = gpus.unplaced(cfg)
    chain_gpu = cfg.in_process_gpu
    if chain_gpu is None and found and place.device == "cuda":
        chain_gpu = 0
        notes.append("in_process_gpu is not set: the chain's models are counted on GPU 0, the first its "
                     "environment shows")
    peaks = {st["stage"]: in_process_peak(st) for st in stages} if place.device == "cuda" else {}
    use = gpus.gpu_use(found, gpu_gib, chain_gpu, peaks) if found or cfg.in_process_gpu is not None else {}
    weights = {}
    for s in found:
        arch = model_size(s["models"][0])
        weights[s["url"]] = arch.params * 2 / len(s["gpus"]) / GIB if arch else None
    run_args = "".join(f" -p {shlex.quote(p)}" for p in params)
    return {
        "gpu_gib": gpu_gib, "servers": found, "chain_gpu": chain_gpu, "use": use, "weights": weights,
        "launch": gpus.launch_lines(cfg, found, run_args) if found else [], "notes": notes,
        "shared": gpus.shared_notes(use, found, chain_gpu, gpu_gib),
    }


def flags(plan_dict: dict) -> list[str]:
    """One message per in-process model (or group held together) whose estimate exceeds its device's
    memory, per GPU that the servers and the chain together would overfill, and per server that cannot work."""
    out = []
    limits = plan_dict["limits"]
    for st in plan_dict["stages"]:
        for m in st["models"]:
            if m["fits"] is False:
                out.append(
                    f"{st['stage']}: {m['role']} {m['model']} in process on {m['device']} needs ~"
                    f"{m['estimate_gib']:.1f} GiB (estimate), more than the {limits[m['device']]:g} GiB "
                    "of the "
                    f"{'GPU (--gpu-gib)' if m['device'] == 'cuda' else 'CPU memory (--cpu-gib)'}"
                )
        for group in st["together"]:
            held = [m for m in st["models"] if m["role"] in group and m["device"] and m["estimate_gib"]]
            if len(held) < 2 or any(m["fits"] is False for m in held):
                continue
            total = held_total(held)
            if total > limits[held[0]["device"]]:
                out.append(
                    f"{st['stage']}: {' + '.join(m['role'] + ' ' + m['model'] for m in held)} "
                    "are held together "
                    f"on {held[0]['device']}: ~{total:.1f} GiB (estimate) > {limits[held[0]['device']]:g} GiB"
                )
    placed = plan_dict["gpus"]
    out += gpus.overcommitted(placed["use"], placed["gpu_gib"])
    return out + gpus.server_flags(placed["servers"], placed["gpu_gib"], placed["weights"])


def _q(x) -> str:
    return "?" if x is None else str(x)


def _num(x, unit: str = "") -> str:
    if x is None:
        return "?"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:g}{unit}"


def render(plan_dict: dict) -> str:
    """The plan as a readable table per stage, then the flags and warnings."""
    lim = plan_dict["limits"]
    lines = [
        f"plan for profile {plan_dict['profile']}: device {plan_dict['device']}; "
        f"limits GPU {lim['cuda']:g} GiB, "
        f"CPU {lim['cpu']:.0f} GiB",
        "memory is an estimate (synthempathy/chain/plan.py says how); <= marks an upper bound; tok = tokens",
    ]
    for st in plan_dict["stages"]:
        lines += ["", st["stage"]]
        lines += [f"  {n}" for n in st["notes"]]
        for m in st["models"]:
            size = "unknown size" if m["params"] is None else f"{_num(m['params'])} params"
            lines.append(f"  model  {m['role']}: {m['model']} [{size}]")
            if m["device"] is None:
                mem = "memory: the server's"
            elif m["estimate_gib"] is None:
                mem = "memory: unknown (unknown size)"
            else:
                parts = " + ".join(f"{k} {v:.2f}" for k, v in m["parts"].items())
                mem = f"~{m['estimate_gib']:.1f} GiB = {parts}   {'ok' if m['fits'] else 'DOES NOT FIT'}"
            lines.append(f"           {m['where']}: {mem}")
        if st["requests"]:
            lines.append(f"  {'sends':<24} {'count':>8} {'tok in':>9} {'tok out':>10}  to / what")
        for r in st["requests"]:
            tin = "" if r["tokens_in"] is None and r["tokens_out"] is None else "~" + _num(r["tokens_in"])
            tout = "" if r["tokens_out"] is None else "<= " + _num(r["tokens_out"])
            lines.append(
                f"  {r['what']:<24} {_num(r['count']):>8} {tin:>9} {tout:>10}  {r['where']}: {r['note']}"
            )
    lines += render_gpus(plan_dict["gpus"])
    found = flags(plan_dict)
    placed = " and every GPU its parts" if plan_dict["gpus"]["use"] else ""
    lines += [
        "",
        "flags:" if found else f"flags: none (every in-process model fits its device{placed}, by this estimate)",
    ]
    lines += [f"  ! {f}" for f in found] + [f"  note: {w}" for w in plan_dict["warnings"]]
    if plan_dict["gpus"]["launch"]:
        lines += ["", "launch, from the repo root (servers first, each waited for; then the chain):"]
        lines += [f"  {line}" for line in plan_dict["gpus"]["launch"]]
    return "\n".join(lines)


def render_gpus(placed: dict) -> list[str]:
    """The servers and the chain's GPU, then the GiB each GPU holds in each stage (none when nothing is placed)."""
    if not placed["use"]:
        return []
    gib = placed["gpu_gib"]
    lines = ["", "GPUs: a server holds its share of every GPU it sees, from its start; the chain, its stage's peak"]
    for s in placed["servers"]:
        w = placed["weights"][s["url"]]
        up = "from the start" if s["stages"][0] != STAGES[-1] else "for 05_evaluate, started after 04_finetune"
        lines.append(
            f"  server {s['url']} on GPU{'s' if len(s['gpus']) > 1 else ''} {','.join(map(str, s['gpus']))}, "
            f"{s['utilization']:g} x {gib:g} = {s['utilization'] * gib:.1f} GiB each; {' and '.join(s['models'])} "
            f"for {', '.join(s['roles'])}; weights ~{_q(w and round(w, 1))} GiB per GPU; up {up}"
        )
    if placed["chain_gpu"] is not None:
        lines.append(f"  the chain's own models on GPU {placed['chain_gpu']} (in_process_gpu)")
    ids = sorted({g for held in placed["use"].values() for g in held})
    lines.append(f"  {'GiB held':<14}" + "".join(f"{'GPU ' + str(g):>8}" for g in ids))
    for stage, held in placed["use"].items():
        cells = [sum(x for _, x in held[g]) if g in held else None for g in ids]
        lines.append(f"  {stage:<14}" + "".join(f"{'-' if c is None else f'{c:.1f}':>8}" for c in cells))
    return lines + [f"  note: {n}" for n in placed["shared"]]


def command(
    profile: str = "tiny",
    params: list[str] | None = None,
    gpu_gib: float = 80,
    cpu_gib: float | None = None,
    echo=print,
) -> int:
    """The CLI: print the plan of a profile; 1 when something is flagged as not fitting, else 0."""
    p = plan(load_config(profile, params or []), gpu_gib, cpu_gib, params=params)
    echo(render(p))
    return 1 if flags(p) else 0
