"""What the terminal shows while a stage runs, and what stays off a notebook's page.

The stages' progress bars (generation, discriminator answers, judge, training steps, evaluation), their library
logs and warnings are written while a step runs, and a step runs inside `off_the_page()`: they go to the terminal,
not into the cell, whose reader sees the step's result (lib/terminal.py). Under the runner "the terminal" is a feed
file that the runner reads as it grows (`shown`, PROGRESS_ENV); in JupyterLab it is the terminal that started it.

papermill announces each cell to the runner, and `StageProgress` turns cells and feed into what a user needs to
tell a slow stage from a hung one: the cell being executed and the latest state of each bar, with its counts and
ETA.

- On a terminal: one status line, redrawn in place.
- In a log file (CI, `| tee`): plain lines, never a carriage return: one per cell, and per bar one when it starts,
  one at most every `every` seconds while it runs, and one when it ends.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..lib.terminal import PROGRESS_ENV

# tqdm's text form: "desc:  45%|████▌     | 90/200 [00:30<00:37,  2.9it/s]" (desc and rate optional),
# or without a known total "desc: 12prompt [00:04,  2.9prompt/s]"
BAR = re.compile(r"^(?:(?P<desc>[^|]*?):\s*)?(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>[\d.]+\w*)/(?P<total>[\d.]+\w*)"
                 r"\s*\[(?P<times>[^\]]*)\]")
OPEN_BAR = re.compile(r"^(?P<desc>[^|:]+):\s*(?P<n>\d+)[a-zA-Z/]*\s*\[(?P<times>[^\]]*)\]$")
CELL = re.compile(r"^Executing Cell (\d+)")
UNNAMED = "steps"  # the trainer's bar has no description


class StageProgress(logging.Handler):
    """A logging handler for papermill's logger that shows a stage's cells and bars on `stream`."""

    def __init__(self, label: str, cells: int, stream=None, tty: bool | None = None, every: float = 30.0,
                 clock=time.monotonic):
        super().__init__(logging.INFO)
        self.label, self.cells, self.stream = label, cells, stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every, self.clock = every, clock
        self.cell = 0
        self.bars: dict[str, str] = {}  # desc -> its latest state, in the order they appeared
        self.printed: dict[str, tuple[float, str]] = {}  # desc -> (when, state) last written to a log

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if m := CELL.match(text):
            self.on_cell(int(m.group(1)))
        elif record.levelno >= logging.WARNING:  # papermill logs the kernel's stderr as warnings
            for piece in re.split(r"[\r\n]+", text):
                self.on_text(piece.strip())

    def on_cell(self, n: int) -> None:
        self.cell, self.bars = n, {}
        if self.tty:
            self.redraw()
        else:
            self.write_line(f"cell {n}/{self.cells}")

    def on_text(self, piece: str) -> None:
        m = BAR.match(piece) or OPEN_BAR.match(piece)
        if not m:
            return
        desc = (m.group("desc") or "").strip() or UNNAMED
        d = m.groupdict()
        state = (f"{d['n']}/{d['total']} ({d['pct']}%) [{d['times'].strip()}]" if d.get("total")
                 else f"{d['n']} [{d['times'].strip()}]")
        self.bars[desc] = state
        if self.tty:
            self.redraw()
        else:
            self.log_bar(desc, state, done=bool(d.get("total")) and d["n"] == d["total"])

    def log_bar(self, desc: str, state: str, done: bool) -> None:
        last = self.printed.get(desc)
        if last and last[1] == state:
            return
        if last is None or done or self.clock() - last[0] >= self.every:
            self.printed[desc] = (self.clock(), state)
            self.write_line(f"cell {self.cell}/{self.cells} · {desc}: {state}")

    def status(self) -> str:
        latest = next(reversed(self.bars.items()), None)
        bar = f" · {latest[0]}: {latest[1]}" if latest else ""
        return f"    {self.label} · cell {self.cell}/{self.cells}{bar}"

    def redraw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[K" + self.status()[:width])
        self.stream.flush()

    def write_line(self, text: str) -> None:
        self.stream.write(f"    {self.label} · {text}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@contextmanager
def shown(label: str, cells: int, stream=None, feed: str | os.PathLike | None = None):
    """papermill's log, while the block runs, goes to a StageProgress only (not to the root logger's handlers);
    with `feed`, so does what the kernel's steps write to the terminal (PROGRESS_ENV names the file to them)."""
    logger = logging.getLogger("papermill")
    handler = StageProgress(label, cells, stream)
    saved = logger.propagate, logger.level, os.environ.get(PROGRESS_ENV)
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    reader = _FeedReader(Path(feed), handler) if feed else None
    if reader:
        os.environ[PROGRESS_ENV] = str(feed)
    try:
        yield handler
    finally:
        if reader:
            reader.stop()
        handler.finish()
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved[:2]
        if saved[2] is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = saved[2]


class _FeedReader(threading.Thread):
    """Reads the feed file as the kernel appends to it, and hands each piece to the StageProgress."""

    def __init__(self, path: Path, handler: StageProgress, poll: float = 0.2):
        super().__init__(daemon=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")
        self.path, self.handler, self.poll, self.done = path, handler, poll, threading.Event()
        self.start()

    def run(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            rest = ""
            while True:
                finished = self.done.is_set()  # read once more after the kernel's last write
                rest += f.read()
                *pieces, rest = re.split(r"[\r\n]", rest)
                for piece in pieces:
                    if piece.strip():
                        self.handler.on_text(piece.strip())
                if finished:
                    return
                self.done.wait(self.poll)

    def stop(self) -> None:
        self.done.set()
        self.join(10)
