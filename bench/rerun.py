"""Trying another T (or K-center ratio) in a notebook cell, against rerunning the whole stage to get the same answer.

  python bench/rerun.py                      # on a copy of runs/tiny (run `make run` first)
  python bench/rerun.py --run-dir DIR --threshold 35 --ratio 0.5

Both sides start from the same finished run, copied to a temporary folder, and are timed on this machine one after
the other:
- the cell: notebook 02's cut at a new T (read the scores, `quality.cut`, redraw the histogram), and notebook 03's cut
  at a new ratio (read the stored order, `diversity.diverse_split`, recolour the stored UMAP map), in this process, no model;
- the stage: `run --from 02 --to 02 -p threshold=T` (and 03 with `kcenter_ratio`), what a new value took before the
  steps were cells: a fresh kernel and every step of the stage, from its caches (M_D, answers, embeddings, judge).
Prints each time and the ratio stage / cell (goal: >= 20x for T), with the CPU's flags.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import cpu_flags  # noqa: E402

from synthempathy import diversity, plots, quality  # noqa: E402
from synthempathy.chain import runner  # noqa: E402
from synthempathy.chain.config import load_config  # noqa: E402
from synthempathy.chain.store import RunStore, read_jsonl  # noqa: E402


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def cell_threshold(store: RunStore, threshold: float, figures: Path) -> None:
    scored = read_jsonl(store.path("02_quality", "scored.jsonl"))
    quality.cut(scored, threshold)
    plots.similarity_histogram([r["similarity"] for r in scored], threshold, "rerun", figures / "02_similarity.png")


def cell_ratio(store: RunStore, ratio: float, figures: Path) -> None:
    import numpy as np

    kept = store.read("02_quality", "selected.jsonl")
    d_a, _ = diversity.diverse_split(kept, diversity.stored_order(store), ratio)
    groups = diversity.map_groups(store, kept, d_a)
    coords = np.load(store.path("03_diversity", "umap.npy"))
    plots.umap_maps(coords, groups["groups"], groups["emotions"], "rerun", figures / "03_umap.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--run-dir", default=None, help="a finished run (default runs/<profile>)")
    parser.add_argument("--threshold", type=float, default=35.0)
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    source = Path(args.run_dir) if args.run_dir else load_config(args.profile).run_dir
    if not (source / "03_diversity" / "order.json").exists():
        raise SystemExit(f"{source} has no finished stage 03 with its stored order: run `make run` first")
    print(f"# {cpu_flags()}; load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        shutil.copytree(source, root / args.profile, ignore=shutil.ignore_patterns(".lock", "report", "notebooks"))
        store, figures = RunStore(root / args.profile), Path(tmp) / "figures"
        figures.mkdir()
        where = {"run_root": str(root), "figures_dir": str(figures)}
        for name, value, key, stage, cell in (("T", args.threshold, "threshold", 2, cell_threshold),
                                              ("ratio", args.ratio, "kcenter_ratio", 3, cell_ratio)):
            cell_s = timed(cell, store, value, figures)
            with open(os.devnull, "w") as quiet:
                stage_s = timed(runner.run, args.profile, {**where, key: value}, start=stage, stop=stage,
                                echo=lambda _: None, progress=quiet)
            print(f"rerun at {name} = {value:g}: cell {cell_s:.2f} s, stage {stage_s:.1f} s, "
                  f"ratio {stage_s / cell_s:.0f}x")


if __name__ == "__main__":
    main()
