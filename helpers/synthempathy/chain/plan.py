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
from dataclasses import dataclass
from pathlib import Path

from ..lib import arms, sft
from ..lib.dialogue import chat_pairs, generation_messages, prompts
from ..lib.ed import DataError, load_ed, resolve_source, split_available
from ..lib.judging import CRITERIA, judge_messages
from .config import REPO_ROOT, load_config

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


# -- the plan ----------------------------------------------------------------------------------------


def plan(cfg, gpu_gib: float = 80, cpu_gib: float | None = None, gpu: bool | None = None) -> dict:
    """The dry run of a profile: {"profile", "device", "limits", "data", "stages": [...], "warnings"}.

    `gpu` says whether a GPU is present for `device: auto` (None: ask the driver). Each stage has "models"
    (role,
    spec, where, device, params, estimate_gib, parts, fits) and "requests" (what, count, where, tokens_in,
    tokens_out, note), and "together" (role groups held at once)."""
    if cpu_gib is None:
        import psutil

        cpu_gib = psutil.virtual_memory().total / GIB
    gpu = gpu_present() if gpu is None else gpu
    device = cfg.device if cfg.device != "auto" else ("cuda" if gpu else "cpu")
    device_note = (
        f"auto -> {device} ({'an NVIDIA GPU is' if gpu else 'no NVIDIA GPU'} seen here; cuda if present "
        "else cpu)"
        if cfg.device == "auto"
        else device
    )
    limits = {"cuda": float(gpu_gib), "cpu": float(cpu_gib)}
    warnings: list[str] = []
    if device == "cuda" and not gpu:
        warnings.append(
            f"the profile asks for cuda and this machine shows no NVIDIA GPU: estimates are for a GPU of "
            f"{gpu_gib:g} GiB (--gpu-gib)"
        )

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
    system = prompts()["system"]

    def model(role, spec, endpoints, mode="infer", batch=1, seq=0, logits_seq=0):
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
        gib, parts = _estimate(arch, device, mode, cfg, batch, seq, logits_seq)
        if arch is None:
            warnings.append(
                f"{role} {spec}: unknown size (not in the table, no config.json, no size in the name): "
                "its memory is not estimated"
            )
        return {
            **row,
            "where": f"in process ({device})",
            "device": device,
            "estimate_gib": gib,
            "parts": parts,
            "fits": None if gib is None else gib <= limits[device],
        }

    def req(what, count, where, tin, tout, note=""):
        return {
            "what": what,
            "count": count,
            "where": where,
            "tokens_in": tin,
            "tokens_out": tout,
            "note": note,
        }

    def where(endpoints):
        return ", ".join(endpoints) if endpoints else f"in process ({device})"

    def mul(*xs):
        return None if any(x is None for x in xs) else math.prod(xs)

    stages = [
        {
            "stage": "00_data",
            "models": [],
            "requests": [],
            "together": [],
            "notes": [f"train: {train_note}", f"eval: {eval_note}"],
        }
    ]

    # 01_generate
    gen_prompts = [
        chat_tokens(generation_messages(r["history"], r["response"], format_example=cfg.format_example))
        for r in seeds or []
    ]
    if not gen_prompts:  # no seed text here: the instruction around a 3-turn seed
        gen_prompts = [
            chat_tokens(
                generation_messages(
                    ["x" * 4 * SYN_TURN_TOKENS] * 2,
                    "x" * 4 * SYN_TURN_TOKENS,
                    format_example=cfg.format_example,
                )
            )
        ] * (n_seeds or 0)
    n_gen = mul(n_seeds, cfg.passes)
    gen_ep = cfg.gen_endpoints if cfg.gen_backend == "openai" else []
    gen_where = where(gen_ep)
    stages.append(
        {
            "stage": "01_generate",
            "together": [],
            "notes": [],
            "models": [
                model(
                    "generator",
                    cfg.generator_model,
                    gen_ep,
                    batch=cfg.gen_batch_size,
                    seq=max(gen_prompts, default=600) + cfg.gen_max_new_tokens,
                )
            ],
            "requests": [
                req(
                    "generations",
                    n_gen,
                    gen_where,
                    mul(sum(gen_prompts), cfg.passes) if gen_prompts else None,
                    mul(n_gen, cfg.gen_max_new_tokens),
                    f"{_q(n_seeds)} seeds x {cfg.passes} passes",
                )
            ],
        }
    )

    # 02_quality: an example is k earlier rounds and the speaker's next turn
    turns = 2 * (1 + cfg.max_k) / 2 + 1
    syn_hist = round(turns * (SYN_TURN_TOKENS + MSG_TOKENS))
    disc_in = syn_hist + tokens(system) + 2 * MSG_TOKENS
    n_ex = n_gen  # upper bound: one example per generation
    ed_ex = [
        min(cfg.max_length, chat_tokens(chat_pairs(r["history"], system)) + tokens(r["response"]))
        for r in train or []
    ]
    ed_tok = _mean(ed_ex, syn_hist)
    templates = {
        c: chat_tokens([(m["role"], m["content"]) for m in judge_messages([], "", c)]) for c in CRITERIA
    }
    judge_tmpl = max(templates.values())
    n_sanity = 2 * min(cfg.sanity_pairs, n_train) if n_train else None
    judge_items = None if n_ex is None or n_sanity is None else n_ex + n_sanity
    authors_judge = cfg.judge_prompt == "authors"

    def judge_reqs(items, hist_tokens, reply_tokens, label):
        n = mul(items, len(CRITERIA))
        out = [
            req(
                "judge scores",
                n,
                where(cfg.judge_endpoints),
                mul(n, judge_tmpl + hist_tokens + reply_tokens),
                n,
                f"{label}, x 3 criteria, 1 token each",
            )
        ]
        if authors_judge:
            out.append(
                req(
                    "judge sampled answers",
                    n,
                    out[0]["where"],
                    out[0]["tokens_in"],
                    mul(n, AUTHORS_JUDGE_TOKENS),
                    "judge_prompt authors: their sampled text, beside the score",
                )
            )
        return out

    md_steps = cfg.max_steps or (
        math.ceil(cfg.epochs * math.ceil(n_train / cfg.train_batch_size)) if n_train else None
    )
    judge_batch = cfg.judge_batch_size if not authors_judge else max(cfg.judge_batch_size, cfg.gen_batch_size)
    judge_seq = judge_tmpl + syn_hist + 2 * SYN_TURN_TOKENS + (AUTHORS_JUDGE_TOKENS if authors_judge else 0)
    q_models = [
        model(
            "judge",
            cfg.judge_model,
            cfg.judge_endpoints,
            batch=judge_batch,
            seq=judge_seq,
            logits_seq=judge_seq,
        )
    ]
    q_reqs = []
    if cfg.disc_checkpoint:
        disc_spec = cfg.disc_checkpoint
    else:
        disc_spec = cfg.base_model
        q_models.insert(0, model("M_D training", cfg.base_model, [], mode="train"))
        q_reqs.append(
            req(
                "M_D training steps",
                md_steps,
                where([]),
                mul(n_train, ed_tok, cfg.epochs),
                None,
                f"{_q(n_train)} ED records, batch {cfg.train_batch_size}, {cfg.epochs:g} epoch(s)",
            )
        )
    q_models.insert(
        -1,
        model(
            "M_D answering",
            disc_spec,
            cfg.disc_endpoints,
            batch=cfg.gen_batch_size,
            seq=disc_in + cfg.disc_max_new_tokens,
        ),
    )
    q_models.insert(-1, model("embedder", cfg.embedder, [], mode="embed"))
    q_reqs += [
        req(
            "M_D answers",
            n_ex,
            where(cfg.disc_endpoints),
            mul(n_ex, disc_in),
            mul(n_ex, cfg.disc_max_new_tokens),
            "<= one per generation (parsed examples)",
        ),
        req("embeddings", mul(n_ex, 2), where([]), None, None, "synthetic replies and M_D's"),
    ]
    q_reqs += judge_reqs(
        judge_items, syn_hist, SYN_TURN_TOKENS, f"<= {_q(n_ex)} examples + {_q(n_sanity)} sanity pairs"
    )
    stages.append(
        {
            "stage": "02_quality",
            "models": q_models,
            "requests": q_reqs,
            "notes": [],
            "together": [["M_D answering", "embedder"]],
        }
    )

    # 03_diversity
    stages.append(
        {
            "stage": "03_diversity",
            "models": [model("embedder", cfg.embedder, [], mode="embed")],
            "requests": [
                req(
                    "embeddings",
                    None if n_ex is None or n_train is None else n_ex + n_train,
                    where([]),
                    None,
                    None,
                    "<= synthetic examples + seeds (cached from 02)",
                )
            ],
            "notes": [],
            "together": [],
        }
    )

    # 04_finetune
    sweep = arms.sweep_runs(cfg)
    n_adapters = (len(cfg.arms) + len(sweep)) * len(cfg.train_seeds)
    ft_reqs = []
    for name in [*cfg.arms, *(s[0] for s in sweep)]:
        syn = 0 if name == "ed" else n_ex
        total = None if n_train is None or syn is None else n_train + syn
        steps = cfg.max_steps or (
            math.ceil(cfg.epochs * math.ceil(total / cfg.train_batch_size)) if total else None
        )
        tin = (
            None
            if n_train is None or syn is None
            else (n_train * ed_tok + syn * (syn_hist + SYN_TURN_TOKENS))
        )
        bound = "" if name == "ed" else "<= "
        ft_reqs.append(
            req(
                f"{name} steps",
                mul(steps, len(cfg.train_seeds)),
                where([]),
                mul(tin, cfg.epochs, len(cfg.train_seeds)),
                None,
                f"{len(cfg.train_seeds)} seed(s) x {bound}{_q(steps)} steps on {_q(n_train)} ED + "
                f"{bound}{_q(syn)} "
                f"synthetic",
            )
        )
    stages.append(
        {
            "stage": "04_finetune",
            "models": [
                model(f"{n_adapters} LoRA adapters (one at a time)", cfg.base_model, [], mode="train")
            ],
            "requests": ft_reqs,
            "together": [],
            "notes": [
                f"{len(cfg.arms)} arms x {len(cfg.train_seeds)} seeds + {len(sweep)} sweep runs x "
                f"{len(cfg.train_seeds)} seeds = {n_adapters} adapters"
            ],
        }
    )

    # 05_evaluate
    eval_ep = list(getattr(cfg, "eval_endpoints", []) or [])
    eval_prompts = [chat_tokens(chat_pairs(r["history"], *sft.arm_input(cfg))) for r in evals or []]
    eval_in = _mean(eval_prompts, syn_hist)
    judged = 1 + len(cfg.arms) * len(cfg.train_seeds)
    sweep_models = len(sweep) * len(cfg.train_seeds)
    n_pred = mul(judged + sweep_models, n_eval)
    hist = _mean([tokens("\n".join(r["history"])) for r in evals or []], syn_hist)
    reply = min(cfg.eval_max_new_tokens, 2 * SYN_TURN_TOKENS)
    ab_n = min(x for x in (cfg.ab_records, n_eval) if x) if (cfg.ab_records or n_eval) else None
    n_ab = mul(len(cfg.ab_comparisons), len(cfg.train_seeds), ab_n, 2, len(CRITERIA))
    e_seq = max(eval_prompts, default=eval_in) + cfg.eval_max_new_tokens
    j_seq = judge_tmpl + max(eval_prompts, default=eval_in) + 2 * cfg.eval_max_new_tokens
    e_models = [
        model("predictions", cfg.base_model, eval_ep, batch=cfg.gen_batch_size, seq=e_seq),
        model("embedder", cfg.embedder, [], mode="embed"),
        model("judge", cfg.judge_model, cfg.judge_endpoints, batch=judge_batch, seq=j_seq, logits_seq=j_seq),
    ]
    e_reqs = [
        req(
            "predictions",
            n_pred,
            where(eval_ep) + (" (LoRA modules <arm>.seed-<s>)" if eval_ep else ""),
            mul(n_pred, eval_in),
            mul(n_pred, cfg.eval_max_new_tokens),
            f"(base + {len(cfg.arms)} arms x {len(cfg.train_seeds)} seeds + {sweep_models} sweep) x "
            f"{_q(n_eval)} "
            "records"
            + ("" if eval_ep else f"; each adapter merged into the base in turn, batch {cfg.gen_batch_size}"),
        ),
        req("embeddings", mul(n_pred, 2), where([]), None, None, "predictions and golds"),
    ]
    e_reqs += judge_reqs(
        mul(judged, n_eval), hist, reply, f"{judged} models x {_q(n_eval)} records; sweep not judged"
    )
    e_reqs.append(
        req(
            "A/B judge",
            n_ab,
            where(cfg.judge_endpoints),
            mul(n_ab, judge_tmpl + hist + 2 * reply),
            n_ab,
            f"{len(cfg.ab_comparisons)} pairs x {len(cfg.train_seeds)} seeds x {_q(ab_n)} records x 2 orders "
            "x 3 criteria (<=: identical replies are not asked)",
        )
    )
    stages.append(
        {
            "stage": "05_evaluate",
            "models": e_models,
            "requests": e_reqs,
            "notes": [],
            "together": [["embedder", "judge"]],
        }
    )

    return {
        "profile": cfg.profile,
        "device": device_note,
        "limits": limits,
        "stages": stages,
        "warnings": list(dict.fromkeys(warnings)),
        "data": {"train": n_train, "seeds": n_seeds, "eval": n_eval},
    }


def flags(plan_dict: dict) -> list[str]:
    """One message per in-process model (or group held together) whose estimate exceeds its device's
    memory."""
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
            total = sum(m["estimate_gib"] for m in held) - CUDA_OVERHEAD_GIB * (held[0]["device"] == "cuda")
            if total > limits[held[0]["device"]]:
                out.append(
                    f"{st['stage']}: {' + '.join(m['role'] + ' ' + m['model'] for m in held)} "
                    "are held together "
                    f"on {held[0]['device']}: ~{total:.1f} GiB (estimate) > {limits[held[0]['device']]:g} GiB"
                )
    return out


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
    found = flags(plan_dict)
    lines += [
        "",
        "flags:" if found else "flags: none (every in-process model fits its device, by this estimate)",
    ]
    lines += [f"  ! {f}" for f in found] + [f"  note: {w}" for w in plan_dict["warnings"]]
    return "\n".join(lines)


def command(
    profile: str = "tiny",
    params: list[str] | None = None,
    gpu_gib: float = 80,
    cpu_gib: float | None = None,
    echo=print,
) -> int:
    """The CLI: print the plan of a profile; 1 when something is flagged as not fitting, else 0."""
    p = plan(load_config(profile, params or []), gpu_gib, cpu_gib)
    echo(render(p))
    return 1 if flags(p) else 0
