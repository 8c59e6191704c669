"""03_diversity, the paper's stage 4: K-Center-Greedy over the quality-selected examples keeps D_a and
discards D_d (lib/selection.py, lib/kcenter.py); then how diverse each set is, and one UMAP map of them all.
"""

from __future__ import annotations

import numpy as np

from .lib.dialogue import transcript
from .lib.embedding import embedder
from .lib.judging import CRITERIA
from .lib.kcenter import coverage_curve
from .lib.selection import example_text, select_diverse
from .lib.set_diversity import set_metrics
from .lib.stage import Stage
from .store import write_json, write_jsonl, write_npy

STAGE = Stage("03_diversity")
COVERAGE_RATIOS = tuple(round(r, 2) for r in np.arange(0.05, 1.0001, 0.05))


def seed_text(record: dict) -> str:
    """A seed ED record written the way synthetic examples are, so both live in one embedding space."""
    return transcript([*record["history"], record["response"]])


def run_stage(cfg, store) -> dict:
    """D_a (kept) and D_d (discarded), the diversity table and coverage curve (metrics.json), and the UMAP
    coordinates of seeds and synthetic examples (umap.npy); returns the metrics and the map's groups."""
    kept = store.read("02_quality", "selected.jsonl")
    emb = embedder(cfg, store)
    d_a, d_d, order, x = select_diverse(kept, emb, cfg.kcenter_ratio, cfg.seed, cfg.kcenter_bookkeeping)
    write_npy(store.path("03_diversity", "embeddings.npy"), x)
    write_json(store.path("03_diversity", "embedding_ids.json"), [e["id"] for e in kept])
    write_jsonl(store.path("03_diversity", "selected.jsonl"), d_a)
    write_jsonl(store.path("03_diversity", "discarded.jsonl"), d_d)

    seeds = store.read("00_data", "train.jsonl")
    synthetic = store.read("01_generate", "examples.jsonl")
    row_of = {e["id"]: i for i, e in enumerate(kept)}
    kept_rows = [row_of[e["id"]] for e in d_a]
    rest = sorted(set(range(len(kept))) - set(kept_rows))
    sets = {"seed": (seeds, seed_text, "response", None), "all synthetic": (synthetic, example_text, "output", None),
            "quality-kept": (kept, example_text, "output", list(range(len(kept)))),
            "D_a (diversity-kept)": (d_a, example_text, "output", kept_rows),
            "D_d (discarded)": (d_d, example_text, "output", rest)}
    table = {name: set_metrics(emb.encode([text(r) for r in rows]), [r[field] for r in rows],
                               (x, idx) if idx is not None else None)
             for name, (rows, text, field, idx) in sets.items()}
    curve = coverage_curve(x, order, COVERAGE_RATIOS)
    metrics = {"ratio": cfg.kcenter_ratio, "bookkeeping": cfg.kcenter_bookkeeping, "kept": len(d_a),
               "discarded": len(d_d), "sets": table,
               "coverage_curve": {"ratios": list(COVERAGE_RATIOS), "radius": [round(r, 4) for r in curve]},
               "judge_on_d_a": judge_on(store, {e["id"] for e in d_a})}
    write_json(store.path("03_diversity", "metrics.json"), metrics)
    return {**metrics, "map": umap_map(cfg, store, emb, seeds, synthetic, kept, d_a)}


def judge_on(store, ids: set[str]) -> dict:
    """The judge's mean scores (02_quality) over the examples of one set: the authors judged D_a."""
    rows = [r for r in store.read("02_quality", "judge.jsonl") if r["id"] in ids]
    return {c: round(sum(r[c] for r in rows) / len(rows), 4) if rows else None for c in CRITERIA}


def umap_map(cfg, store, emb, seeds, synthetic, kept, d_a) -> dict:
    """One seeded UMAP fit of seeds and synthetic examples (written to umap.npy), and which rows are which set."""
    vectors = np.vstack([emb.encode([seed_text(r) for r in seeds]), emb.encode([example_text(e) for e in synthetic])])
    coords = umap_coordinates(vectors, cfg.seed).astype(np.float32)
    write_npy(store.path("03_diversity", "umap.npy"), coords)
    kept_ids, d_a_ids, n = {e["id"] for e in kept}, {e["id"] for e in d_a}, len(seeds)
    groups = {"seed": list(range(n)), "all synthetic": [n + i for i in range(len(synthetic))],
              "quality-kept": [n + i for i, e in enumerate(synthetic) if e["id"] in kept_ids],
              "D_a (diversity-kept)": [n + i for i, e in enumerate(synthetic) if e["id"] in d_a_ids],
              "D_d (discarded)": [n + i for i, e in enumerate(synthetic) if e["id"] in kept_ids - d_a_ids]}
    return {"coords": coords, "groups": groups, "emotions": [e["emotion"] for e in synthetic]}


def umap_coordinates(vectors: np.ndarray, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """One seeded UMAP fit (cosine metric) for every overlay of notebook 03."""
    import umap

    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(vectors) - 1), min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(vectors)
