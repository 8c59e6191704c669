"""`python -m synthempathy run ...`: the command line of the reproduction package."""

from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, load_config


def parser() -> argparse.ArgumentParser:
    """Every subcommand and its options, in the order --help lists them."""
    top = argparse.ArgumentParser(prog="python -m synthempathy", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the numbered notebooks with papermill")
    run.add_argument("--profile", default="tiny", help="configs/<profile>.yaml or a path to a YAML profile")
    run.add_argument("--from", dest="start", default=None, help="first stage number (default 0)")
    run.add_argument("--to", dest="stop", default=None, help="last stage number (default: the last)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key, e.g. -p threshold=50 (repeatable)")
    run.add_argument("--force", action="store_true", help="rerun stages even when up to date")

    show = sub.add_parser("config", help="print the resolved config of a profile as JSON")
    show.add_argument("--profile", default="tiny")
    show.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")

    fid = sub.add_parser("fidelity", help="print, for every switch, the authors' value, the profile's, and whether they match")
    fid.add_argument("--profile", action="append", default=[], help="a profile (repeat for several; default tiny)")
    fid.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    fid.add_argument("--markdown", action="store_true", help="one markdown table across the profiles (docs/differences.md)")

    met = sub.add_parser("metrics", help="score a predictions file with the authors' metric protocol (JSON out)")
    met.add_argument("--predictions", required=True, help="JSON lines with a prediction (and gold) per line")
    met.add_argument("--references", default=None, help="separate JSON lines of golds (by id, else by line)")
    met.add_argument("--prediction-field", default="prediction")
    met.add_argument("--gold-field", default="gold")

    talk = sub.add_parser("chat", help="a local web app: one message answered by the base model and every trained arm")
    talk.add_argument("--profile", default="tiny")
    talk.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    talk.add_argument("--seed", type=int, default=None, help="which training seed's adapters (default: the first)")
    talk.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: the first free from 7860)")

    ann = sub.add_parser("annotate", help="the human rating kit: blinded A/B sheets (export), then their scores (score)")
    ann_sub = ann.add_subparsers(dest="action", required=True)
    sheet = ann_sub.add_parser("export", help="a blinded A/B sheet (CSV and offline HTML form) and its key")
    sheet.add_argument("--profile", default="tiny")
    sheet.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    sheet.add_argument("--to", required=True, help="folder for sheet.csv, sheet.html, key.json, README.txt")
    sheet.add_argument("--n", type=int, default=None, help="evaluation histories per pair (default: ab_records)")
    sheet.add_argument("--seed", type=int, default=None, help="seed of the blinding (default: the profile's)")
    sheet.add_argument("--judge", action="store_true", help="also fill sheets with the LLM A/B judge's verdicts")
    rate = ann_sub.add_parser("score", help="unblind filled sheets: win/tie/lose per criterion, Fleiss' kappa")
    rate.add_argument("sheets", nargs="+", help="filled sheets (CSV), one per annotator")
    rate.add_argument("--key", required=True, help="the key.json written by annotate export")
    rate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the intervals")
    rate.add_argument("--seed", type=int, default=0)
    rate.add_argument("--json", action="store_true", help="print the scores as JSON instead of markdown")

    rel = sub.add_parser("export", help="release D_a, the scored set and the training mix as a datasets dataset, "
                                        "and every adapter with its model card")
    rel.add_argument("--profile", default="tiny")
    rel.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    rel.add_argument("--to", required=True, help="the release folder (new, empty, or a previous export)")
    rel.add_argument("--push-to-hub", default=None, metavar="REPO",
                     help="then upload it (dataset repo REPO, adapters to model repo REPO); needs `hf auth login`")

    dry = sub.add_parser("plan", help="dry run, offline: per stage the models and where they load, a memory "
                                      "estimate, the requests and tokens it will send; flags what cannot fit")
    dry.add_argument("--profile", default="tiny")
    dry.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    dry.add_argument("--gpu-gib", type=float, default=80, help="memory of each GPU (GiB): the in-process models' and "
                                                                  "the servers' (--gpu-memory-utilization x this)")
    dry.add_argument("--cpu-gib", type=float, default=None, help="memory for models on the CPU (default: this RAM)")

    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


# One function per subcommand; each imports what it needs when it runs, so that `config` or `plan` answer in
# about a second without loading torch.


def run_command(args) -> int:
    from .runner import StageFailed
    from .runner import run as run_chain
    from .store import RunLocked

    try:
        store = run_chain(args.profile, args.param, args.start, args.stop, force=args.force)
    except (StageFailed, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"run folder: {store.root}")
    return 0


def config_command(args) -> int:
    print(json.dumps(load_config(args.profile, args.param).model_dump(), indent=2))
    return 0


def fidelity_command(args) -> int:
    from ..lib import fidelity

    rows = {p: fidelity.table(load_config(p, args.param)) for p in args.profile or ["tiny"]}
    if args.markdown:
        print(fidelity.markdown(rows))
    else:
        print("\n\n".join(fidelity.render(r, p) for p, r in rows.items()))
    return 0


def metrics_command(args) -> int:
    from ..lib.metrics import score_file

    try:
        scores = score_file(args.predictions, args.prediction_field, args.gold_field, args.references)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(scores, indent=2))  # already rounded to 6 decimals, as the authors print them
    return 0


def chat_command(args) -> int:
    from ..tools.chat import ChatError, serve
    from .store import RunStore

    cfg = load_config(args.profile, args.param)
    try:
        serve(cfg, RunStore(cfg.run_dir), args.port, args.seed)
    except ChatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def plan_command(args) -> int:
    from .plan import command

    return command(args.profile, args.param, args.gpu_gib, args.cpu_gib)


def annotate_command(args) -> int:
    from ..tools import annotate
    from .store import RunStore

    try:
        if args.action == "export":
            cfg = load_config(args.profile, args.param)
            store = RunStore(cfg.run_dir)
            written = annotate.export(cfg, store, args.to, args.n, args.seed)
            print(f"sheet: {written['sheet']} and {written['html']} ({written['items']} items); "
                  f"key, kept apart from the annotators: {written['key']}")
            if args.judge:
                for path in annotate.judge_sheets(cfg, store, args.to):
                    print(f"judge's sheet: {path}")
        else:
            scores = annotate.score(args.sheets, args.key, args.resamples, args.seed)
            print(json.dumps(scores, indent=2) if args.json else annotate.markdown(scores))
    except (annotate.SheetError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def export_command(args) -> int:
    from ..tools import export
    from .store import RunStore

    cfg = load_config(args.profile, args.param)
    try:
        if args.push_to_hub:
            export.hub_token(None)  # offline or logged out: fail now, before the export is even written
        manifest = export.export(cfg, RunStore(cfg.run_dir), args.to)
        print(f"exported to {args.to}: dataset/ ({', '.join(f'{k} {v}' for k, v in manifest['counts'].items())}), "
              f"adapters/ ({len(manifest['adapters'])})")
        if args.push_to_hub:
            for what, url in export.push_to_hub(args.to, args.push_to_hub).items():
                print(f"uploaded {what}: {url}")
    except export.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {
    "run": run_command,
    "config": config_command,
    "fidelity": fidelity_command,
    "metrics": metrics_command,
    "chat": chat_command,
    "annotate": annotate_command,
    "export": export_command,
    "plan": plan_command,
}
