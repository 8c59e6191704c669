"""How spread out a set of examples is in embedding space: the rows of notebook 03's diversity table."""

from __future__ import annotations

import numpy as np

from .kcenter import CHUNK_ROWS, coverage_radius
from .metrics import distinct_n


def mean_pairwise_cosine_distance(x: np.ndarray) -> float:
    """Mean of 1 - cos over all pairs of distinct rows (rows are unit vectors): from one sum, no n x n matrix."""
    n = len(x)
    if n < 2:
        return float("nan")
    s = x.astype(np.float64).sum(axis=0)
    return float(1.0 - (s @ s - n) / (n * (n - 1)))


def mean_nearest_neighbour_distance(x: np.ndarray) -> float:
    """Mean L2 distance from each row to its nearest other row (chunked)."""
    n = len(x)
    if n < 2:
        return float("nan")
    x = x.astype(np.float64)
    sq = (x * x).sum(axis=1)
    out = np.empty(n)
    for lo in range(0, n, CHUNK_ROWS):
        d = sq[lo: lo + CHUNK_ROWS, None] - 2 * x[lo: lo + CHUNK_ROWS] @ x.T + sq[None, :]
        d[np.arange(len(d)), np.arange(lo, lo + len(d))] = np.inf
        out[lo: lo + len(d)] = np.sqrt(np.maximum(d.min(axis=1), 0))
    return float(out.mean())


def set_metrics(x: np.ndarray, responses: list[str], covers: tuple[np.ndarray, list[int]] | None = None) -> dict:
    """The diversity table's row for one set; `covers` = (full set, indices of this set in it) adds the
    coverage radius (the K-center objective) of the full set by this one."""

    def r4(v: float) -> float | None:
        return None if np.isnan(v) else round(v, 4)  # a one-point set has no pairs: null, not NaN, in JSON

    return {
        "size": len(x),
        "mean_pairwise_cosine_distance": r4(mean_pairwise_cosine_distance(x)),
        "mean_nn_distance": r4(mean_nearest_neighbour_distance(x)),
        "coverage_radius": round(coverage_radius(*covers), 4) if covers and len(covers[1]) else None,
        "dist1": round(distinct_n(responses, 1), 2), "dist2": round(distinct_n(responses, 2), 2),
    }
