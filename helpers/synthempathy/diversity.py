"""03_diversity, the paper's stage 4: K-Center-Greedy over the quality-selected examples keeps D_a and
discards D_d (lib/selection.py, lib/kcenter.py); then how diverse each set is, and one UMAP map of them all.

The greedy order is computed once and stored (order.json): the selection at any ratio is a prefix of it, so a
notebook cell can try another ratio without recomputing the order or refitting the map.
"""

from __future__ import annotations

import numpy as np

from .chain.store import hash_bytes, read_json, write_json, write_jsonl, write_npy, write_text
from .lib.dialogue import transcript
from .lib.embedding import embedder
from .lib.judging import CRITERIA
from .lib.kcenter import coverage_curve, kcenter_greedy, naive_kcenter_greedy  # noqa: F401 - notebook 03 shows it
from .lib.selection import diverse_split, example_text, kept_by_kcenter  # noqa: F401 - notebook 03 shows it
from .lib.set_diversity import set_metrics
from .lib.stage import Stage

STAGE = Stage("03_diversity")
COVERAGE_RATIOS = tuple(round(r, 2) for r in np.arange(0.05, 1.0001, 0.05))


def seed_text(record: dict) -> str:
    """A seed ED record written the way synthetic examples are, so both live in one embedding space."""
    return transcript([*record["history"], record["response"]])


@STAGE.step
def embed(cfg, store, kept: list[dict]) -> np.ndarray:
    """Step 1. The embedding of every quality-selected example (instruction + output, as the authors embed),
    written to embeddings.npy with its ids; cached in the run, so a rerun loads no model."""
    if not kept:
        raise ValueError("no quality-selected example to diversify (the quality threshold kept none)")
    x = embedder(cfg, store).encode([example_text(e) for e in kept])
    write_npy(store.path("03_diversity", "embeddings.npy"), x)
    write_json(store.path("03_diversity", "embedding_ids.json"), [e["id"] for e in kept])
    return x


def greedy_order(x: np.ndarray, seed: int) -> list[int]:
    """Step 2. The K-Center-Greedy order of all rows from a seeded random first centre: each next point is the one
    farthest (L2) from its nearest chosen one. The fast exact kernel; `naive_kcenter_greedy` is the plain loop."""
    return kcenter_greedy(x, k=len(x), seed=seed)


@STAGE.step
def write_selection(store, order: list[int], d_a: list[dict], d_d: list[dict]) -> None:
    """Step 3 (the cut at the ratio is `diverse_split`), recorded: the order, D_a (selected.jsonl, what the training arms read) and D_d (discarded.jsonl)."""
    write_json(store.path("03_diversity", "order.json"), order)
    write_jsonl(store.path("03_diversity", "selected.jsonl"), d_a)
    write_jsonl(store.path("03_diversity", "discarded.jsonl"), d_d)


def stored_order(store) -> list[int]:
    """The greedy order as step 3 wrote it: a cell tries another ratio as a prefix of it."""
    return read_json(store.path("03_diversity", "order.json"))


@STAGE.step
def set_table(cfg, store, kept: list[dict], d_a: list[dict], x: np.ndarray) -> dict:
    """Step 4. How diverse each set is (lib/set_diversity.py): seeds, all synthetic, quality-kept, D_a, D_d."""
    emb = embedder(cfg, store)
    seeds = store.read("00_data", "train.jsonl")
    synthetic = store.read("01_generate", "examples.jsonl")
    row_of = {e["id"]: i for i, e in enumerate(kept)}
    kept_rows = [row_of[e["id"]] for e in d_a]
    rest = sorted(set(range(len(kept))) - set(kept_rows))
    sets = {"seed": (seeds, seed_text, "response", None), "all synthetic": (synthetic, example_text, "output", None),
            "quality-kept": (kept, example_text, "output", list(range(len(kept)))),
            "D_a (diversity-kept)": (d_a, example_text, "output", kept_rows),
            "D_d (discarded)": ([kept[i] for i in rest], example_text, "output", rest)}
    return {name: set_metrics(emb.encode([text(r) for r in rows]), [r[field] for r in rows],
                              (x, idx) if idx is not None else None)
            for name, (rows, text, field, idx) in sets.items()}


def coverage(x: np.ndarray, order: list[int]) -> dict:
    """Step 5. The coverage radius (the K-Center objective: the largest distance from any example to its nearest
    kept one) of every prefix of the order, at ratios 0.05..1."""
    return {"ratios": list(COVERAGE_RATIOS), "radius": [round(r, 4) for r in coverage_curve(x, order, COVERAGE_RATIOS)]}


@STAGE.step
def write_metrics(store, ratio: float, bookkeeping: str, d_a: list[dict], d_d: list[dict], table: dict,
                  curve: dict) -> dict:
    """Steps 4-5, recorded in metrics.json, with the judge's scores (02_quality) on D_a, the set the authors judged."""
    metrics = {"ratio": ratio, "bookkeeping": bookkeeping, "kept": len(d_a), "discarded": len(d_d), "sets": table,
               "coverage_curve": curve, "judge_on_d_a": judge_on(store, {e["id"] for e in d_a})}
    write_json(store.path("03_diversity", "metrics.json"), metrics)
    return metrics


def judge_on(store, ids: set[str]) -> dict:
    """The judge's mean scores (02_quality) over the examples of one set: the authors judged D_a."""
    rows = [r for r in store.read("02_quality", "judge.jsonl") if r["id"] in ids]
    return {c: round(sum(r[c] for r in rows) / len(rows), 4) if rows else None for c in CRITERIA}


@STAGE.step
def umap_coordinates(cfg, store) -> np.ndarray:
    """Step 6. One seeded UMAP fit (cosine) of every seed and every synthetic example, written to umap.npy. It does
    not depend on either filter: a new T or ratio only recolours the map (`map_groups`)."""
    import umap

    emb = embedder(cfg, store)
    seeds, synthetic = store.read("00_data", "train.jsonl"), store.read("01_generate", "examples.jsonl")
    vectors = np.vstack([emb.encode([seed_text(r) for r in seeds]), emb.encode([example_text(e) for e in synthetic])])
    path, fitted = store.path("03_diversity", "umap.npy"), store.work_dir("03_diversity") / "umap.inputs"
    inputs = hash_bytes(vectors.tobytes() + f"seed={cfg.seed}".encode())
    if path.exists() and fitted.exists() and fitted.read_text() == inputs:
        return np.load(path)  # the same points and seed: the fit is the one stored
    reducer = umap.UMAP(n_neighbors=min(15, len(vectors) - 1), min_dist=0.1, metric="cosine",
                        random_state=cfg.seed, n_jobs=1)
    coords = reducer.fit_transform(vectors).astype(np.float32)
    write_npy(path, coords)
    write_text(fitted, inputs)
    return coords


def map_groups(store, kept: list[dict], d_a: list[dict]) -> dict:
    """Which rows of the map are which set, and the emotion of each synthetic row."""
    n, synthetic = len(store.read("00_data", "train.jsonl")), store.read("01_generate", "examples.jsonl")
    kept_ids, d_a_ids = {e["id"] for e in kept}, {e["id"] for e in d_a}
    members = {"all synthetic": lambda i: True, "quality-kept": kept_ids.__contains__,
               "D_a (diversity-kept)": d_a_ids.__contains__, "D_d (discarded)": lambda i: i in kept_ids - d_a_ids}
    groups = {"seed": list(range(n)), **{name: [n + j for j, e in enumerate(synthetic) if member(e["id"])]
                                         for name, member in members.items()}}
    return {"groups": groups, "emotions": [e["emotion"] for e in synthetic]}


def run_stage(cfg, store) -> dict:
    """The steps in order, as notebook 03 takes them: metrics.json's content and the map (coords and groups)."""
    kept = store.read("02_quality", "selected.jsonl")
    x = embed(cfg, store, kept)
    order = greedy_order(x, cfg.seed)
    d_a, d_d = diverse_split(kept, order, cfg.kcenter_ratio, cfg.kcenter_bookkeeping)
    write_selection(store, order, d_a, d_d)
    metrics = write_metrics(store, cfg.kcenter_ratio, cfg.kcenter_bookkeeping, d_a, d_d,
                            set_table(cfg, store, kept, d_a, x), coverage(x, order))
    return {**metrics, "map": {"coords": umap_coordinates(cfg, store), **map_groups(store, kept, d_a)}}
