"""05_evaluate, the paper's stage 6: does ED + selected synthetic data beat ED alone, and beat chance?

Every model (the untuned base, and every trained arm once per training seed) answers every evaluation example
greedily, with the dialogue history as the chat. The answers are scored with the authors' automatic metrics
(lib/metrics.py), the embedding cosine to the gold reply, and the LLM judge (lib/judging.py). Every figure is
the mean over training seeds with a seeded 95% interval that resamples the examples and the seeds; the headline
differences (synth_empathy minus ed, and minus its random control) are paired on the same resamples and carry
the smallest difference the run could have detected. The pairwise A/B judge (lib/pairwise.py) and the
quantity-quality sweep (the sweep adapters of 04) complete the paper's claims.
"""

from __future__ import annotations

import numpy as np

from .chain.store import JsonlCache, write_json, write_jsonl
from .lib import arms, authors_data, judging, pairwise, served, sft
from .lib import bootstrap as B
from .lib import metrics as M
from .lib import results as R
from .lib.backends import Request, Sampling, make_backend
from .lib.bootstrap import DETECTABLE_Z, seeded_ci  # noqa: F401 - notebook 05 shows them
from .lib.dialogue import chat_pairs
from .lib.embedding import Embedder, embedder
from .lib.judging import CRITERIA, make_judge
from .lib.metrics import corpus_metrics, embedding_cosines  # noqa: F401 - notebook 05 shows them
from .lib.stage import Stage

STAGE = Stage("05_evaluate")

BASE, prediction_name = arms.BASE, arms.prediction_name
# The comparisons a reviewer reads first: the paper's claim, and whether the selection beats chance.
HEADLINE = (("synth_empathy", "ed"), ("synth_empathy", "ed_plus_random"))


def models_to_evaluate(cfg, store) -> dict[str, dict[int | None, str]]:
    """{name: {training seed: model spec}}: the untuned base (seed None), then every arm of cfg.arms per seed."""
    out: dict[str, dict] = {BASE: {None: cfg.base_model}}
    for arm in cfg.arms:
        out[arm] = {seed: arms.trained(store, arm, seed) for seed in cfg.train_seeds}
    return out


def eval_records(cfg, store) -> list[dict]:
    records = store.read("00_data", "eval.jsonl")
    return records[: cfg.max_eval_records] if cfg.max_eval_records else records


def served_name(cfg, name: str) -> str:
    """The model name the evaluation endpoints serve a model under: the base under base_model (vLLM's default
    for `vllm serve <base_model>`), an adapter as the LoRA module named like its predictions, `<arm>.seed-<s>`."""
    return cfg.base_model if name == BASE else name


def answering_backend(cfg, name: str, spec: str):
    """The model that answers the evaluation: at cfg.eval_endpoints when set (the one OpenAI backend: pool,
    round-robin, failover), else in process. The cache key is the same either way (sft.model_identity), so
    answers carry over between the two; a server's greedy answers may differ from in-process ones in the last
    digits (other kernels, batching), which a reproduction that switches between them should know."""
    if cfg.eval_endpoints:
        return make_backend(cfg, served_name(cfg, name), cfg.eval_endpoints)
    return make_backend(cfg, spec)


def predict(cfg, store, name: str, spec: str, records: list[dict], progress: bool = True) -> list[dict]:
    """Greedy answers of one model to every evaluation example; cached, so a rerun generates nothing."""
    sampling = Sampling(0.0, 1.0, cfg.eval_max_new_tokens)
    system, transcript = sft.arm_input(cfg)
    requests = [Request.make(sft.model_identity(spec), chat_pairs(r["history"], system, transcript), "", sampling, 0)
                for r in records]
    cache = JsonlCache(store.work_dir("05_evaluate") / f"predictions.{name}.cache.jsonl")
    answering_backend(cfg, name, spec).generate(requests, cache, progress, desc=f"answering: {name}")
    rows = [{"id": r["id"], "history": r["history"], "gold": r["response"], "prediction": cache[q.key]["text"].strip()}
            for r, q in zip(records, requests)]
    write_jsonl(store.path("05_evaluate", f"predictions/{name}.jsonl"), rows)
    return rows


def predict_seeds(cfg, store, name: str, specs: dict, records, progress: bool = True) -> list[list[dict]]:
    """One prediction list per training seed of a model (one list for the base)."""
    return [predict(cfg, store, prediction_name(name, seed), spec, records, progress) for seed, spec in specs.items()]


def per_example(cfg, by_seed: list[list[dict]], emb: Embedder, judge=None, judge_cache=None, progress=True) -> dict:
    """{figure: one row of per-example values per seed}: the embedding cosine, and the judge's criteria."""
    out = {"embedding_cos": [(100 * M.embedding_cosines([r["prediction"] for r in rows], [r["gold"] for r in rows],
                                                        emb.encode)).tolist() for rows in by_seed]}
    if judge is not None:
        judged = [judging.score_items(judge, [{"id": r["id"], "history": r["history"], "response": r["prediction"]}
                                              for r in rows], judge_cache, progress) for rows in by_seed]
        out.update({c: [[j[c] for j in rows] for rows in judged] for c in CRITERIA})
    return out


def figures_of(cfg, by_seed: list[list[dict]], values: dict) -> dict:
    """{figure: [point, low, high]}, resampling the examples and the training seeds."""
    golds = [r["gold"] for r in by_seed[0]]
    figures = B.bootstrap_metrics([[r["prediction"] for r in rows] for rows in by_seed], golds,
                                  cfg.bootstrap_resamples, cfg.seed)
    figures.update({k: B.seeded_ci(v, cfg.bootstrap_resamples, cfg.seed) for k, v in values.items()})
    return {k: [round(x, 4) for x in v] for k, v in figures.items()}


def paired(cfg, a: list[list[dict]], b: list[list[dict]], values_a: dict, values_b: dict) -> dict:
    """A minus B, seed paired with seed, on the same example resamples; with the smallest detectable difference."""
    golds = [r["gold"] for r in a[0]]
    out = B.paired_bootstrap([[r["prediction"] for r in rows] for rows in a],
                             [[r["prediction"] for r in rows] for rows in b], golds, cfg.bootstrap_resamples, cfg.seed)
    for k in values_a:
        out[k] = B.paired_bootstrap_values(values_a[k], values_b[k], cfg.bootstrap_resamples, cfg.seed)
    return {k: {kk: round(v, 4) for kk, v in out[k].items()} for k in out}


FIGURE_ORDER = (*M.KEYS, "embedding_cos", *CRITERIA)
# What notebook 05 shows, from the modules that define it.
FAMILIES, BAR_FAMILIES, verdict = R.FAMILIES, R.BAR_FAMILIES, R.verdict
results_table, results_markdown, ab_markdown = R.results_table, R.results_markdown, pairwise.ab_markdown
authors_markdown = authors_data.markdown


@STAGE.step
def answer(cfg, store, progress: bool = True) -> dict[str, list[list[dict]]]:
    """Step 1. Every model answers every evaluation example greedily: {name: one prediction list per training
    seed}, each written to predictions/<name>[.seed-<s>].jsonl; cached, so a rerun generates nothing. At
    evaluation servers, each must first show that it serves every adapter from its folder (lib/served.py)."""
    records = eval_records(cfg, store)
    models = models_to_evaluate(cfg, store)
    if cfg.eval_endpoints:
        served.check_served(answering_backend(cfg, BASE, cfg.base_model), served_adapters(cfg, store, models),
                            cfg.base_model)
    return {name: predict_seeds(cfg, store, name, specs, records, progress) for name, specs in models.items()}


def served_adapters(cfg, store, models: dict[str, dict[int | None, str]]) -> dict[str, str]:
    """{module name at the evaluation servers: adapter folder} of every adapter the stage asks: the arms' and the
    sweep's."""
    out = {prediction_name(name, seed): spec for name, specs in models.items() if name != BASE
           for seed, spec in specs.items()}
    out.update({prediction_name(name, seed): arms.trained(store, name, seed)
                for name, *_ in arms.sweep_runs(cfg) for seed in cfg.train_seeds})
    return out


@STAGE.step
def score_answers(cfg, store, predictions: dict, judge, progress: bool = True) -> dict:
    """Step 2. Per example, per seed: the embedding cosine to the gold reply and the `judge`'s expected scores
    ({name: {figure: rows}}, written to per_example.json); BLEU, Dist, ROUGE and F1 are corpus figures (step 3)."""
    emb = embedder(cfg, store)
    judge_cache = JsonlCache(store.work_dir("05_evaluate") / "judge.cache.jsonl")
    values = {name: per_example(cfg, p, emb, judge, judge_cache, progress) for name, p in predictions.items()}
    write_json(store.path("05_evaluate", "per_example.json"), values)
    return values


def intervals(cfg, store, predictions: dict, values: dict) -> dict:
    """Step 3. Per model, every figure as [point, low, high], resampling the examples and the training seeds, with
    what its trainer consumed and how many answers the judge scored (its means are over those)."""
    summary = arms.training_summary(store)
    return {name: {"figures": dict(sorted(figures_of(cfg, predictions[name], values[name]).items(),
                                          key=lambda kv: FIGURE_ORDER.index(kv[0]))),
                   **R.training_counts(summary.get(name), cfg.train_seeds if name != BASE else []),
                   **R.judge_counts(values[name], CRITERIA)}
            for name in predictions}


def differences(cfg, predictions: dict, values: dict) -> dict:
    """Step 4. The headline comparisons, A minus B paired on the same resamples, with the smallest difference the
    run could have detected."""
    return {f"{x} - {y}": paired(cfg, predictions[x], predictions[y], values[x], values[y])
            for x, y in HEADLINE if x in predictions and y in predictions}


@STAGE.step
def ab_verdicts(cfg, store, predictions: dict, judge, progress: bool = True) -> dict:
    """Step 5. The pairwise A/B `judge` on every pair of `ab_pairs`, both orders, seed by seed."""
    return {f"{x} vs {y}": ab_judge(cfg, store, judge, predictions[x], predictions[y], progress)
            for x, y in cfg.ab_comparisons}


@STAGE.step
def sweep_points(cfg, store, arm_figures: dict, progress: bool = True) -> list[dict]:
    """Step 6. The quantity-quality sweep: every sweep adapter of 04 scored like the arms (empty in `tiny`)."""
    return sweep(cfg, store, eval_records(cfg, store), embedder(cfg, store), {"arms": arm_figures}, progress)


@STAGE.step
def write_results(cfg, store, arm_figures: dict, comparisons: dict, ab: dict, sweep_rows: list[dict]) -> dict:
    """Steps 1-6, recorded: results.json, results.csv and results.md."""
    results = {"profile": cfg.profile, "eval_examples": len(eval_records(cfg, store)), "seed": cfg.seed,
               "train_seeds": cfg.train_seeds, "bootstrap_resamples": cfg.bootstrap_resamples, "arms": arm_figures,
               "comparisons": comparisons, "ab": ab, "sweep": sweep_rows}
    if cfg.authors_selection:  # their released selection beside ours (lib/authors_data.py)
        results["authors_data"] = authors_data.report(cfg, store)
    R.write_results(store, results)
    return results


def run_stage(cfg, store, progress: bool = True) -> dict:
    """The steps in order, as notebook 05 takes them; returns results.json's content."""
    predictions = answer(cfg, store, progress)
    judge = make_judge(cfg)  # one judge for both steps: an in-process model is loaded once, when first asked
    values = score_answers(cfg, store, predictions, judge, progress)
    arm_figures = intervals(cfg, store, predictions, values)
    return write_results(cfg, store, arm_figures, differences(cfg, predictions, values),
                         ab_verdicts(cfg, store, predictions, judge, progress),
                         sweep_points(cfg, store, arm_figures, progress))


def ab_judge(cfg, store, judge, x: list[list[dict]], y: list[list[dict]], progress: bool = True) -> dict:
    """Win / tie / lose of x against y per criterion, judged in both orders, seed by seed; intervals resample the
    examples and the seeds."""
    n = cfg.ab_records or len(x[0])
    cache = JsonlCache(store.work_dir("05_evaluate") / "pairwise.cache.jsonl")
    outcomes = [pairwise.judge_pairs(judge, [{"id": a["id"], "history": a["history"], "x": a["prediction"],
                                              "y": b["prediction"]} for a, b in zip(rows_x[:n], rows_y[:n])],
                                     cache, progress) for rows_x, rows_y in zip(x, y)]
    return pairwise.ab_summary(outcomes, cfg.bootstrap_resamples, cfg.seed)


# -- the quantity-quality trade-off (the paper's last claim) --------------------------------------------------

def sweep(cfg, store, records, emb: Embedder, results: dict, progress: bool = True) -> list[dict]:
    """Every sweep adapter of 04 scored like the arms (automatic figures and embedding cosine, no judge), plus
    the points the arms already are: ed at size 0, synth_empathy and ed_plus_random at |D_a|."""
    summary = arms.training_summary(store)
    rows = []
    for name, param, value, kind in arms.sweep_runs(cfg):
        specs = {seed: arms.trained(store, name, seed) for seed in cfg.train_seeds}
        by_seed = predict_seeds(cfg, store, name, specs, records, progress)
        figures = figures_of(cfg, by_seed, per_example(cfg, by_seed, emb))
        rows.append({"name": name, "param": param, "value": value, "kind": kind,
                     "synthetic": summary[name]["synthetic"], "figures": figures})
    for name, kind in (("ed", "both"), ("synth_empathy", "selected"), ("ed_plus_random", "random")):
        if name in results["arms"] and rows:
            rows.append({"name": name, "param": "profile", "value": None, "kind": kind,
                         "synthetic": results["arms"][name]["synthetic_examples"],
                         "figures": {k: v for k, v in results["arms"][name]["figures"].items() if k not in CRITERIA}})
    return rows


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
