"""What the terminal shows while a stage runs: cells and the kernel's tqdm bars, in place on a terminal, as
plain throttled lines in a log; and through the real runner, a kernel's bars reach the log."""

import io
import logging

from synthempathy.chain import runner
from synthempathy.chain.progress import StageProgress, shown

BARS = ["\rgenerating:   0%|          | 0/40 [00:00<?, ?req/s]",
        "\rgenerating:  10%|█         | 4/40 [00:05<00:45,  0.80req/s]",
        "\rgenerating:  20%|██        | 8/40 [00:10<00:40,  0.80req/s]",
        "\rgenerating: 100%|██████████| 40/40 [00:50<00:00,  0.80req/s]\n"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def feed(handler, pieces, clock=None, step=10.0):
    log = logging.getLogger("papermill")
    handler.emit(log.makeRecord("papermill", logging.INFO, "", 0, "Executing Cell 3---------", (), None))
    for piece in pieces:
        if clock:
            clock.now += step
        handler.emit(log.makeRecord("papermill", logging.WARNING, "", 0, piece, (), None))


def test_a_log_gets_plain_lines_start_throttled_updates_and_end():
    out, clock = io.StringIO(), Clock()
    feed(StageProgress("01_generate", 17, out, tty=False, every=30.0, clock=clock), BARS, clock, step=10.0)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "    01_generate · cell 3/17"
    assert lines[1].endswith("generating: 0/40 (0%) [00:00<?, ?req/s]")  # the start
    assert lines[-1].endswith("generating: 40/40 (100%) [00:50<00:00,  0.80req/s]")  # the end
    assert len(lines) == 3, "updates 10 s apart are held back until 30 s have passed"


def test_a_terminal_gets_one_line_redrawn_with_the_cell_and_the_latest_bar():
    out = io.StringIO()
    handler = StageProgress("02_quality", 20, out, tty=True)
    feed(handler, ["\rjudging:  45%|████▌     | 90/200 [00:30<00:37,  2.9it/s]"])
    assert out.getvalue().count("\n") == 0
    assert out.getvalue().rsplit("\r\x1b[K", 1)[1] == (
        "    02_quality · cell 3/20 · judging: 90/200 (45%) [00:30<00:37,  2.9it/s]")
    handler.finish()
    assert out.getvalue().endswith("\r\x1b[K")


def test_the_trainers_unnamed_bar_and_a_bar_without_total_are_shown():
    out = io.StringIO()
    feed(StageProgress("04_finetune", 12, out, tty=False),
         [" 50%|█████     | 6/12 [00:30<00:30,  5.0s/it]", "A/B judging: 12prompt [00:04,  2.9prompt/s]",
          "UserWarning: something else entirely"])
    text = out.getvalue()
    assert "steps: 6/12 (50%)" in text and "A/B judging: 12 [00:04,  2.9prompt/s]" in text
    assert "UserWarning" not in text


def test_papermills_log_goes_to_the_display_only_while_a_stage_runs():
    log, out = logging.getLogger("papermill"), io.StringIO()
    before = list(log.handlers), log.propagate
    with shown("00_data", 5, out):
        assert log.propagate is False
        log.info("Executing Cell 1-----")
    assert (list(log.handlers), log.propagate) == before
    assert out.getvalue() == "    00_data · cell 1/5\n"


def test_the_runner_shows_every_cell_of_a_real_kernel(run_overrides):
    out = io.StringIO()
    runner.run("tiny", run_overrides, start=0, stop=0, echo=lambda _: None, progress=out)
    cells = [ln for ln in out.getvalue().splitlines() if ln.startswith("    00_data · cell ")]
    assert cells and cells[-1].endswith(f"/{len(cells)}"), out.getvalue()
