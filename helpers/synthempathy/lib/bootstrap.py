"""Confidence intervals for the metrics: percentile bootstrap over examples, paired for two systems.

Bootstrap. Corpus metrics are not means over examples, so a resample must recompute the corpus figure, not
average per-example scores. Each text is tokenized once into per-example sufficient statistics (BLEU clipped
n-gram counts and lengths, n-gram ids, ROUGE F-measures, overlaps); a resample is a vector of multiplicities
and every corpus figure comes from weighted sums of those statistics: the same figures as running the
metric on the resampled lists (tests check this, and BLEU against nltk `corpus_bleu`, both rounded to
6 decimals as the authors round).
Dist-n is the exception: a bootstrap draw that repeats an example repeats all of its n-grams, so Dist
collapses under resampling with replacement (100 ED responses: Dist-2 82.5, bootstrap 95% interval
48.7..61.5, which excludes it). Dist intervals come from half-samples drawn without replacement (delete-d
jackknife with d = n/2), centred on the point estimate. Checked on ED valid: over 300 independent corpora
of 30 / 100 / 500 responses Dist-2 has sd 2.0 / 1.5 / 0.7; half-sampling one corpus estimates 1.3-1.6 /
1.2-1.4 / 0.7-0.9; the plain bootstrap gives 3.3 at n = 100 (and an interval off-centre by 25 points).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .metrics import SIZE_DEPENDENT, automatic_metrics, check_pair, corpus_metrics, example_stats
from .tokens import tokenize


def _resample_weights(n: int, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bootstrap, half-sample) weights, each (n_resamples, n); one generator, so a seed fixes both."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    boot = np.stack([np.bincount(row, minlength=n) for row in idx])
    half = np.zeros((n_resamples, n), dtype=np.int64)
    picks = np.argsort(rng.random((n_resamples, n)), axis=1)[:, : n // 2]
    np.put_along_axis(half, picks, 1, axis=1)
    return boot, half


def _interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(_scored_replicates(samples), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _scored_replicates(samples: np.ndarray) -> np.ndarray:
    """The replicates that have a value: a resample that drew only unscored examples has none (NaN)."""
    samples = np.asarray(samples)
    return samples if not np.isnan(samples).any() else samples[~np.isnan(samples)]


def _replicates(
    compute: Callable[[np.ndarray], dict], n: int, n_resamples: int, seed: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Point figures and one replicate per resample of each, from `compute(weights) -> figures`."""
    boot, half = _resample_weights(n, n_resamples, seed)
    point = compute(np.ones(n, dtype=np.int64))
    rows = [compute(w) for w in boot]
    reps = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in point}
    size_dependent = [k for k in SIZE_DEPENDENT if k in point]
    if size_dependent and n < 2:
        for k in size_dependent:  # nothing to half-sample: a one-example corpus has no spread
            reps[k] = np.full(n_resamples, point[k])
    elif size_dependent:
        # A bootstrap copy of an example repeats all its n-grams, which no real corpus of n responses does:
        # on 100 ED responses Dist-2 falls from 82 to a 49..62 interval. Dist is therefore resampled by
        # half-sampling without replacement (delete-d jackknife, d = n/2), centred on the point; its spread
        # matched the spread over independent 30/100/500-response ED corpora, the bootstrap's was ~2x wider.
        m = n // 2
        scale = math.sqrt(m / (n - m))
        rows = [compute(w) for w in half]
        for k in size_dependent:
            h = np.array([r[k] for r in rows], dtype=np.float64)
            reps[k] = point[k] + scale * (h - h.mean())
    return {k: float(v) for k, v in point.items()}, reps


def _weighted_texts(predictions, references, metric_fn) -> Callable[[np.ndarray], dict]:
    # any metric function on the resampled lists: slower, but right for corpus-level figures
    def compute(weights: np.ndarray) -> dict:
        idx = np.repeat(np.arange(len(weights)), weights)
        return metric_fn([predictions[i] for i in idx], [references[i] for i in idx])

    return compute


def _metric_computer(
    predictions: list[str], references: list[str], metric_fn: Callable
) -> Callable[[np.ndarray], dict]:
    check_pair(predictions, references)
    if metric_fn is automatic_metrics:
        stats = example_stats([tokenize(p) for p in predictions], [tokenize(r) for r in references])
        return lambda weights: corpus_metrics(stats, weights)
    return _weighted_texts(predictions, references, metric_fn)


def _seed_weights(n_seeds: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_seeds) multiplicities of the training seeds; all ones for one seed, so a one-seed run gets
    exactly the examples-only bootstrap."""
    if n_seeds == 1:
        return np.ones((n_resamples, 1), dtype=np.int64)
    rng = np.random.default_rng([seed, n_seeds])
    idx = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    return np.stack([np.bincount(row, minlength=n_seeds) for row in idx])


def over_seeds(reps_by_seed: Sequence[np.ndarray], n_resamples: int, seed: int) -> np.ndarray:
    """Replicates of the mean over training seeds. Each seed's replicates were drawn on the same example
    resamples (one seed of the generator); the seeds are resampled on top: a two-stage bootstrap, so an
    interval holds both the evaluation examples' and the training seed's spread."""
    x = np.stack([np.asarray(r, dtype=np.float64) for r in reps_by_seed], axis=1)
    return (_seed_weights(x.shape[1], n_resamples, seed) * x).sum(axis=1) / x.shape[1]


# Two-sided 5% test with 80% power: the smallest true difference this run detects is (z_0.975 + z_0.8) x SE,
# with SE the spread of the paired replicates.
DETECTABLE_Z = 1.959964 + 0.841621


def _difference(point: float, reps: np.ndarray, alpha: float) -> dict[str, float]:
    reps = _scored_replicates(reps)
    low, high = _interval(reps, alpha)
    return {"point_diff": point, "mean_diff": float(reps.mean()), "low": low, "high": high,
            "share_above_zero": float(np.mean(reps > 0)), "detectable": float(DETECTABLE_Z * reps.std(ddof=1))}


def seeded_metrics(
    predictions,
    references: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    metric_fn: Callable = automatic_metrics,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Corpus figures averaged over training seeds and their replicates: `predictions` is one prediction list,
    or one per training seed."""
    predictions_by_seed = predictions if predictions and isinstance(predictions[0], list) else [predictions]
    points, reps = [], []
    for preds in predictions_by_seed:
        p, r = _replicates(_metric_computer(preds, references, metric_fn), len(references), n_resamples, seed)
        points.append(p)
        reps.append(r)
    keys = list(points[0])
    return ({k: float(np.mean([p[k] for p in points])) for k in keys},
            {k: over_seeds([r[k] for r in reps], n_resamples, seed) for k in keys})


def bootstrap_metrics(
    predictions: list[str],
    references: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_fn: Callable = automatic_metrics,
) -> dict[str, tuple[float, float, float]]:
    """{metric: (point, low, high)}: percentile intervals over resamples of the examples.

    Examples are drawn with replacement and every corpus figure is recomputed; Dist-1/2 instead use half-
    samples (see `_replicates`). `metric_fn(predictions, references) -> dict` may replace
    `automatic_metrics`; it is then called on each resampled list. `predictions` may also be a list of
    prediction lists, one per training seed: the figure is then their mean, resampled over seeds too.
    """
    point, reps = seeded_metrics(predictions, references, n_resamples, seed, metric_fn)
    return {k: (point[k], *_interval(reps[k], alpha)) for k in point}


def paired_bootstrap(
    preds_a: list[str],
    preds_b: list[str],
    references: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_fn: Callable = automatic_metrics,
) -> dict[str, dict[str, float]]:
    """{metric: {point_diff, mean_diff, low, high, share_above_zero, detectable}} for A minus B on the same
    resamples.

    `share_above_zero` is the share of resamples in which A scores higher than B, `low`/`high` the percentile
    interval of the difference, `detectable` the smallest true difference a two-sided 5% test would detect
    with 80% power at this spread. For Dist the replicates are centred half-samples, so mean_diff = point_diff.
    Either side may be a list of prediction lists, one per training seed (paired seed by seed).
    """
    point_a, reps_a = seeded_metrics(preds_a, references, n_resamples, seed, metric_fn)
    point_b, reps_b = seeded_metrics(preds_b, references, n_resamples, seed, metric_fn)
    return {k: _difference(point_a[k] - point_b[k], reps_a[k] - reps_b[k], alpha) for k in point_a}


def _by_seed(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    v = v[None, :] if v.ndim == 1 else v
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError("expected a non-empty sequence of values, or one such sequence per training seed")
    return v


def _resampled_means(boot: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Each resample's mean over its scored examples: NaN marks an unscored one (a judge's label an endpoint did
    not return), which counts in no mean rather than as a score. Without NaN, boot @ row / n."""
    scored = ~np.isnan(row)
    if scored.all():
        return boot @ row / row.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of unscored examples only has no mean
        return boot @ np.where(scored, row, 0.0) / (boot @ scored)


def _mean_scored(v: np.ndarray) -> float:
    return float(v.mean()) if not np.isnan(v).any() else float(np.nanmean(v))


def seeded_ci(values_by_seed, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high) of per-example values, one row per training seed (or one plain row), resampling the
    examples and the seeds; a NaN value (unscored) is left out of every mean."""
    v = _by_seed(values_by_seed)
    boot, _ = _resample_weights(v.shape[1], n_resamples, seed)
    reps = over_seeds([_resampled_means(boot, row) for row in v], n_resamples, seed)
    return (_mean_scored(v), *_interval(reps, alpha))


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of a mean of per-example values (cosines, judges)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of values")
    return seeded_ci(v, n_resamples, seed, alpha)


def paired_bootstrap_values(
    values_a, values_b, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Paired bootstrap of the mean of per-example values (judge scores, cosines), A minus B, same resamples;
    either a plain sequence or one row per training seed."""
    a, b = _by_seed(values_a), _by_seed(values_b)
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap_values needs two equally shaped sets of values, got {a.shape} and {b.shape}")
    diff = a - b  # NaN where either side is unscored: the difference is taken over the pairs both scored
    boot, _ = _resample_weights(diff.shape[1], n_resamples, seed)
    reps = over_seeds([_resampled_means(boot, row) for row in diff], n_resamples, seed)
    return _difference(_mean_scored(diff), reps, alpha)
