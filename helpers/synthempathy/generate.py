"""01_generate, the paper's stages 1 and 2: generate new multi-round empathetic dialogues from ED seeds, parse
them into (context, response) rounds, and turn each dialogue into one training example (turn sampling).

Generation goes through a backend (`lib/backends.py`): in process with transformers, or any OpenAI-compatible
endpoint. Every finished batch is appended to a cache keyed by a hash of what determines the output, so a
killed run resumes where it stopped and ends with the same artifacts as an uninterrupted one.

It is over 300 lines because the tolerant round parser lives here, beside the generation it reads: one regex per
shape a generator writes rounds in (labels on their own lines or mid-line, markdown, numbered lists, quotes).
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from collections import Counter

from .chain.store import JsonlCache, write_json, write_jsonl
from .lib.authors import texts_for
from .lib.backends import Request, Sampling, derived_seed, make_backend
from .lib.dialogue import generation_messages, listener_prompt, prompts
from .lib.ed import AUTHORS_SEPARATOR
from .lib.stage import Stage

STAGE = Stage("01_generate")
log = logging.getLogger(__name__)


# -- the request for one seed ------------------------------------------------------------------------

def authors_generation_messages(history: list[str] | tuple[str, ...], response: str, template: str
                                ) -> list[tuple[str, str]]:
    """The authors' request: their instruction text, filled with the seed in their data's form (the dialogue's
    turns joined by " </s> "), as the one user message, with no system prompt."""
    return [("user", template.format(context=f" {AUTHORS_SEPARATOR} ".join(history), response=response))]


def generation_requests(seeds: list[dict], cfg) -> list[tuple[dict, int, Request]]:
    """(seed record, pass, request) for every pass over the seeds; each pass has its own seed."""
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.gen_max_new_tokens)
    authors = cfg.gen_prompt == "authors"
    template = texts_for(cfg).generation if authors else None
    prefill = prompts()["prefill"] if cfg.prefill and not authors else ""
    out = []
    for n_pass in range(cfg.passes):
        for rec in seeds:
            if authors:
                messages = authors_generation_messages(rec["history"], rec["response"], template)
            else:
                messages = generation_messages(rec["history"], rec["response"], format_example=cfg.format_example)
            seed = derived_seed(cfg.seed, n_pass, rec["id"])
            out.append((rec, n_pass, Request.make(cfg.generator_model, messages, prefill, sampling, seed,
                                                  generation_prompt=not authors)))
    return out


# -- parsing the generator's output ------------------------------------------------------------------

# Markdown emphasis around a label: "**Context:**", "*Context*:", "__Response__:", "***Round 1:***".
EMPHASIS = r"[*_]{0,3}"
# A labelled line, after an optional bullet, heading mark or "1." number. The emphasis after the separator is
# taken only when a space follows it, so "Context: *I failed.*" keeps its italics for `clean` to unwrap.
LABEL = re.compile(
    rf"""^\s*(?:[-*>#]+\s*)?(?:\d+[.)]\s*)?          # bullets, headings, "1." numbering
        {EMPHASIS}\s*
        (round|context|response|speaker|listener)(?![a-z])\s*(?:\#?\s*\d+)?\s*
        {EMPHASIS}\s*[:：\-–]\s*(?:[*_]+(?=\s|$))?\s*(.*)$""",
    re.IGNORECASE | re.VERBOSE,
)
NUMBERED = re.compile(r"^\s*(?:\*\*|__)?\s*\d+[.)]?\s*(?:\*\*|__)?\s*$")  # a bare "1." line starts a round
# A markdown round header with no separator ("### Round 1", "**Round 2**") starts a round; without this it would be
# glued to the previous response when no blank line comes before it. A plain "Round 4" is left as it was read
# before: cut-off generations of the committed runs end in one, and their parse must not change.
ROUND_HEADING = re.compile(rf"^\s*(?:[#>]+\s*{EMPHASIS}|[*_]{{1,3}})\s*round\s*\#?\s*\d*\s*{EMPHASIS}\s*$",
                           re.IGNORECASE)
# A label in the middle of a line ("Round 1: Context: ... Response: ...", a whole round or dialogue on one line):
# the line is cut before it. Only a capitalised (or upper-case) label word right before its colon counts, so "the
# context of it" or "my response: no" stays inside its turn; a "2." numbering in front goes with the label.
INLINE_LABEL = re.compile(
    rf"""(?<=\S)[ \t]+(?=(?:\d+[.)][ \t]+)?{EMPHASIS}
        (?:Round[ \t]*\#?[ \t]*\d*|ROUND[ \t]*\#?[ \t]*\d*|Context|CONTEXT|Response|RESPONSE
           |Speaker|SPEAKER|Listener|LISTENER){EMPHASIS}[ \t]*[:：])""",
    re.VERBOSE,
)
LINE_MARK = re.compile(r"^\s*(?:[-*>#]+\s*)?(?:\d+[.)]\s*)?")  # a bullet, heading mark or number opening a line
FIELD = {"context": "context", "speaker": "context", "response": "response", "listener": "response"}
QUOTES = "\"'“”‘’`"
# Marks around a whole turn: a pair of double quotes, of single quotes, of backticks, or markdown italics. A pair
# is taken off only when no other mark of its kind is inside, so '"Hi," she said, "bye."' keeps its quotes;
# a single quote may still sit between two letters inside as an apostrophe ("'I'm sorry.'").
WRAPPED = re.compile(
    r"""^(?: ["“”„] ([^"“”„]*) ["“”]
           | ['‘’] ((?:[^'‘’]|(?<=\w)['’](?=\w))*) ['’‘]
           | ` ([^`]*) `
           | \* ([^*]*) \*
           | _ ([^_]*) _ )$""",
    re.VERBOSE,
)
SENTENCE_END = re.compile(r"""[.!?…)\]"'”’*~]\s*$|[\U0001F300-\U0001FAFF]\s*$""")


def unwrap(text: str) -> str:
    """`text` without the quotes or italics that wrap all of it, however many layers ('*"I failed."*')."""
    while m := WRAPPED.match(text):
        text = next(g for g in m.groups() if g is not None).strip()
    return text


def clean(text: str) -> str:
    text = re.sub(r"(\*\*|__)", "", text)
    text = unwrap(re.sub(r"\s+", " ", text).strip())
    return text.strip(QUOTES + " ") if text.count('"') == 1 else text


def split_inline_labels(text: str) -> list[str]:
    """The lines of `text`, each label that sits inside a line moved to a line of its own; the bullet or number
    that opens a line ("- Context:", "1. Context:") stays with its first label."""
    lines = []
    for line in text.splitlines():
        start = LINE_MARK.match(line).end()
        lines += (line[:start] + INLINE_LABEL.sub("\n", line[start:])).split("\n")
    return lines


def parse_rounds(text: str, complete: bool = True) -> list[tuple[str, str]]:
    """(context, response) pairs from a generated dialogue.

    Tolerates "Round 1:" / "### Round 1" / "1." / "**Context:**" / "*Context*:" / "Speaker:" labels, rounds or a
    whole dialogue written on one line, numbered and bulleted lists, quoted or italic turns, blank lines and
    missing Round lines. A context without a response is dropped. When `complete` is False (the generator hit
    its token limit), a last response that does not end a sentence is treated as cut off and dropped.
    """
    pairs: list[tuple[str, str]] = []
    current: dict[str, list[str]] = {}
    field: str | None = None

    def close() -> None:
        nonlocal current, field
        context, response = clean(" ".join(current.get("context", []))), clean(" ".join(current.get("response", [])))
        if context and response:
            pairs.append((context, response))
        current, field = {}, None

    for line in split_inline_labels(text):
        m = LABEL.match(line)
        if m:
            label, rest = m.group(1).lower(), m.group(2)
            if label == "round":
                close()
                continue
            name = FIELD[label]
            if name == "context" and "response" in current:
                close()  # a new context without a Round line starts the next round
            if name in current:  # a second label of the same kind: keep the first, start over for this field
                current[name] = []
            current.setdefault(name, [])
            field = name
            if rest.strip():
                current[name].append(rest)
        elif NUMBERED.match(line) or ROUND_HEADING.match(line):
            close()
        elif not line.strip():
            if field and current[field]:
                field = None  # a blank line ends a field: trailing notes after a round are not part of it
        elif field:
            current[field].append(line)
    last_response = " ".join(current.get("response", []))
    if current.get("context") and last_response.strip() and (complete or SENTENCE_END.search(last_response)):
        close()
    return pairs


# Their script's pattern: "Context: <text>" then a newline and "Response: <text>" up to the next newline or the end
# (so a reply cut off by the token limit is kept); no labelled pair at all means the output is dropped.
AUTHORS_PAIR = re.compile(r"Context: (.+?)\nResponse: (.+?)(?=\n|$)", re.DOTALL)


def parse_rounds_authors(text: str) -> list[tuple[str, str]]:
    """(context, response) pairs the authors' way: their pattern, each side stripped, nothing else cleaned."""
    return [(c.strip(), r.strip()) for c, r in AUTHORS_PAIR.findall(text)]


def example_sentences() -> list[str]:
    ex = prompts()["format_example"]
    return [ex["context"], ex["response"]] + [
        clean(m.group(2)) for line in ex["answer"].splitlines() if (m := LABEL.match(line)) and m.group(1).lower() != "round"]


def is_copy(text: str, references: list[str], ratio: float = 0.8) -> bool:
    """True when `text` is the same as, or a near copy of, one of `references` (case and spacing ignored)."""
    norm = " ".join(text.lower().split())
    return any(difflib.SequenceMatcher(None, norm, " ".join(r.lower().split())).ratio() >= ratio for r in references)


def drop_copies(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop rounds copied from the one-shot format example (a small model sometimes repeats it)."""
    refs = example_sentences()
    return [(c, r) for c, r in pairs if not (is_copy(c, refs) or is_copy(r, refs))]


def parse_generation(raw: str, complete: bool, format_example: bool, parser: str = "tolerant"
                     ) -> tuple[list[tuple[str, str]], str]:
    """(rounds, status) where status is ok | no_pair | copied_example (run_stage adds one_round)."""
    pairs = parse_rounds_authors(raw) if parser == "authors" else parse_rounds(raw, complete)
    if not pairs:
        return [], "no_pair"
    if format_example:
        kept = drop_copies(pairs)
        if not kept:
            return [], "copied_example"
        pairs = kept
    return pairs, "ok"


# -- turn sampling (the paper's stage 2) ---------------------------------------------------------------------------------

def draw_k(n_rounds: int, rng: random.Random, max_k: int = 3, law: str = "uniform") -> int | None:
    """How many earlier rounds an example keeps. uniform: k uniform in 1..min(max_k, rounds - 1), None for a
    one-round dialogue; authors: min(randint(1, max_k), rounds - 1), so a one-round dialogue gives k = 0."""
    if law == "authors":
        return min(rng.randint(1, max_k), n_rounds - 1) if n_rounds >= 1 else None
    return rng.randint(1, min(max_k, n_rounds - 1)) if n_rounds >= 2 else None


def sample_example(rounds: list[tuple[str, str]], rng: random.Random, max_k: int = 3,
                   authors_target: str = "next", law: str = "uniform") -> dict | None:
    """One training example from a dialogue: k earlier rounds (see `draw_k`), then the next speaker turn; the
    target is that round's response (or, as in the authors' script, the last round's response). None when the
    law leaves no example."""
    k = draw_k(len(rounds), rng, max_k, law)
    if k is None:
        return None
    history = [turn for pair in rounds[:k] for turn in pair] + [rounds[k][0]]
    output = rounds[k][1] if authors_target == "next" else rounds[-1][1]
    return {"instruction": listener_prompt(history), "output": output, "k": k, "history": history}


def build_examples(generations: list[dict], seed: int, max_k: int, authors_target: str, law: str = "uniform"
                   ) -> list[dict]:
    """Step 3, turn sampling: one training example from every dialogue that leaves one (`sample_example`), with a
    random generator seeded by the run's seed, the seed record and the pass."""
    examples = []
    for g in generations:
        rng = random.Random(f"{seed}:{g['seed_id']}:{g['pass']}")  # independent of processing order
        ex = sample_example([tuple(r) for r in g["rounds"]], rng, max_k, authors_target, law)
        if ex is not None:
            examples.append({"id": f"{g['seed_id']}:p{g['pass']}", "seed_id": g["seed_id"], "pass": g["pass"],
                             **ex, "emotion": g["emotion"]})
    return examples


def pairs_by_parser(generations: list[dict]) -> dict:
    """Both parsers on the same outputs: how many outputs yield a pair, and how many pairs in all."""
    out = {}
    for name, parse in (("tolerant", lambda g: parse_rounds(g["raw"], g["finished"])),
                        ("authors", lambda g: parse_rounds_authors(g["raw"]))):
        counts = [len(parse(g)) for g in generations]
        out[name] = {"outputs_with_pairs": sum(c > 0 for c in counts), "pairs": sum(counts)}
    return out


def generator(cfg):
    """The generator on the profile's backend: in process, or the OpenAI-compatible endpoints."""
    if cfg.gen_backend != "openai":
        return make_backend(cfg, cfg.generator_model)
    if cfg.prefill:
        log.warning("prefill with gen_backend=openai needs an endpoint that continues a final assistant message "
                    "(vLLM's continue_final_message); llama.cpp's server starts a new reply instead")
    return make_backend(cfg, cfg.generator_model, cfg.gen_endpoints)


# -- the stage --------------------------------------------------------------------------------------------------

def seeds_for(cfg, store) -> list[dict]:
    """The ED training records the generator is seeded with (the first `gen_max_seeds`, when set)."""
    seeds = store.read("00_data", "train.jsonl")
    return seeds[: cfg.gen_max_seeds] if cfg.gen_max_seeds else seeds


@STAGE.step
def generate_dialogues(cfg, store, backend=None, progress: bool = True) -> tuple[list[dict], dict]:
    """Step 1. The generator writes a new dialogue for every seed, `passes` times; outputs are cached as each batch
    finishes, so a killed run resumes. Returns (one raw output per seed and pass, throughput)."""
    planned = generation_requests(seeds_for(cfg, store), cfg)
    cache = JsonlCache(store.work_dir("01_generate") / "generations.cache.jsonl")
    stats = (backend or generator(cfg)).generate([r for _, _, r in planned], cache, progress=progress,
                                                 desc="generating")
    return [{"seed_id": rec["id"], "pass": n_pass, "emotion": rec["emotion"], "raw": req.prefill + cache[req.key]["text"],
             "finished": cache[req.key]["finished"]} for rec, n_pass, req in planned], stats


def parse_outputs(outputs: list[dict], format_example: bool, parser: str, law: str) -> list[dict]:
    """Step 2. Every raw output read as (context, response) rounds, with its status (`parse_generation`); under
    the uniform law a one-round dialogue leaves no example (status one_round)."""
    generations = []
    for out in outputs:
        rounds, status = parse_generation(out["raw"], out["finished"], format_example, parser)
        if status == "ok" and len(rounds) < 2 and law == "uniform":
            status = "one_round"  # parsed, but this law needs a round after the kept ones
        generations.append({**out, "rounds": [list(r) for r in rounds], "status": status})
    return generations


def summarize(cfg, generations: list[dict], examples: list[dict]) -> dict:
    """summary.json: counts, parse rate, rounds, the k drawn, the switches, and both parsers on the same outputs."""
    return {
        "seeds": len({g["seed_id"] for g in generations}),  # every seed has one generation per pass
        "passes": cfg.passes, "generations": len(generations), "examples": len(examples),
        "status": dict(Counter(g["status"] for g in generations)),
        "parse_rate": round(sum(bool(g["rounds"]) for g in generations) / max(len(generations), 1), 4),
        "mean_rounds": round(sum(len(g["rounds"]) for g in generations) / max(len(generations), 1), 3),
        "k": dict(sorted(Counter(e["k"] for e in examples).items())),
        "format_example": cfg.format_example, "prefill": cfg.prefill, "gen_prompt": cfg.gen_prompt,
        "parser": cfg.parser, "turn_sampling": cfg.turn_sampling,
        "pairs_by_parser": pairs_by_parser(generations),
    }


@STAGE.step
def write_outputs(store, generations: list[dict], examples: list[dict], summary: dict) -> dict:
    """Steps 1-3, recorded: generations.jsonl, examples.jsonl (what 02 reads) and summary.json."""
    write_jsonl(store.path("01_generate", "generations.jsonl"), generations)
    write_jsonl(store.path("01_generate", "examples.jsonl"), examples)
    write_json(store.path("01_generate", "summary.json"), summary)
    return summary


def run_stage(cfg, store, backend=None, progress: bool = True) -> dict:
    """The steps in order, as notebook 01 takes them: summary.json's content and the throughput."""
    outputs, stats = generate_dialogues(cfg, store, backend, progress)
    generations = parse_outputs(outputs, cfg.format_example, cfg.parser, cfg.turn_sampling)
    examples = build_examples(generations, cfg.seed, cfg.max_k, cfg.authors_target, cfg.turn_sampling)
    summary = write_outputs(store, generations, examples, summarize(cfg, generations, examples))
    return {**summary, "throughput": stats}
