"""Every figure the notebooks draw, in one style. Each function saves a PNG (given a path) and returns the figure.
And two teaching aids: `source`, which shows a method step's code where a notebook teaches it, and `explore`, a
slider that redraws a figure for another value of a parameter."""

from __future__ import annotations

import inspect
import io
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless under papermill and CI; Jupyter's inline backend still displays figures
# matplotlib's category axis logs at INFO each time it is given strings such as "1", "2": here they are categories
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .chain.store import LOCK_ENV, STAGES  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
PNG_META = {"Software": None}  # no version string in the file: the same run gives the same bytes


def source(*steps):
    """The code of method steps as the package runs it, for the notebook cell that teaches them: read from the
    package itself, so what the reader sees is what the runner executes (no copy to drift)."""
    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(inspect.unwrap(f)).rstrip() for f in steps), language="python")


def explore(draw, name: str, values, value):
    """Show `draw(value)`, a figure; in JupyterLab, add a slider over `values` that redraws it in place for the
    value chosen. `draw` should only read (the stored scores, the stored order): moving the slider writes nothing.

    Run by the runner (papermill, no one to move it), the figure at `value` is all the cell shows: a widget saved in
    a notebook file renders as nothing on the report page."""
    from IPython.display import Image, display

    def png(v) -> Image:
        fig = draw(v)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, metadata=PNG_META)
        plt.close(fig)
        return Image(data=buf.getvalue())

    shown = display(png(value), display_id=True)
    if os.environ.get(LOCK_ENV):
        return
    import ipywidgets

    options = sorted({*values, value})
    slider = ipywidgets.SelectionSlider(options=options, value=value, description=name, continuous_update=False,
                                        layout=ipywidgets.Layout(width="60%"))
    slider.observe(lambda change: shown.update(png(change["new"])), names="value")
    display(slider)


def save(fig, path: str | Path | None):
    fig.tight_layout()
    if path is not None:
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
    law = summary.get("turn_sampling", "uniform")
    axes[2].set(title=f"k: earlier rounds kept ({summary['examples']} examples, {law} law)", xlabel="k",
                ylabel="examples")
    return save(fig, path)


def similarity_histogram(similarities: list[float], threshold: float, title: str, path: str | Path | None = None):
    """The authors' figure: histogram of S = 100 cos(E_D, E_G) in bins of 10, with T marked (notebook 02)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.hist(similarities, bins=range(0, 101, 10), color="#4C72B0", edgecolor="white")
    for t, style in ((50, ":"), (60, "--")):
        kept = sum(s >= t for s in similarities)
        ax.axvline(t, color="#C44E52" if t == threshold else "grey", ls=style, lw=2,
                   label=f"T = {t}: keeps {kept} of {len(similarities)}")
    if threshold not in (50, 60):
        ax.axvline(threshold, color="#C44E52", lw=2, label=f"T = {threshold} (this run)")
    ax.set(title=f"{title}: similarity of the synthetic reply to M_D's reply", xlabel="S = 100 x cosine",
           ylabel="examples", xlim=(0, 100))
    ax.legend(loc="upper left")
    return save(fig, path)


def judge_overview(rows: list[dict], panel: list[dict], criteria, title: str, path: str | Path):
    """Judge scores of the synthetic data before/after selection, and the sanity panel (notebook 02)."""
    import pandas as pd

    n = len(panel) // 2
    long = [{"criterion": c, "set": "all synthetic", "score": r[c]} for r in rows for c in criteria]
    long += [{"criterion": c, "set": "quality-selected", "score": r[c]} for r in rows if r["selected"] for c in criteria]
    long += [{"criterion": c, "set": "seed: real pair" if i < n else "seed: shuffled pair", "score": r[c]}
             for i, r in enumerate(panel) for c in criteria]
    long = [x for x in long if x["score"] is not None]  # an item the judge left unscored has no score to draw
    fig, ax = plt.subplots(figsize=(11, 4.5))
    sns.boxplot(pd.DataFrame(long), x="criterion", y="score", hue="set", ax=ax,
                palette=["#4C72B0", "#55A868", "#8172B2", "#C44E52"])
    ax.set(title=f"{title}: judge's expected score (1..3)", ylim=(0.9, 3.1), xlabel="")
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, path)


def umap_maps(coords, groups: dict, emotions: list[str], title: str, path: str | Path | None = None):
    """Three overlays of one UMAP fit (notebook 03): (a) seed vs synthetic vs the two filters, (b) the synthetic
    data by its seed's emotion, (c) D_a vs D_d. `groups` maps a name to row indices into `coords`."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    layers = [("seed", "#BBBBBB", 14), ("all synthetic", "#4C72B0", 18), ("quality-kept", "#DD8452", 26),
              ("D_a (diversity-kept)", "#55A868", 10)]
    for name, color, size in layers:
        idx = groups[name]
        axes[0].scatter(coords[idx, 0], coords[idx, 1], s=size, c=color, label=f"{name} ({len(idx)})", alpha=0.8)
    axes[0].set_title(f"(a) {title}: seed ED and synthetic data")
    syn = np.asarray(groups["all synthetic"])
    names = sorted(set(emotions))
    palette = sns.color_palette("husl", len(names))
    for color, emo in zip(palette, names):
        idx = syn[[e == emo for e in emotions]]
        axes[1].scatter(coords[idx, 0], coords[idx, 1], s=18, color=color, label=emo)
    axes[1].set_title("(b) synthetic data by the seed's emotion")
    axes[1].legend(fontsize=6, ncol=2, markerscale=0.8, loc="best")
    for name, color in (("D_a (diversity-kept)", "#55A868"), ("D_d (discarded)", "#C44E52")):
        idx = groups[name]
        axes[2].scatter(coords[idx, 0], coords[idx, 1], s=28 if "D_d" in name else 16, c=color, label=f"{name} ({len(idx)})")
    axes[2].set_title("(c) K-Center-Greedy: kept vs discarded")
    for ax in (axes[0], axes[2]):
        ax.legend(fontsize=8, loc="best")
    for ax in axes:
        ax.set(xticks=[], yticks=[])
    return save(fig, path)


def coverage_curve(ratios, radius, chosen_ratio: float, title: str, path: str | Path):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ratios, radius, marker="o", color="#4C72B0")
    ax.axvline(chosen_ratio, color="#C44E52", ls="--", label=f"ratio {chosen_ratio}")
    ax.set(title=f"{title}: coverage radius vs. share kept by K-Center-Greedy", xlabel="share of the quality-kept set",
           ylabel="coverage radius (L2)")
    ax.legend()
    return save(fig, path)


def loss_curves(logs: dict[str, list[dict]], title: str, path: str | Path):
    """Training loss per step and validation loss per arm (notebook 04)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    palette = sns.color_palette("deep", len(logs))
    for color, (arm, log) in zip(palette, logs.items()):
        train = [(h["step"], h["loss"]) for h in log if "loss" in h and "step" in h]
        evals = [(h["step"], h["eval_loss"]) for h in log if "eval_loss" in h and "step" in h]
        if train:
            ax.plot(*zip(*train), color=color, alpha=0.6, label=f"{arm}: train")
        if evals:
            ax.plot(*zip(*evals), color=color, marker="o", ls="--", label=f"{arm}: validation")
    ax.set(title=f"{title}: loss on the listener response", xlabel="optimizer step", ylabel="cross-entropy")
    ax.legend(fontsize=8)
    return save(fig, path)


def results_bars(results: dict, families: dict[str, list[str]], title: str, path: str | Path):
    """Grouped bars with 95% intervals per metric family ({title: figure keys}), one bar per arm (notebook 05)."""
    import numpy as np

    arms = list(results["arms"])
    palette = sns.color_palette("deep", len(arms))
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 4.5))
    width = 0.8 / len(arms)
    for ax, (fam, keys) in zip(axes, families.items()):
        x = np.arange(len(keys))
        for j, (arm, color) in enumerate(zip(arms, palette)):
            vals = np.array([results["arms"][arm]["figures"][k] for k in keys])
            ax.bar(x + j * width, vals[:, 0], width, color=color, label=arm,
                   yerr=[vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]], capsize=2)
        ax.set_xticks(x + width * (len(arms) - 1) / 2, keys, fontsize=8)
        ax.set_title(fam)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: evaluation ({results['eval_examples']} examples, 95% bootstrap intervals)")
    return save(fig, path)


def judge_by_arm(per_arm: dict[str, dict[str, list[float]]], criteria, title: str, path: str | Path):
    import pandas as pd

    long = [{"arm": arm, "criterion": c, "score": s} for arm, d in per_arm.items() for c in criteria for s in d[c]
            if s is not None]  # an answer the judge left unscored has no score to draw
    fig, ax = plt.subplots(figsize=(10, 4.2))
    sns.violinplot(pd.DataFrame(long), x="criterion", y="score", hue="arm", ax=ax, cut=0, density_norm="width")
    ax.set(title=f"{title}: judge's expected score per response", ylim=(0.9, 3.1), xlabel="")
    ax.legend(fontsize=8)
    return save(fig, path)


def sweep_tradeoff(rows: list[dict], title: str, path: str | Path, keys=("bleu2", "rougeL", "embedding_cos")):
    """Quantity against quality: metric against the number of synthetic examples added to ED, for the examples
    the filters select and for as many random ones, each point with its 95% interval (notebook 05)."""
    import numpy as np

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for kind, colour, marker in (("selected", "#C44E52", "o"), ("random", "#8c8c8c", "s")):
            pts = sorted((r["synthetic"], *r["figures"][key], r["value"]) for r in rows if r["kind"] in (kind, "both"))
            if not pts:
                continue
            x, y, lo, hi = (np.array([p[i] for p in pts], dtype=float) for i in range(4))
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker=marker, color=colour, capsize=3, label=kind)
            for p in pts:
                if p[4] is not None and kind == "selected":
                    ax.annotate(f"{p[4]:g}", (p[0], p[1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(title=key, xlabel="synthetic examples added to ED", ylabel=key)
    axes[0][0].legend(title="synthetic data", fontsize=8)
    fig.suptitle(f"{title}: quantity vs. quality (labels: the sweep's T or ratio; 95% intervals over examples and seeds)")
    return save(fig, path)


PIPELINE = [  # (box title, what it does, what it writes), one per stage of store.STAGES, in order
    ("ED seed data", "dialogues D\n(tiny: data/seed)", "train / eval JSONL"),
    ("generate", "LLM writes new rounds\nfrom each seed; parse;\nsample k turns", "examples D_s"),
    ("quality", "M_D = base + LoRA on ED\nanswers each prompt;\nkeep S = 100 cos >= T", "D_q  (+ judge scores)"),
    ("diversity", "K-Center-Greedy in\nembedding space\n(ratio r of D_q)", "D_a kept, D_d rest"),
    ("fine-tune", "4-bit QLoRA arms:\ned  vs  ed + D_a", "LoRA adapters"),
    ("evaluate", "BLEU, Dist, ROUGE, F1,\nembedding cos, judge;\npaired bootstrap", "results table"),
]


def pipeline(path: str | Path):
    """The chain at a glance: one box per notebook, what it does, and the artifact it hands on (README, notebook 00)."""
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plt.subplots(figsize=(15, 3.4))
    ax.set(xlim=(0, len(PIPELINE) * 2.5), ylim=(0, 3.4))
    ax.axis("off")
    colours = ["#8c8c8c", "#4C72B0", "#C44E52", "#55A868", "#8172B2", "#CCB974"]
    for i, (stage, (title, body, out), colour) in enumerate(zip(STAGES, PIPELINE, colours, strict=True)):
        x = i * 2.5 + 0.15
        ax.add_patch(FancyBboxPatch((x, 0.9), 2.0, 2.2, boxstyle="round,pad=0.05", fc="white", ec=colour, lw=2))
        ax.text(x + 1.0, 2.8, f"{stage[:2]}  {title}", ha="center", va="center", weight="bold", color=colour, fontsize=12)
        ax.text(x + 1.0, 1.75, body, ha="center", va="center", fontsize=9.5, linespacing=1.4)
        ax.text(x + 1.0, 0.45, out, ha="center", va="center", fontsize=9, style="italic", color="#444444")
        if i:
            ax.annotate("", xy=(x - 0.02, 2.0), xytext=(x - 0.43, 2.0),
                        arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1.5})
    ax.set_title("Synth-Empathy as six notebooks; each hands files to the next under runs/<profile>/<NN_stage>/",
                 fontsize=11, loc="left")
    return save(fig, path)
