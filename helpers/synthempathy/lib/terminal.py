"""Inside a stage's process: what a step writes to stdout and stderr goes to the terminal, not into a notebook cell.

A notebook's reader sees what a step returns and what the cell displays. The step's progress bars, library logs and
warnings go to `terminal()`: the runner's feed file when the runner started this kernel (it shows them, progress.py),
else the terminal that started the Jupyter kernel (JupyterLab's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from contextlib import contextmanager

PROGRESS_ENV = "SYNTHEMPATHY_PROGRESS"  # the runner's feed file, inherited by the kernel it starts
_terminal = None


def terminal():
    """Where a step's bars, logs and warnings go: the runner's feed file, or the terminal that started this Jupyter
    kernel; None in a plain Python process, whose stderr is already a terminal (or a test's capture)."""
    global _terminal
    if _terminal is None:
        if path := os.environ.get(PROGRESS_ENV):
            _terminal = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - kept for the process
        elif (fd := getattr(sys.stderr, "_original_stdstream_copy", None)) is not None:  # ipykernel's copy
            _terminal = open(os.dup(fd), "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        elif "ipykernel" in sys.modules and sys.__stderr__ is not None and sys.stderr is not sys.__stderr__:
            _terminal = sys.__stderr__  # a kernel that does not capture its file descriptors (under pytest, say)
    return _terminal


@contextmanager
def off_the_page():
    """Within the block, stdout and stderr (tqdm bars, warnings, the trainer's printed logs) and every logging
    handler that writes to them go to `terminal()`, so that a notebook cell shows only what it displays."""
    term = terminal()
    if term is None:
        yield
        return
    moved = [h for h in _stream_handlers() if h.stream in (sys.stdout, sys.stderr)]
    saved = [h.setStream(term) for h in moved]
    try:
        with contextlib.redirect_stdout(term), contextlib.redirect_stderr(term):
            yield
    finally:
        for h, stream in zip(moved, saved):
            h.setStream(stream)
        term.flush()


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    # a handler whose stream is a property (logging's last resort) already writes to sys.stderr as it is now
    return [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler) and not isinstance(getattr(type(h), "stream", None), property)]
