"""Benchmark greedy K-Center: synthempathy.lib.kcenter.kcenter_greedy against the plain loop.

  python bench/kcenter.py                # n=20,000 d=384 side by side, then n=100,000 d=1,024 alone
  python bench/kcenter.py --skip-large   # side by side only (~5 min, most of it the plain loop)

Both runs get the same float32 standard-normal data and the same first centre. The selections must
have the same coverage radius (float64, relative 1e-5); the target is ours >= 5x faster. The large
case runs in a child process so its peak RSS is its own; the plain loop is only timed for a few steps
there and extrapolated (labelled as such).
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from synthempathy.lib.kcenter import coverage_radius, kcenter_greedy, naive_kcenter_greedy

GIB = 2**30


def make_data(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x, int(rng.integers(n))


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def side_by_side(n, d, ratio, seed):
    x, start = make_data(n, d, seed)
    ours, t_ours = timed(kcenter_greedy, x, ratio=ratio, start=start)
    naive, t_naive = timed(naive_kcenter_greedy, x, k=len(ours), start=start)
    r_ours, r_naive = coverage_radius(x, ours), coverage_radius(x, naive)
    rel = abs(r_ours - r_naive) / r_naive
    same = next((i for i, (a, b) in enumerate(zip(ours, naive)) if a != b), len(ours))
    print(
        f"kcenter n={n} d={d} ratio={ratio}: ours {t_ours:.1f}s naive {t_naive:.1f}s "
        f"speedup {t_naive / t_ours:.1f}x radius_rel_diff {rel:.1e} "
        f"(radius ours {r_ours:.6f} naive {r_naive:.6f}; "
        f"orders identical for the first {same}/{len(ours)} picks)",
        flush=True,
    )
    if rel > 1e-5:
        sys.exit(f"FAIL: coverage radii differ by {rel:.1e} (> 1e-5)")
    if t_naive / t_ours < 5:
        print(f"WARNING: speedup {t_naive / t_ours:.1f}x is below the 5x target", flush=True)


def large(n, d, ratio, seed, naive_steps):
    x, start = make_data(n, d, seed)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc, so this is the selection's own memory
    order, t_ours = timed(kcenter_greedy, x, ratio=ratio, start=start)
    extra = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(
        f"kcenter-large n={n} d={d} ratio={ratio} k={len(order)}: ours {t_ours:.1f}s "
        f"peak_rss {peak_rss / GIB:.2f} GiB (input {x.nbytes / GIB:.2f} GiB) "
        f"peak_allocated_during_selection {extra / GIB:.2f} GiB",
        flush=True,
    )
    if naive_steps:
        _, t = timed(naive_kcenter_greedy, x, k=naive_steps + 1, start=start)
        est = t / naive_steps * (len(order) - 1)
        print(
            f"kcenter-large naive EXTRAPOLATED from {naive_steps} steps: ~{est:.0f}s "
            f"({t / naive_steps * 1e3:.0f} ms/step x {len(order) - 1} steps), speedup ~{est / t_ours:.0f}x",
            flush=True,
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--ratio", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-large", action="store_true", help="skip the n=100,000 d=1,024 case")
    p.add_argument("--large-n", type=int, default=100_000)
    p.add_argument("--large-d", type=int, default=1_024)
    p.add_argument("--large-ratio", type=float, default=0.9)
    p.add_argument(
        "--large-naive-steps",
        type=int,
        default=10,
        help="plain-loop steps timed for the extrapolated large figure (0: none)",
    )
    p.add_argument("--only-large", action="store_true", help="run the large case in this process only")
    args = p.parse_args()

    if args.only_large:
        large(args.large_n, args.large_d, args.large_ratio, args.seed, args.large_naive_steps)
        return
    print(
        f"# numpy {np.__version__}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    side_by_side(args.n, args.d, args.ratio, args.seed)
    if not args.skip_large:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--only-large",
            "--seed",
            str(args.seed),
            "--large-n",
            str(args.large_n),
            "--large-d",
            str(args.large_d),
            "--large-ratio",
            str(args.large_ratio),
            "--large-naive-steps",
            str(args.large_naive_steps),
        ]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
