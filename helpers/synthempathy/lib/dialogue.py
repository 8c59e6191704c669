"""How a dialogue is written for a model: the prompts of the pipeline, chat messages, and transcripts.

A dialogue is a list of turns, the speaker's first, then alternating speaker / listener. Every prompt text
lives in the one prompt file beside this module, `prompts.yaml`; nothing else in the package writes one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import yaml

PROMPTS_FILE = Path(__file__).with_name("prompts.yaml")


@cache
def prompts() -> dict:
    return yaml.safe_load(PROMPTS_FILE.read_text(encoding="utf-8"))


def chat(history: Sequence[str], system: str | None = None, transcript: bool = False) -> list[dict]:
    """What a model answering the listener's next turn sees, after the `system` prompt when one is given: the
    turns as chat messages (speaker turns the user's, listener turns the assistant's), or with `transcript` the
    whole dialogue as one user message in Speaker/Listener lines (the authors' training and M_D input)."""
    msgs = [{"role": "system", "content": system}] if system else []
    if transcript:
        return msgs + [{"role": "user", "content": listener_prompt(history)}]
    return msgs + [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(history)]


def chat_pairs(history: Sequence[str], system: str | None = None, transcript: bool = False) -> list[tuple[str, str]]:
    """`chat` as (role, content) pairs, the form a backend request takes."""
    return [(m["role"], m["content"]) for m in chat(history, system, transcript)]


def transcript(turns: Sequence[str]) -> str:
    """Turns as text, one `Speaker: ...` / `Listener: ...` line each, the speaker first."""
    p = prompts()
    roles = p["transcript_roles"]
    return "\n".join(p["transcript_line"].format(role=roles[i % 2], text=t) for i, t in enumerate(turns))


def listener_prompt(history: Sequence[str]) -> str:
    """A transcript ending in the speaker's turn, then the listener's label: the reply is what follows."""
    p = prompts()
    return transcript(history) + "\n" + p["transcript_line"].format(role=p["transcript_roles"][1], text="")


def generation_messages(history: list[str] | tuple[str, ...], response: str, *, format_example: bool,
                        system: str | None = None) -> list[tuple[str, str]]:
    """The authors' instruction for one ED pair, as a chat; the original context is the dialogue so far.

    With `format_example`, an earlier exchange (the instruction for another seed and an answer in the format)
    comes first: a small model then follows the format far more often, and copies less than when the example
    sits inside the instruction.
    """
    p = prompts()
    messages = [("system", system or p["system"])]
    if format_example:
        ex = p["format_example"]
        messages += [("user", p["generation"].format(context=ex["context"], response=ex["response"])),
                     ("assistant", ex["answer"])]
    return messages + [("user", p["generation"].format(context="\n".join(history), response=response))]
