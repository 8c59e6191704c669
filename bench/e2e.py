"""Wall time and peak memory of the whole `tiny` chain (after setup), against the 10-minute / 4 GiB target.

Runs `python -m synthempathy run --profile tiny --force` in a fresh run folder, as a child process, and reads
per-stage timings from the run's manifest, and each notebook's slowest cells from papermill's record.
    python bench/e2e.py [--profile tiny] [-p key=value ...]
    python bench/e2e.py --in-place      # into runs/<profile>/ and figures/ instead: the committed default run
    python bench/e2e.py --avx2          # PyTorch's kernels held to AVX2, as on a CPU without AVX-512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import AVX2_ONLY, cpu_flags

TARGET_SECONDS, STRETCH_SECONDS, TARGET_GIB = 600, 300, 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("--in-place", action="store_true", help="run in runs/<profile>/ and the profile's figures")
    parser.add_argument("--avx2", action="store_true", help="hold the kernels to AVX2 (bench/machine.py)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(AVX2_ONLY if args.avx2 else {})}
    print(f"# CPU: {cpu_flags(env)}; load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.in_place:
            from synthempathy.chain.config import load_config

            run_dir, where = load_config(args.profile).run_dir, []
            shutil.rmtree(run_dir, ignore_errors=True)  # cold: no cache survives
        else:
            run_dir, where = Path(tmp) / args.profile, ["-p", f"run_root={tmp}", "-p", f"figures_dir={tmp}/figures"]
        cmd = [sys.executable, "-m", "synthempathy", "run", "--profile", args.profile, "--force", *where,
               *sum((["-p", p] for p in args.param), [])]
        t0 = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode:
            raise SystemExit(f"the chain failed:\n{proc.stderr[-3000:]}")
        # the largest resident set of any process the chain started (each notebook runs in its own kernel)
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        manifest = json.loads((run_dir / "manifest.json").read_text())
        slowest = {nb.stem: slowest_cells(nb) for nb in sorted((run_dir / "notebooks").glob("*.ipynb"))}
    for stage, entry in manifest["stages"].items():
        print(f"e2e stage {stage}: {entry['seconds']:.1f} s; slowest cells: {slowest.get(stage, '?')}")
    print(f"e2e {args.profile}: wall {wall:.0f} s ({wall / 60:.1f} min), peak RSS of one process {peak_gib:.2f} GiB; "
          f"ratio to the 10-min target {wall / TARGET_SECONDS:.2f}x (stretch 5 min: {wall / STRETCH_SECONDS:.2f}x), "
          f"to the 4 GiB target {peak_gib / TARGET_GIB:.2f}x")


def slowest_cells(notebook: Path, n: int = 3) -> str:
    """'8: 58.5 s, 4: 2.3 s': the n longest cells of an executed notebook (index: seconds), from papermill's record."""
    cells = json.loads(notebook.read_text())["cells"]
    took = sorted(((c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0, i) for i, c in enumerate(cells)),
                  reverse=True)[:n]
    return ", ".join(f"{i}: {d:.1f} s" for d, i in took)


if __name__ == "__main__":
    main()
