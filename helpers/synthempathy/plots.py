"""Every figure the notebooks draw, in one style. Each function saves a PNG and returns the figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless under papermill and CI; Jupyter's inline backend still displays figures
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
PNG_META = {"Software": None}  # no version string in the file: the same run gives the same bytes


def save(fig, path: str | Path):
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_META)
    return fig


def corpus_overview(stats: dict, title: str, path: str | Path):
    """Emotion distribution, turns per conversation and response length of one corpus (notebook 00)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    emo = stats["emotions"]
    names = sorted(emo, key=lambda e: (-emo[e], e))
    sns.barplot(x=[emo[n] for n in names], y=names, ax=axes[0], color="#4C72B0", orient="h")
    axes[0].set(title=f"{title}: conversations per emotion", xlabel="conversations", ylabel="")
    axes[0].tick_params(axis="y", labelsize=7)
    turns = stats["turns_per_conversation"]
    axes[1].bar([str(k) for k in turns], list(turns.values()), color="#55A868")
    axes[1].set(title="turns up to the last listener reply", xlabel="turns", ylabel="conversations")
    sns.histplot(stats["response_words"], ax=axes[2], bins=20, color="#C44E52")
    axes[2].set(title="listener response length", xlabel="words", ylabel="responses")
    return save(fig, path)


def generation_overview(summary: dict, generations: list[dict], title: str, path: str | Path):
    """Parse status, rounds per generated dialogue, and the histogram of k (the authors plot it) (notebook 01)."""
    from collections import Counter

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    status = summary["status"]
    order = [s for s in ("ok", "one_round", "no_pair", "copied_example") if s in status]
    axes[0].bar(order, [status[s] for s in order], color=["#55A868" if s == "ok" else "#C44E52" for s in order])
    axes[0].set(title=f"{title}: parse status of {summary['generations']} outputs", ylabel="outputs")
    rounds = Counter(len(g["rounds"]) for g in generations)
    axes[1].bar([str(k) for k in sorted(rounds)], [rounds[k] for k in sorted(rounds)], color="#4C72B0")
    axes[1].set(title="parsed rounds per output", xlabel="rounds", ylabel="outputs")
    ks = summary["k"]
    axes[2].bar([str(k) for k in ks], list(ks.values()), color="#8172B2")
    axes[2].set(title=f"k: earlier rounds kept ({summary['examples']} examples)", xlabel="k", ylabel="examples")
    return save(fig, path)
