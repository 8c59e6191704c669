"""The pairwise A/B judge: which of two systems' replies to the same dialogue history is better, per criterion.

The paper's human evaluation compares two systems reply by reply (win / tie / lose on naturalness, coherence and
empathy). Here an LLM judge makes that comparison. It sees the history, Reply A and Reply B and the criterion's
rubric (the same text as the 1..3 judge's, prompts.yaml `pairwise`), and its verdict is the most probable of the
next tokens "A" (A is better), "B" (B is better) and "C" (equally good), read as lib/judging.py reads "1".."3".

LLM judges favour a position. So each pair is judged twice, x as A then y as A, and x wins only if both orders
prefer x, loses only if both prefer y; everything else (the orders disagree, or either says C) is a tie. Identical
replies are a tie without asking. The prompt is always the project's: the authors compared systems with people,
so there is no author text for this judge.

Summary: the shares of wins, ties and losses of x, and net = win - lose, averaged over training seeds; their
intervals resample the evaluation examples and the seeds (bootstrap.seeded_ci).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..chain.store import JsonlCache, hash_obj
from .bootstrap import seeded_ci
from .dialogue import prompts, transcript
from .judging import CRITERIA, ask_missing

LETTERS = ("A", "B", "C")
OUTCOMES = {"win": 1, "tie": 0, "lose": -1}


def pairwise_messages(history: Sequence[str], reply_a: str, reply_b: str, criterion: str) -> list[dict]:
    """The judge's chat for one ordered pair and criterion: the system prompt, then the comparison."""
    p = prompts()
    user = p["pairwise"]["template"].format(history=transcript(history), reply_a=reply_a, reply_b=reply_b,
                                            criterion=criterion, rubric=p["judge"]["criteria"][criterion])
    return [{"role": "system", "content": p["system"]}, {"role": "user", "content": user}]


def letter_from_logits(logits: Sequence[float]) -> str | None:
    """The most probable of "A", "B", "C" (ties go to the first, as the 1..3 judge's argmax). Exact while one
    letter is among an endpoint's top logprobs (the others are then less likely); None, unscored, when none is."""
    x = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(x).any():
        return None
    return LETTERS[int(np.argmax(x))]


def order_verdict(letter: str | None, x_first: bool) -> str | None:
    """A letter read for x: "x", "y" or "tie", given whether x was Reply A (None stays unscored)."""
    if letter is None:
        return None
    if letter == "C":
        return "tie"
    return "x" if (letter == "A") == x_first else "y"


def combine_orders(verdict_xy: str | None, verdict_yx: str | None) -> int | None:
    """+1 if both orders prefer x, -1 if both prefer y, else 0: a preference that flips with the position is the
    judge's position bias, not a preference. None (unscored) when either order has no verdict."""
    if verdict_xy is None or verdict_yx is None:
        return None
    if verdict_xy == verdict_yx == "x":
        return 1
    if verdict_xy == verdict_yx == "y":
        return -1
    return 0


def _key(judge, msgs: list[dict]) -> str:
    return hash_obj({"pairwise": judge.spec, "messages": msgs})[:24]


def _prompts_to_judge(items: list[dict]) -> list[tuple[str, str, bool, list[dict]]]:
    """(item id, criterion, x first, messages) of every pair that needs the judge. The criteria are innermost, so
    one order's three prompts sit together and share their prefix (history and both replies) in a batch."""
    out = []
    for it in items:
        if it["x"] == it["y"]:
            continue
        for x_first in (True, False):
            a, b = (it["x"], it["y"]) if x_first else (it["y"], it["x"])
            out += [(it["id"], c, x_first, pairwise_messages(it["history"], a, b, c)) for c in CRITERIA]
    return out


def _judge_missing(judge, keyed: list[tuple[str, list[dict]]], cache: JsonlCache, progress: bool) -> None:
    """Ask the judge for every (key, messages) not cached yet, as the 1..3 judge asks (judging.ask_missing: at
    endpoints through the backend's pool, each verdict cached as it arrives; in process a batch at a time)."""
    todo = list({key: msgs for key, msgs in keyed if key not in cache}.items())
    bar = tqdm(total=len(todo), desc="A/B judging", unit="prompt", disable=not progress, mininterval=1.0)
    try:
        ask_missing(judge, todo, LETTERS, lambda key, lg: {"key": key, "logits": lg, "verdict": letter_from_logits(lg)},
                    cache, bar)
    finally:
        bar.close()


def judge_pairs(judge, items: list[dict], cache: JsonlCache, progress: bool = True) -> list[dict]:
    """items: {id, history, x, y} with x and y the two systems' replies. Returns one row per item: for each
    criterion the outcome for x (+1 win, 0 tie, -1 lose) and `<criterion>_orders`, the verdicts ("x", "y" or
    "tie") with x as Reply A and with y as Reply A. A rerun reads every verdict from the cache."""
    asked = [(item_id, c, x_first, _key(judge, msgs), msgs) for item_id, c, x_first, msgs in _prompts_to_judge(items)]
    _judge_missing(judge, [(key, msgs) for *_, key, msgs in asked], cache, progress)
    verdicts: dict[tuple[str, str], list[str]] = {}
    for item_id, c, x_first, key, _ in asked:
        verdicts.setdefault((item_id, c), [None, None])[0 if x_first else 1] = order_verdict(cache[key]["verdict"], x_first)
    rows = []
    for it in items:
        row = {"id": it["id"]}
        for c in CRITERIA:
            orders = verdicts.get((it["id"], c), ["tie", "tie"])  # identical replies were not asked
            row[c], row[f"{c}_orders"] = combine_orders(*orders), orders
        rows.append(row)
    return rows


def _check_aligned(outcomes_by_seed: list[list[dict]]) -> None:
    if not outcomes_by_seed or not outcomes_by_seed[0]:
        raise ValueError("ab_summary needs at least one training seed with at least one judged pair")
    ids = [r["id"] for r in outcomes_by_seed[0]]
    for s, rows in enumerate(outcomes_by_seed[1:], 1):
        if [r["id"] for r in rows] != ids:
            raise ValueError(f"ab_summary: seed #{s} judged other items (or another order) than seed #0; the seeds "
                             "must share the evaluation items for the examples to be resampled together")


def share_ci(values_by_seed: np.ndarray, n_resamples: int, seed: int) -> list[float]:
    return [round(v, 4) for v in seeded_ci(values_by_seed, n_resamples, seed)]


def ab_summary(outcomes_by_seed: list[list[dict]], n_resamples: int, seed: int) -> dict:
    """Per criterion: {win, tie, lose, net: [share, low, high], pairs}, shares of x's pairs over all seeds and
    items (net = win - lose, in -1..1). Every share resamples the same examples and seeds (one `seed`)."""
    _check_aligned(outcomes_by_seed)
    summary = {}
    for c in CRITERIA:
        o = np.array([[r[c] for r in rows] for rows in outcomes_by_seed], dtype=np.float64)  # (seeds, items); NaN unscored
        unscored = np.isnan(o)
        summary[c] = {name: share_ci(np.where(unscored, np.nan, o == value), n_resamples, seed)
                      for name, value in OUTCOMES.items()}
        summary[c]["pairs"] = int((~unscored).sum())
        summary[c]["net"] = share_ci(o, n_resamples, seed)  # the mean outcome is win share - lose share
        summary[c]["unscored"] = int(unscored.sum())
    return summary


def percent(share: Sequence[float]) -> str:
    point, low, high = (100 * v for v in share)
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def ab_markdown(summary: dict, x: str, y: str) -> str:
    """The summary as a markdown table: each share in % with its 95% interval."""
    pairs = max((s["pairs"] + s.get("unscored", 0) for s in summary.values()), default=0)
    lines = [f"{x} against {y}, {pairs} pairs per criterion, % with 95% intervals over the pairs the judge scored. "
             f"Win: the judge preferred {x}'s reply in both orders; lose: {y}'s in both; anything else is a tie. "
             "Net = win - lose. Unscored: a pair where an endpoint returned no letter for an order.", "",
             "| criterion | win | tie | lose | net | unscored |", "|---|---|---|---|---|---|"]
    lines += [f"| {c} | " + " | ".join(percent(s[k]) for k in ("win", "tie", "lose", "net")) + f" | {s.get('unscored', 0)} |"
              for c, s in summary.items()]
    return "\n".join(lines)
