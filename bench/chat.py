"""How fast the chat app answers, against the evaluation backend answering the same message, side by side.

Starts the app on a finished run (default: runs/tiny), sends one message from headless Chromium, and records when
each column's text last changed: the first arm to answer (the arms answer before the base) is complete at that
moment (the budget: under 5 s for a 135M arm). The baseline is stage 05's way of answering, the merged adapter in `TransformersBackend`, one request,
with the model already loaded; the ratio says what the app's streaming, adapter switching and web round trip cost.
    python bench/chat.py [--profile tiny] [-p key=value ...] [--repeats 3]
    python bench/chat.py --table     # instead: notebook 05's table, one mixed-adapter batch against column by column
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from machine import cpu_flags

MESSAGE = "I lost my job today and I don't know how to tell my family."
# when each column's text last changed, in ms after the message was sent (polled in the page every 20 ms)
WATCH = """([names, t0]) => new Promise(done => {
  const last = {}, seen = {};
  const tick = () => {
    const now = performance.now() - t0;
    for (const n of names) {
      const bots = document.querySelectorAll(`#chat-${n} .bot.message`);
      const text = bots.length ? bots[bots.length - 1].innerText : "";
      if (text && text !== seen[n]) { seen[n] = text; last[n] = now; }
    }
    if (names.every(n => last[n]) && !document.querySelector('#message textarea').disabled) done(last);
    else setTimeout(tick, 20);
  };
  tick();
})"""


def app_times(url: str, names: list[str], repeats: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page()
        page.goto(url)
        for _ in range(repeats):
            page.click("#clear")
            page.fill("#message textarea", MESSAGE)
            t0 = page.evaluate("() => performance.now()")
            page.press("#message textarea", "Enter")
            out.append({n: ms / 1000 for n, ms in page.evaluate(WATCH, [names, t0]).items()})
        browser.close()
    return out


def baseline_seconds(cfg, spec: str, repeats: int) -> float:
    """Stage 05's answer to the same message: the merged adapter, greedy, one request, model loaded."""
    from synthempathy.chain.store import JsonlCache
    from synthempathy.lib import sft
    from synthempathy.lib.backends import Request, Sampling, TransformersBackend
    from synthempathy.lib.dialogue import chat_pairs

    backend = TransformersBackend(spec, cfg.device, 1)
    system, transcript = sft.arm_input(cfg)
    sampling = Sampling(0.0, 1.0, cfg.eval_max_new_tokens)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats + 1):  # the first call loads the model: not timed
            req = Request.make(spec, chat_pairs([MESSAGE], system, transcript), "", sampling, i)
            cache = JsonlCache(Path(tmp) / f"{i}.jsonl")
            t0 = time.perf_counter()
            backend.generate([req], cache, progress=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def table_times(cfg, store, n: int = 2) -> None:
    """Notebook 05's table (every column's reply to n evaluation dialogues) in one mixed-adapter batch
    (Panel.side_by_side) against column after column (Panel.reply), on the same loaded panel, after a warm-up."""
    from synthempathy.tools import chat

    panel = chat.Panel(cfg, chat.columns(cfg, store))
    dialogues = chat.default_histories(store, n)
    panel.replies([(name, dialogues[0]) for name in panel.names])
    t0 = time.perf_counter()
    batched = panel.side_by_side(dialogues)
    one_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    each = [{"last turn": d[-1], **{name: panel.reply(name, d) for name in panel.names}} for d in dialogues]
    one_by_one = time.perf_counter() - t0
    print(f"notebook 05's table, {n} dialogues x {len(panel.names)} columns: one batch {one_batch:.1f} s, column by "
          f"column {one_by_one:.1f} s -> {one_by_one / one_batch:.2f}x; the same replies: {batched == each}")


def main() -> None:
    from synthempathy.chain.config import load_config
    from synthempathy.chain.store import RunStore
    from synthempathy.tools import chat

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("-p", "--param", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--table", action="store_true", help="notebook 05's table instead of the app")
    args = parser.parse_args()
    print(f"# CPU: {cpu_flags()}; load average at start: {os.getloadavg()[0]:.2f}")
    cfg = load_config(args.profile, args.param)
    store = RunStore(cfg.run_dir)
    if args.table:
        return table_times(cfg, store)
    t0 = time.perf_counter()
    app = chat.serve(cfg, store, block=False)
    print(f"app ready (models loaded) in {time.perf_counter() - t0:.1f} s")
    specs = chat.columns(cfg, store)
    names = list(specs)
    order = chat.answer_order(names)  # the columns answer one after another, the first arm first
    first_arm = order[0]
    try:
        runs = app_times(app.local_url, names, args.repeats)
    finally:
        app.close()
    done = {n: statistics.median(r[n] for r in runs) for n in names}
    base = baseline_seconds(cfg, specs[first_arm], args.repeats)
    print(f"columns complete after (median of {args.repeats}, s): " + ", ".join(f"{n} {t:.2f}" for n, t in done.items()))
    print(f"first arm ({first_arm}): its reply complete {done[first_arm]:.2f} s after the message (budget 5 s); "
          f"the evaluation backend alone: {base:.2f} s -> app / backend = {done[first_arm] / base:.2f}x; "
          f"every column complete after {max(done.values()):.2f} s")


if __name__ == "__main__":
    main()
