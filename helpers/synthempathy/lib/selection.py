"""The paper's two filters over synthetic examples: quality (S = 100 cos >= T) and diversity (K-Center-Greedy).

02_quality and 03_diversity apply them once each; 05_evaluate's quantity-quality sweep applies them again at
other thresholds and ratios, so both live here.
"""

from __future__ import annotations

import math

import numpy as np

from .kcenter import kcenter_greedy


def similarity(a, b) -> np.ndarray:
    """S = 100 x cosine of unit-norm row pairs, rounded so the stored value is the one selection compares."""
    return np.round(100.0 * np.einsum("ij,ij->i", a, b).astype(np.float64), 4)


def select_quality(scored: list[dict], threshold: float, cut: str = "exact") -> list[dict]:
    """Rows with S >= T, the boundary kept; with cut "authors", int(S) >= T, as their script truncates S first
    (the same for a whole-number T and S >= 0; a T such as 40.5 keeps fewer)."""
    if cut == "authors":
        return [r for r in scored if int(r["similarity"]) >= threshold]
    return [r for r in scored if r["similarity"] >= threshold]


def example_text(example: dict) -> str:
    """What the authors embed for diversity: instruction + output."""
    return f"{example['instruction']}{example['output']}"


def kept_by_kcenter(order: list[int], ratio: float, bookkeeping: str = "project") -> list[int]:
    """Which of the greedy order K-Center-Greedy keeps. project: the first round(ratio x n), the random first
    centre included; authors: the random first centre is only a starting point, and the floor(ratio x n) points
    chosen after it are kept (their script), at most the n - 1 others."""
    n = len(order)
    if bookkeeping == "authors":
        return order[1: 1 + min(math.floor(ratio * n), n - 1)] or order[:1]
    return order[: max(1, int(round(ratio * n)))]


def select_diverse(examples: list[dict], embedder, ratio: float, seed: int, bookkeeping: str = "project"):
    """K-Center-Greedy over instruction + output embeddings: (D_a in selection order, D_d, full order, vectors)."""
    if not examples:
        raise ValueError("no quality-selected example to diversify (the quality threshold kept none)")
    x = embedder.encode([example_text(e) for e in examples])
    order = kcenter_greedy(x, k=len(x), seed=seed)  # the full order: every ratio is a prefix of it
    return (*diverse_split(examples, order, ratio, bookkeeping), order, x)


def diverse_split(examples: list[dict], order: list[int], ratio: float, bookkeeping: str = "project"
                  ) -> tuple[list[dict], list[dict]]:
    """(D_a, D_d) at `ratio`: D_a is a prefix of the greedy order (kept_by_kcenter), in selection order, each with
    its rank; D_d the rest, in their original order."""
    kept = kept_by_kcenter(order, ratio, bookkeeping)
    chosen = set(kept)
    d_a = [{**examples[i], "kcenter_rank": r} for r, i in enumerate(kept)]
    d_d = [examples[i] for i in range(len(examples)) if i not in chosen]
    return d_a, d_d
