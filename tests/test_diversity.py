"""Greedy K-Center selection (stage 4): exactness against a float64 recomputation, agreement with the
plain loop, the API contract, and the coverage-radius helpers."""

import numpy as np
import pytest

from synthempathy.lib.kcenter import coverage_curve, coverage_radius, kcenter_greedy, naive_kcenter_greedy


def with_duplicates(n=500, d=16, dups=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[n - dups :] = x[rng.choice(n - dups, dups, replace=False)]  # exact copies of other rows
    return x


def separated(seed=0):
    """Jittered 2-D grid, one copy of it per far-apart offset: no two greedy candidates are close to a tie."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2).astype(float)
    blocks = [grid + rng.uniform(-0.2, 0.2, grid.shape) + off for off in ([0, 0], [100, 0], [0, 250])]
    return np.concatenate(blocks).astype(np.float32)


def min_dists_along(x, order):
    """Per step t >= 1: float64 distance of order[t] to its nearest of order[:t], and every point's."""
    x = x.astype(np.float64)
    mind = np.full(len(x), np.inf)
    for t, c in enumerate(order):
        if t:
            yield mind[c], mind
        mind = np.minimum(mind, np.sqrt(((x - x[c]) ** 2).sum(1)))


def brute_radius(x, selected):
    x = x.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, selected, :]) ** 2).sum(-1))
    return d.min(1).max()


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("n,d,dups", [(500, 16, 50), (3000, 32, 300)])
def test_every_step_picks_the_farthest_point(n, d, dups):
    x = with_duplicates(n, d, dups)
    order = kcenter_greedy(x, k=n, seed=1)
    steps = 0
    for chosen, all_d in min_dists_along(x, order):
        assert chosen >= all_d.max() * (1 - 1e-5), f"step {steps}: {chosen} < max {all_d.max()}"
        steps += 1
    assert steps == n - 1


def test_matches_the_naive_loop_index_for_index():
    x = separated()
    # precondition: at every step the best candidate beats the runner-up clearly, so float32 and
    # float64 arithmetic cannot disagree about the argmax
    naive = naive_kcenter_greedy(x, k=len(x) // 2, start=5)
    for chosen, all_d in min_dists_along(x, naive):
        runner_up = np.sort(all_d)[-2]
        assert chosen == all_d.max() and chosen - runner_up > 1e-5 * chosen
    assert kcenter_greedy(x, k=len(x) // 2, start=5) == naive


def test_matches_the_naive_loop_through_a_tail_of_duplicates():
    x = separated(seed=1)
    x = np.concatenate([x, x[[3, 40, 7, 90]]])  # copies come last, so they are the tail
    n = len(x)
    assert kcenter_greedy(x, k=n, start=0) == naive_kcenter_greedy(x, k=n, start=0)
    assert kcenter_greedy(x, k=n, start=0)[-4:] == [n - 4, n - 3, n - 2, n - 1]


def test_float64_and_integer_input():
    x = separated()
    ref = kcenter_greedy(x, k=40, start=2)
    assert kcenter_greedy(x.astype(np.float64), k=40, start=2) == ref
    xi = (x * 10).round().astype(np.int64)
    assert kcenter_greedy(xi, k=40, start=2) == naive_kcenter_greedy(xi, k=40, start=2)


# ----------------------------------------------------------------------------- API contract


def test_prefix_property():
    x = with_duplicates()
    long = kcenter_greedy(x, k=300, seed=3)
    for k in (1, 2, 17, 150):
        assert kcenter_greedy(x, k=k, seed=3) == long[:k]


def test_seed_draws_the_first_centre():
    x = with_duplicates()
    assert kcenter_greedy(x, k=20, seed=7) == kcenter_greedy(x, k=20, seed=7)
    assert kcenter_greedy(x, k=1, seed=7)[0] == np.random.default_rng(7).integers(len(x))
    assert len({kcenter_greedy(x, k=1, seed=s)[0] for s in range(10)}) > 1


def test_start_is_honoured():
    x = with_duplicates()
    for start in (0, 123, 499):
        order = kcenter_greedy(x, k=5, seed=0, start=start)
        assert order[0] == start
        assert order == naive_kcenter_greedy(x, k=5, start=start)


def test_ratio_to_k():
    x = with_duplicates()  # n = 500
    assert len(kcenter_greedy(x, ratio=0.9)) == 450
    assert len(kcenter_greedy(x, ratio=1.0)) == 500
    assert len(kcenter_greedy(x, ratio=1e-6)) == 1  # clamped up to one centre
    assert len(kcenter_greedy(x, ratio=0.003)) == 2  # round(1.5) = 2
    assert len(kcenter_greedy(x[:5], ratio=0.5)) == 2  # round(2.5) = 2: Python rounds half to even
    assert kcenter_greedy(x, ratio=0.1, seed=4) == kcenter_greedy(x, k=50, seed=4)


def test_unique_indices_and_full_permutation():
    x = with_duplicates()
    order = kcenter_greedy(x, k=400, seed=2)
    assert len(set(order)) == 400 and all(isinstance(i, int) for i in order)
    assert sorted(kcenter_greedy(x, k=len(x), seed=2)) == list(range(len(x)))
    assert kcenter_greedy(x[:1], k=1) == [0]


@pytest.mark.parametrize(
    "x,kwargs,match",
    [
        ("nan", {"k": 3}, "embeddings must be finite"),
        ("inf", {"k": 3}, "embeddings must be finite"),
        ("1d", {"k": 3}, "embeddings must be a 2-D"),
        ("empty", {"k": 1}, "embeddings must be non-empty"),
        ("ok", {"k": 0}, "k must be an integer in"),
        ("ok", {"k": 11}, "k must be an integer in"),
        ("ok", {"k": 2.0}, "k must be an integer in"),
        ("ok", {"ratio": 0}, "ratio must be a number in"),
        ("ok", {"ratio": 1.5}, "ratio must be a number in"),
        ("ok", {"ratio": float("nan")}, "ratio must be a number in"),
        ("ok", {"k": 3, "ratio": 0.5}, "exactly one of k and ratio"),
        ("ok", {}, "exactly one of k and ratio"),
        ("ok", {"k": 3, "start": 10}, "start must be an integer index"),
        ("ok", {"k": 3, "start": -1}, "start must be an integer index"),
    ],
)
def test_bad_input_names_the_argument(x, kwargs, match):
    data = np.random.default_rng(0).standard_normal((10, 3))
    data = {
        "ok": data,
        "nan": np.where(np.arange(30).reshape(10, 3) == 17, np.nan, data),
        "inf": np.where(np.arange(30).reshape(10, 3) == 4, np.inf, data),
        "1d": data[:, 0],
        "empty": data[:0],
    }[x]
    with pytest.raises(ValueError, match=match):
        kcenter_greedy(data, **kwargs)


# ----------------------------------------------------------------------------- coverage radius


def test_coverage_radius_matches_brute_force():
    x = with_duplicates(300, 8, 30)
    sel = [5, 17, 250, 299, 0]
    assert coverage_radius(x, sel) == pytest.approx(brute_radius(x, sel), rel=1e-9)
    assert coverage_radius(x, range(len(x))) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="selected"):
        coverage_radius(x, [])
    with pytest.raises(ValueError, match="selected"):
        coverage_radius(x, [0, 300])


def test_coverage_curve_reads_prefix_radii_off_one_order():
    x = with_duplicates(2000, 24, 100)
    order = kcenter_greedy(x, ratio=0.9, seed=5)
    ratios = [0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9]
    curve = coverage_curve(x, order, ratios)
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[0] > curve[-1] > 0
    for r, radius in zip(ratios, curve):
        assert radius == pytest.approx(coverage_radius(x, order[: round(r * len(x))]), rel=1e-6)
    # the greedy choice is a 2-approximation: no prefix of a random order covers half as well
    rand = np.random.default_rng(0).permutation(len(x))
    assert all(g <= 2 * r for g, r in zip(curve, coverage_curve(x, rand, ratios)))
    with pytest.raises(ValueError, match="prefix"):
        coverage_curve(x, order, [1.0])


def test_greedy_radius_agrees_with_naive_on_random_data():
    x = np.random.default_rng(9).standard_normal((1500, 64)).astype(np.float32)
    ours = kcenter_greedy(x, ratio=0.9, start=11)
    naive = naive_kcenter_greedy(x, k=len(ours), start=11)
    assert coverage_radius(x, ours) == pytest.approx(coverage_radius(x, naive), rel=1e-5)
