"""`python -m synthempathy ...`: the command line lives in chain/cli.py; this file only lets Python find it."""

import sys

from .chain.cli import main

if __name__ == "__main__":
    sys.exit(main())
