"""05_evaluate, the paper's stage 6: does ED + selected synthetic data beat ED alone?

Every model (the untuned base and every trained arm) answers every evaluation example greedily, with the
dialogue history as the chat. The answers are scored with the authors' automatic metrics (lib/metrics.py), the
embedding cosine to the gold reply, and the LLM judge (lib/judging.py); every figure gets a seeded 95% bootstrap
interval, and `synth_empathy` minus `ed` a paired bootstrap on the same examples.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from .lib import bootstrap as B
from .lib import judging, sft
from .lib import metrics as M
from .lib.backends import Request, Sampling, make_backend
from .lib.dialogue import chat_pairs
from .lib.embedding import Embedder, embedder
from .lib.judging import CRITERIA
from .lib.selection import select_diverse, select_quality
from .lib.stage import Stage
from .store import JsonlCache, read_json, write_json, write_jsonl, write_text

STAGE = Stage("05_evaluate")

BASE = "base"


def models_to_evaluate(cfg, store) -> dict[str, str]:
    """{name: model spec}: the untuned base, then every trained arm of cfg.arms."""
    out = {BASE: cfg.base_model}
    for arm in cfg.arms:
        folder = store.root / "04_finetune" / arm
        if not sft.is_completed(folder):
            raise FileNotFoundError(f"{folder}: arm {arm!r} is not trained; run stage 04_finetune first")
        out[arm] = str(folder)
    return out


def eval_records(cfg, store) -> list[dict]:
    records = store.read("00_data", "eval.jsonl")
    return records[: cfg.max_eval_records] if cfg.max_eval_records else records


def predict(cfg, store, name: str, spec: str, records: list[dict], progress: bool = True) -> list[dict]:
    """Greedy answers of one model to every evaluation example; cached, so a rerun generates nothing."""
    sampling = Sampling(0.0, 1.0, cfg.eval_max_new_tokens)
    system, transcript = sft.arm_input(cfg)
    requests = [Request.make(sft.model_identity(spec), chat_pairs(r["history"], system, transcript), "", sampling, 0)
                for r in records]
    cache = JsonlCache(store.work_dir("05_evaluate") / f"predictions.{name}.cache.jsonl")
    make_backend(cfg, spec).generate(requests, cache, progress, desc=f"answering: {name}")
    rows = [{"id": r["id"], "history": r["history"], "gold": r["response"], "prediction": cache[q.key]["text"].strip()}
            for r, q in zip(records, requests)]
    write_jsonl(store.path("05_evaluate", f"predictions/{name}.jsonl"), rows)
    return rows


def score_model(cfg, rows: list[dict], embedder: Embedder, judge, judge_cache, progress: bool = True) -> dict:
    """Every figure of one model with its bootstrap interval: {metric: [point, low, high]} plus raw per-example
    values for the paired comparisons."""
    preds, golds = [r["prediction"] for r in rows], [r["gold"] for r in rows]
    figures = {k: list(v) for k, v in B.bootstrap_metrics(preds, golds, cfg.bootstrap_resamples, cfg.seed).items()}
    cosines = 100 * M.embedding_cosines(preds, golds, embedder.encode)
    figures["embedding_cos"] = list(B.bootstrap_ci(cosines, cfg.bootstrap_resamples, cfg.seed))
    judged = judging.score_items(judge, [{"id": r["id"], "history": r["history"], "response": r["prediction"]}
                                         for r in rows], judge_cache, progress)
    per_example = {"embedding_cos": cosines.tolist()}
    for c in CRITERIA:
        per_example[c] = [j[c] for j in judged]
        figures[c] = list(B.bootstrap_ci(per_example[c], cfg.bootstrap_resamples, cfg.seed))
    return {"figures": figures, "per_example": per_example}


def paired(cfg, rows_a, rows_b, scored_a, scored_b) -> dict:
    golds = [r["gold"] for r in rows_a]
    out = B.paired_bootstrap([r["prediction"] for r in rows_a], [r["prediction"] for r in rows_b], golds,
                             cfg.bootstrap_resamples, cfg.seed)
    for k in scored_a["per_example"]:
        out[k] = B.paired_bootstrap_values(scored_a["per_example"][k], scored_b["per_example"][k],
                                           cfg.bootstrap_resamples, cfg.seed)
    return out


FIGURE_ORDER = (*M.KEYS, "embedding_cos", *CRITERIA)
# How the figures are grouped in the results table and the results figure (one place for both).
FAMILIES = {"BLEU": ["bleu1", "bleu2", "bleu3", "bleu4"], "ROUGE": ["rouge1", "rouge2", "rougeL"],
            "diversity and overlap": ["dist1", "dist2", "f1", "length", "embedding_cos"],
            "LLM judge (1..3)": list(CRITERIA)}
# The bars share an axis per family, so the one figure not on the x100 scale (length, in tokens) stays off it.
BAR_FAMILIES = {title: [k for k in keys if k != "length"] for title, keys in FAMILIES.items()}


def run_stage(cfg, store, progress: bool = True) -> dict:
    models = models_to_evaluate(cfg, store)
    records = eval_records(cfg, store)
    predictions = {name: predict(cfg, store, name, spec, records, progress) for name, spec in models.items()}
    emb = embedder(cfg, store)
    judge = judging.make_judge(cfg)
    judge_cache = JsonlCache(store.work_dir("05_evaluate") / "judge.cache.jsonl")
    scored = {name: score_model(cfg, rows, emb, judge, judge_cache, progress) for name, rows in predictions.items()}
    finetune_summary = _read_optional(store.root / "04_finetune" / "summary.json")
    results = {"profile": cfg.profile, "eval_examples": len(records), "seed": cfg.seed,
               "bootstrap_resamples": cfg.bootstrap_resamples, "arms": {}}
    for name in models:
        train = finetune_summary.get(name, {})
        results["arms"][name] = {"figures": {k: [round(x, 4) for x in scored[name]["figures"][k]] for k in FIGURE_ORDER},
                                 "train_examples": train.get("total"), "synthetic_examples": train.get("synthetic"),
                                 "train_tokens": train.get("train_tokens")}
    if "synth_empathy" in models and "ed" in models:
        diff = paired(cfg, predictions["synth_empathy"], predictions["ed"], scored["synth_empathy"], scored["ed"])
        results["synth_empathy_minus_ed"] = {k: {kk: round(v, 4) for kk, v in diff[k].items()} for k in FIGURE_ORDER}
    write_results(store, results)
    write_json(store.path("05_evaluate", "per_example.json"), {n: s["per_example"] for n, s in scored.items()})
    return results


# -- the quantity-quality trade-off (the paper's last claim) --------------------------------------------------

def sweep(cfg, store, progress: bool = True) -> list[dict]:
    """Retrain `ED + selected` for every threshold in cfg.sweep_thresholds (at the profile's ratio) and every
    ratio in cfg.sweep_ratios (at the profile's threshold); score each on the evaluation split.

    Reuses everything cached: the discriminator's scores, the embeddings, finished adapters and predictions.
    """
    points = [("threshold", t) for t in cfg.sweep_thresholds] + [("kcenter_ratio", r) for r in cfg.sweep_ratios]
    if not points:
        return []
    scored = store.read("02_quality", "scored.jsonl")
    ed_records = store.read("00_data", "train.jsonl")
    system, transcript = sft.arm_input(cfg)
    emb = embedder(cfg, store)
    records = eval_records(cfg, store)
    rows = []
    for param, value in points:
        sub = cfg.model_copy(update={param: value})
        kept = select_quality(scored, sub.threshold, cfg.similarity_cut)
        chosen = select_diverse(kept, emb, sub.kcenter_ratio, cfg.seed, cfg.kcenter_bookkeeping)[0] if kept else []
        items, _ = sft.training_items(ed_records, chosen, cfg.seed)
        name = f"sweep_{param}_{value:g}"
        folder = store.work_dir("05_evaluate") / "sweep" / name
        sft.train_lora(sub, items, folder, store.work_dir("05_evaluate") / "sweep" / f"{name}.ckpt",
                       name=name, system=system, transcript=transcript)
        preds = predict(cfg, store, name, str(folder), records, progress)
        figures = M.automatic_metrics([p["prediction"] for p in preds], [p["gold"] for p in preds])
        figures["embedding_cos"] = 100 * float(M.embedding_cosines([p["prediction"] for p in preds],
                                                                    [p["gold"] for p in preds], emb.encode).mean())
        rows.append({"param": param, "value": value, "synthetic": len(chosen), "train_examples": len(items),
                     **{k: round(v, 4) for k, v in figures.items()}})
    write_json(store.path("05_evaluate", "sweep.json"), rows)
    return rows


def _read_optional(path) -> dict:
    return read_json(path) if path.exists() else {}


def results_table(results: dict) -> list[dict]:
    """One row per arm: every figure as 'point [low, high]', and the data counts."""
    rows = []
    for arm, r in results["arms"].items():
        row = {"arm": arm, "train_examples": r["train_examples"], "synthetic_examples": r["synthetic_examples"]}
        row.update({k: f"{p:.2f} [{lo:.2f}, {hi:.2f}]" for k, (p, lo, hi) in r["figures"].items()})
        rows.append(row)
    return rows


def write_results(store, results: dict) -> None:
    rows = results_table(results)
    write_json(store.path("05_evaluate", "results.json"), results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(store.path("05_evaluate", "results.csv"), buf.getvalue())
    write_text(store.path("05_evaluate", "results.md"), results_markdown(results))


def results_markdown(results: dict) -> str:
    lines = [f"# Results: profile `{results['profile']}`", "",
             f"{results['eval_examples']} evaluation examples; 95% bootstrap intervals over "
             f"{results['bootstrap_resamples']} resamples (seed {results['seed']}). Automatic figures x100.", ""]
    for title, keys in FAMILIES.items():
        lines += [f"## {title}", "", "| arm | train examples | " + " | ".join(keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for arm, r in results["arms"].items():
            cells = [f"{r['figures'][k][0]:.2f} [{r['figures'][k][1]:.2f}, {r['figures'][k][2]:.2f}]" for k in keys]
            lines.append(f"| {arm} | {r['train_examples'] or '-'} | " + " | ".join(cells) + " |")
        lines.append("")
    if "synth_empathy_minus_ed" in results:
        lines += ["## synth_empathy minus ed (paired bootstrap)", "",
                  "| figure | difference | 95% interval | share of resamples > 0 |", "|---|---|---|---|"]
        for k, d in results["synth_empathy_minus_ed"].items():
            lines.append(f"| {k} | {d['point_diff']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | {d['share_above_zero']:.2f} |")
    return "\n".join(lines) + "\n"


def verdict(results: dict) -> str:
    """A plain statement of what the paired comparison shows, claiming nothing beyond it."""
    diff = results.get("synth_empathy_minus_ed")
    if not diff:
        return "The ed and synth_empathy arms were not both trained, so the paper's comparison was not made."
    better = [k for k, d in diff.items() if d["low"] > 0 and k not in ("length", "dist1", "dist2")]
    worse = [k for k, d in diff.items() if d["high"] < 0 and k not in ("length", "dist1", "dist2")]
    n = results["eval_examples"]
    text = f"On {n} evaluation examples, synth_empathy (ED + selected synthetic data) vs ed (ED only): "
    if not better and not worse:
        return text + ("no figure differs beyond its 95% paired-bootstrap interval; at this scale the synthetic data "
                       "neither helped nor hurt measurably.")
    parts = []
    if better:
        parts.append("better on " + ", ".join(f"{k} ({diff[k]['point_diff']:+.2f})" for k in better))
    if worse:
        parts.append("worse on " + ", ".join(f"{k} ({diff[k]['point_diff']:+.2f})" for k in worse))
    return text + "; ".join(parts) + " (95% paired-bootstrap intervals excluding 0); every other figure is within noise."


def example_table(predictions: dict[str, list[dict]], n: int = 5) -> list[dict]:
    """n evaluation dialogues with every model's response next to the gold."""
    names = list(predictions)
    rows = []
    for i in np.linspace(0, len(predictions[names[0]]) - 1, num=min(n, len(predictions[names[0]])), dtype=int):
        first = predictions[names[0]][i]
        row = {"last speaker turn": first["history"][-1], "gold": first["gold"]}
        row.update({name: predictions[name][i]["prediction"] for name in names})
        rows.append(row)
    return rows
