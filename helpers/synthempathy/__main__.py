"""`python -m synthempathy run ...`: the command line of the reproduction package."""

from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthempathy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    fid.add_argument("--markdown", action="store_true", help="one markdown table across the profiles (README)")

    met = sub.add_parser("metrics", help="score a predictions file with the authors' metric protocol (JSON out)")
    met.add_argument("--predictions", required=True, help="JSON lines with a prediction (and gold) per line")
    met.add_argument("--references", default=None, help="separate JSON lines of golds (by id, else by line)")
    met.add_argument("--prediction-field", default="prediction")
    met.add_argument("--gold-field", default="gold")

    args = parser.parse_args(argv)
    try:
        if args.command == "metrics":
            from .lib.metrics import score_file

            try:
                scores = score_file(args.predictions, args.prediction_field, args.gold_field, args.references)
            except (OSError, ValueError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(json.dumps(scores, indent=2))  # already rounded to 6 decimals, as the authors print them
        elif args.command == "fidelity":
            from .lib import fidelity

            rows = {p: fidelity.table(load_config(p, args.param)) for p in args.profile or ["tiny"]}
            if args.markdown:
                print(fidelity.markdown(rows))
            else:
                print("\n\n".join(fidelity.render(r, p) for p, r in rows.items()))
        elif args.command == "config":
            print(json.dumps(load_config(args.profile, args.param).model_dump(), indent=2))
        elif args.command == "run":
            from .runner import StageFailed
            from .runner import run as run_chain

            try:
                store = run_chain(args.profile, args.param, args.start, args.stop, force=args.force)
            except StageFailed as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(f"run folder: {store.root}")
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
