"""Where a stage of the chain spends its time: cProfile of one stage's helper calls on a copy of an earlier run.

  python bench/profile_stage.py                       # per-stage times of runs/tiny, then profile the slowest
  python bench/profile_stage.py 02_quality            # profile this stage (upstream copied from runs/tiny)
  python bench/profile_stage.py 05_evaluate --top 30

The upstream stage folders of runs/<profile>/ (run `make run` first) are copied into a temporary run, the
stage's own folder and work caches are left out, so the stage runs cold, exactly as in a first run. Prints the
stage's wall time, each step's (its notebook's cells), and the functions with the largest cumulative time (package
code and the libraries it calls).
Per-stage wall times of a whole chain are in runs/<profile>/manifest.json and are printed by bench/e2e.py.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from synthempathy.chain.config import load_config  # noqa: E402
from synthempathy.chain.store import STAGES, read_json  # noqa: E402
from synthempathy.lib.stage import Stage  # noqa: E402

# The helper calls each notebook makes (the notebooks add only plots and tables around them).
CALLS = {
    "01_generate": [("generate", "run_stage")],
    "02_quality": [("quality", "run_stage")],
    "03_diversity": [("diversity", "run_stage")],
    "04_finetune": [("finetune", "run_stage")],
    "05_evaluate": [("evaluate", "run_stage")],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", choices=sorted(CALLS), help="default: the slowest stage of the last run")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    source = load_config(args.profile).run_dir
    if not (source / "manifest.json").exists():
        sys.exit(f"no run in {source}: run `make run` (profile {args.profile}) first")
    timings = {s: e["seconds"] for s, e in read_json(source / "manifest.json").get("stages", {}).items()}
    total = sum(timings.values()) or 1.0
    for s, seconds in timings.items():
        print(f"# stage {s}: {seconds:7.1f} s  {100 * seconds / total:5.1f}%  (last run, manifest)")
    args.stage = args.stage or max((s for s in timings if s in CALLS), key=timings.get)
    upstream = STAGES[: STAGES.index(args.stage)]
    missing = [s for s in upstream if not (source / s).is_dir()]
    if missing:
        sys.exit(f"{source} lacks {', '.join(missing)}: run `make run` (or the earlier stages) first")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"run_root": tmp, "figures_dir": f"{tmp}/figures"}
        cfg, store = Stage(args.stage).open(args.profile, overrides)
        for s in upstream:
            shutil.copytree(source / s, store.root / s, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_work"))
        import importlib

        profiler, t0 = cProfile.Profile(), time.perf_counter()
        for module, fn in CALLS[args.stage]:
            mod = importlib.import_module(f"synthempathy.{module}")
            t1 = time.perf_counter()
            profiler.runcall(getattr(mod, fn), cfg, store)
            print(f"# {module}.{fn}: {time.perf_counter() - t1:.1f} s")
        print(f"# {args.stage} on profile {args.profile}: {time.perf_counter() - t0:.1f} s in the helper calls")
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        for module, _ in CALLS[args.stage]:  # the stage's steps, in the module's order: its notebook's cells
            path = importlib.import_module(f"synthempathy.{module}").__file__
            steps = sorted((line, fn, cum) for (file, line, fn), (_, _, _, cum, _) in stats.stats.items() if file == path)
            for _, fn, cum in steps:
                print(f"#   step {module}.{fn}: {cum:.1f} s")
        stats.sort_stats("cumulative").print_stats(r"synthempathy|transformers/(generation|trainer)|trl|peft|"
                                                   r"sentence_transformers|torch/nn/modules/module", args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()
