"""The paper's two filters over synthetic examples: quality (S = 100 cos >= T) and diversity (K-Center-Greedy).

02_quality and 03_diversity apply them once each; 05_evaluate's quantity-quality sweep applies them again at
other thresholds and ratios, so both live here.
"""

from __future__ import annotations

import numpy as np

from .kcenter import kcenter_greedy


def similarity(a, b) -> np.ndarray:
    """S = 100 x cosine of unit-norm row pairs, rounded so the stored value is the one selection compares."""
    return np.round(100.0 * np.einsum("ij,ij->i", a, b).astype(np.float64), 4)


def select_quality(scored: list[dict], threshold: float) -> list[dict]:
    """Rows with S >= T (the boundary is kept, as in the authors' script)."""
    return [r for r in scored if r["similarity"] >= threshold]


def example_text(example: dict) -> str:
    """What the authors embed for diversity: instruction + output."""
    return f"{example['instruction']}{example['output']}"


def select_diverse(examples: list[dict], embedder, ratio: float, seed: int):
    """K-Center-Greedy over instruction + output embeddings: (D_a in selection order, D_d, full order, vectors)."""
    if not examples:
        raise ValueError("no quality-selected example to diversify (the quality threshold kept none)")
    x = embedder.encode([example_text(e) for e in examples])
    order = kcenter_greedy(x, k=len(x), seed=seed)  # the full order: every ratio is a prefix of it
    k = max(1, int(round(ratio * len(x))))
    chosen = set(order[:k])
    d_a = [{**examples[i], "kcenter_rank": r} for r, i in enumerate(order[:k])]
    d_d = [examples[i] for i in range(len(examples)) if i not in chosen]
    return d_a, d_d, order, x
