"""The comparison arms and the quantity-quality sweep's points: what each adapter of 04_finetune is trained on,
and where 05_evaluate finds it.

An arm is ED plus one choice of synthetic data. `ed_plus_random`, the control of the selection, draws exactly
|D_a| examples uniformly from every parsed one, anew for each training seed, so its spread over seeds includes
the luck of the draw. A sweep point at threshold T (or K-center ratio r) is ED + the examples both filters keep
there, and its control ED + as many random ones. `authors_data` is ED + the synthetic records of the authors' own
released file (lib/authors_data.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..chain.config import ARM_NAMES, ConfigError
from ..chain.store import read_json
from . import sft
from .authors_data import synthetic_examples
from .backends import derived_seed
from .embedding import embedder
from .selection import select_diverse, select_quality

ARMS = {
    # arm: (what it tests, where its synthetic data comes from)
    "ed": ("the paper's F.T. baseline: ED only", None),
    "synth_empathy": ("the paper's model: ED + D_a (quality- and diversity-selected)", ("03_diversity", "selected.jsonl")),
    "ed_plus_random": ("control: ED + |D_a| examples drawn at random from every parsed one", "random"),
    "ed_plus_all": ("ablation: ED + every parsed synthetic example", ("01_generate", "examples.jsonl")),
    "ed_plus_quality": ("ablation: ED + quality-selected only", ("02_quality", "selected.jsonl")),
    "authors_data": ("the authors' data: ED + the synthetic records of their released file (authors_selection)",
                     "authors"),
}
assert tuple(ARMS) == ARM_NAMES  # the config validates arm names against ARM_NAMES


@dataclass(frozen=True)
class Run:
    """One adapter to train: an arm (or a sweep point), its training seed, and its synthetic examples."""
    name: str
    seed: int
    synthetic: tuple

    @property
    def folder(self) -> str:
        return f"{self.name}/seed-{self.seed}"


BASE = "base"  # the untuned base model: evaluated and shown beside the arms, trained by no one


def prediction_name(name: str, seed: int | None) -> str:
    """The file stem of a model's evaluation answers: `<arm>.seed-<s>`, or the base model's name alone."""
    return name if seed is None else f"{name}.seed-{seed}"


def random_sample(pool: list[dict], n: int, *tags) -> list[dict]:
    """n examples drawn uniformly without replacement from `pool`, seeded by the tags (arm or point, seed)."""
    return random.Random(derived_seed(*tags)).sample(pool, n)


def synthetic_for(cfg, store, arm: str, seed: int) -> list[dict]:
    """The synthetic examples of one arm for one training seed (only the random control depends on the seed)."""
    source = ARMS[arm][1]
    if source is None:
        return []
    if source == "authors":
        return synthetic_examples(cfg, store)
    if source == "random":
        pool = store.read("01_generate", "examples.jsonl")
        return random_sample(pool, len(store.read("03_diversity", "selected.jsonl")), "ed_plus_random", cfg.seed, seed)
    return store.read(*source)


def sweep_points(cfg) -> list[tuple[str, float]]:
    """The sweep's (param, value) points that need adapters of their own: the profile's own point is where
    synth_empathy and ed_plus_random are trained already."""
    points = [("threshold", t) for t in cfg.sweep_thresholds] + [("kcenter_ratio", r) for r in cfg.sweep_ratios]
    return [(p, v) for p, v in points if v != getattr(cfg, p)]


def point_name(param: str, value: float) -> str:
    return f"sweep_{'T' if param == 'threshold' else 'ratio'}{value:g}"


def sweep_selection(cfg, store, param: str, value: float, emb=None) -> list[dict]:
    """The examples both filters keep when `param` takes `value` (the profile's value for the other)."""
    threshold = value if param == "threshold" else cfg.threshold
    ratio = value if param == "kcenter_ratio" else cfg.kcenter_ratio
    kept = select_quality(store.read("02_quality", "scored.jsonl"), threshold, cfg.similarity_cut)
    if not kept:
        raise ConfigError(f"{'sweep_thresholds' if param == 'threshold' else 'sweep_ratios'} (profile {cfg.profile}): "
                          f"the point {param}={value:g} keeps no synthetic example, and its random control has none "
                          f"to match; drop the point or lower it")
    return select_diverse(kept, emb or embedder(cfg, store), ratio, cfg.seed, cfg.kcenter_bookkeeping)[0]


def plan(cfg, store) -> list[Run]:
    """Every adapter of the stage, checked before any is trained: the arms, then the sweep points, per seed."""
    runs = []
    for seed in cfg.train_seeds:
        runs += [Run(arm, seed, tuple(synthetic_for(cfg, store, arm, seed))) for arm in cfg.arms]
    points = sweep_points(cfg)
    if points:
        emb, pool = embedder(cfg, store), store.read("01_generate", "examples.jsonl")
        for param, value in points:
            chosen, name = sweep_selection(cfg, store, param, value, emb), point_name(param, value)
            for seed in cfg.train_seeds:
                runs.append(Run(name, seed, tuple(chosen)))
                runs.append(Run(f"{name}_random", seed, tuple(random_sample(pool, len(chosen), name, cfg.seed, seed))))
    return runs


def what(name: str) -> str:
    if name in ARMS:
        return ARMS[name][0]
    return ("sweep control: as many random examples as the point selects" if name.endswith("_random")
            else "sweep point: ED + the examples both filters keep there")


def sweep_runs(cfg) -> list[tuple[str, str, float, str]]:
    """(name, param, value, kind) of every sweep adapter plan() trains, kind "selected" or "random"."""
    return [(f"{point_name(p, v)}{suffix}", p, v, kind) for p, v in sweep_points(cfg)
            for suffix, kind in (("", "selected"), ("_random", "random"))]


def trained(store, name: str, seed: int) -> str:
    """The folder of a finished adapter, or a clear error."""
    folder = store.root / "04_finetune" / name / f"seed-{seed}"
    if not sft.is_completed(folder):
        raise FileNotFoundError(f"{folder}: {name!r} (seed {seed}) is not trained; run stage 04_finetune first")
    return str(folder)


def training_summary(store) -> dict:
    path = store.root / "04_finetune" / "summary.json"
    return read_json(path) if path.exists() else {}
