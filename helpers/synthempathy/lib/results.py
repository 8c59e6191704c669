"""05_evaluate's results as a reviewer reads them: the table per arm (with the data each adapter was given and
what its trainer consumed), the headline differences with the smallest detectable one, the A/B judge, and a
plain verdict that claims nothing beyond its intervals; and, where `authors_selection` is set, the authors' released
selection beside ours (lib/authors_data.py).
"""

from __future__ import annotations

import csv
import io

from ..chain.store import write_json, write_text
from . import metrics as M
from .authors_data import markdown as authors_markdown
from .judging import CRITERIA
from .pairwise import ab_markdown

# How the figures are grouped in the results table and the results figure (one place for both).
FAMILIES = {"BLEU": ["bleu1", "bleu2", "bleu3", "bleu4"], "ROUGE": ["rouge1", "rouge2", "rougeL"],
            "diversity and overlap": ["dist1", "dist2", "f1", "length", "embedding_cos"],
            "LLM judge (1..3)": list(CRITERIA)}
# The bars share an axis per family, so the one figure not on the x100 scale (length, in tokens) stays off it.
BAR_FAMILIES = {title: [k for k in keys if k != "length"] for title, keys in FAMILIES.items()}
# Figures that describe the replies rather than rate them: no verdict is drawn from them.
DESCRIPTIVE = ("length", "dist1", "dist2")
assert set(M.KEYS) <= {k for keys in FAMILIES.values() for k in keys}


def training_counts(summary: dict | None, seeds: list[int]) -> dict:
    """An arm's data counts (given) and, per seed, the ED and synthetic examples its trainer consumed (counted
    on the batches that reached the loss, lib/sft.ConsumptionCount)."""
    if not summary:
        return {"train_examples": None, "ed_examples": None, "synthetic_examples": None, "consumed": {}}
    per_seed = summary.get("seeds", {})
    return {"train_examples": summary["total"], "ed_examples": summary["ed"], "synthetic_examples": summary["synthetic"],
            "consumed": {str(s): (per_seed.get(str(s)) or per_seed.get(s) or {}).get("consumed") for s in seeds}}


def judge_counts(values: dict, criteria) -> dict:
    """{"judged": answers the judge was asked about, "unscored": {criterion: how many it left unscored}} over
    every seed; {} when the judge did not score this model."""
    if not all(c in values for c in criteria):
        return {}
    asked = [v for c in criteria for rows in values[c] for v in rows]
    return {"judged": len(asked) // len(criteria),
            "unscored": {c: sum(v is None for rows in values[c] for v in rows) for c in criteria}}


def _unscored(r: dict) -> str:
    """'n of m' answers left unscored, summed over the criteria (one answer is judged once per criterion)."""
    return "-" if "unscored" not in r else f"{sum(r['unscored'].values())} of {r['judged'] * len(r['unscored'])}"


def _consumed(r: dict, source: str) -> str:
    seen = sorted({(c or {}).get(source, 0) for c in r["consumed"].values()})
    return "-" if not seen else str(seen[0]) if len(seen) == 1 else f"{seen[0]}..{seen[-1]}"


def results_table(results: dict) -> list[dict]:
    """One row per arm: the data counts, what was consumed, and every figure as 'point [low, high]'."""
    rows = []
    for arm, r in results["arms"].items():
        row = {"arm": arm, "seeds": len(r["consumed"]) or "-", "ed_examples": r["ed_examples"],
               "synthetic_examples": r["synthetic_examples"], "consumed_ed": _consumed(r, "ed"),
               "consumed_synthetic": _consumed(r, "synthetic")}
        row.update({k: f"{p:.2f} [{lo:.2f}, {hi:.2f}]" for k, (p, lo, hi) in r["figures"].items()})
        if "unscored" in r:
            row["judge_unscored"] = _unscored(r)
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


def _dash(n) -> str:
    return "-" if n is None else str(n)


def _cell(f) -> str:
    return f"{f[0]:.2f} [{f[1]:.2f}, {f[2]:.2f}]"


def results_markdown(results: dict) -> str:
    seeds = results.get("train_seeds", [results["seed"]])
    lines = [f"# Results: profile `{results['profile']}`", "",
             f"{results['eval_examples']} evaluation examples, {len(seeds)} training seed(s) {seeds}; each figure is "
             f"the mean over seeds with a 95% interval over {results['bootstrap_resamples']} resamples of the examples "
             "and the seeds. Automatic figures x100.", "", "## Data per arm", "",
             "| arm | ED examples | synthetic examples | ED consumed | synthetic consumed (per seed) |", "|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        lines.append(f"| {arm} | {_dash(r['ed_examples'])} | {_dash(r['synthetic_examples'])} | {_consumed(r, 'ed')} "
                     f"| {_consumed(r, 'synthetic')} |")
    lines.append("")
    for title, keys in FAMILIES.items():
        judged = set(keys) == set(CRITERIA)  # the judge's table says how many answers it left unscored
        lines += [f"## {title}", "", "| arm | " + " | ".join(keys) + (" | unscored |" if judged else " |"),
                  "|---|" + "---|" * (len(keys) + judged)]
        lines += [f"| {arm} | " + " | ".join(_cell(r["figures"][k]) for k in keys) + (f" | {_unscored(r)} |" if judged else " |")
                  for arm, r in results["arms"].items()]
        lines.append("")
    for name, diff in results.get("comparisons", {}).items():
        lines += [f"## {name} (paired)", "", "| figure | difference | 95% interval | share > 0 | smallest detectable |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k} | {d['point_diff']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | {d['share_above_zero']:.2f} "
                  f"| {d['detectable']:.2f} |" for k, d in diff.items()]
        lines.append("")
    for name, summary in results.get("ab", {}).items():
        x, y = name.split(" vs ")
        lines += [f"## A/B judge: {name}", "", ab_markdown(summary, x, y), ""]
    if results.get("authors_data"):
        lines.append(authors_markdown(results["authors_data"]))
    return "\n".join(lines) + "\n"


def verdict(results: dict, x: str = "synth_empathy", y: str = "ed") -> str:
    """What the paired comparison of x and y shows, claiming nothing beyond it, with the power of the run."""
    diff = results.get("comparisons", {}).get(f"{x} - {y}")
    if not diff:
        return f"The {x} and {y} arms were not both trained, so this comparison was not made."
    rated = {k: d for k, d in diff.items() if k not in DESCRIPTIVE}
    better = [k for k, d in rated.items() if d["low"] > 0]
    worse = [k for k, d in rated.items() if d["high"] < 0]
    text = (f"On {results['eval_examples']} evaluation examples and {len(results.get('train_seeds', [0]))} training "
            f"seed(s), {x} vs {y}: ")
    if not better and not worse:
        text += "no figure differs beyond its 95% interval"
    else:
        parts = ([f"better on {_listed(diff, better)}"] if better else []) + ([f"worse on {_listed(diff, worse)}"] if worse else [])
        text += "; ".join(parts) + " (95% intervals excluding 0); every other figure is within noise"
    return text + ". " + power_line(diff)


def _listed(diff: dict, keys: list[str]) -> str:
    return ", ".join(f"{k} ({diff[k]['point_diff']:+.2f})" for k in keys)


def power_line(diff: dict, keys=("bleu2", "rougeL", "embedding_cos", "empathy")) -> str:
    """The smallest true difference this run would detect (80% power, two-sided 5%) next to the measured one."""
    shown = [k for k in keys if k in diff]
    return ("At this scale the run detects differences of at least: " +
            ", ".join(f"{k} {diff[k]['detectable']:.2f} (measured {diff[k]['point_diff']:+.2f})" for k in shown) +
            "; a smaller true effect would likely go unseen.")
