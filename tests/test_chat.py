"""The side-by-side chat: which columns a run gives, the streamed replies, and the app in a real headless browser.

The browser test starts `python -m synthempathy chat` as a user would, on the session's reference run, with the
network refused to the app's process, and drives it with Playwright in the system's Chromium.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
from chain import GUARD

from synthempathy.chain.cli import main
from synthempathy.chain.config import load_config
from synthempathy.chain.store import RunStore
from synthempathy.tools import chat

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags of a quiet headless Chromium on a closed network (no background calls, no first-run pages).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


def test_a_run_without_trained_arms_says_what_to_run(tmp_path, capsys):
    cfg = load_config("tiny", {"run_root": str(tmp_path)})
    with pytest.raises(chat.ChatError, match=r"no trained arm at seed 0 yet .*--profile tiny --to 04"):
        chat.columns(cfg, RunStore(cfg.run_dir))
    assert main(["chat", "--profile", "tiny", "-p", f"run_root={tmp_path}"]) == 2
    assert str(cfg.run_dir) in capsys.readouterr().err


def test_columns_are_the_base_then_the_trained_arms_of_one_seed(reference):
    overrides, store, _, _ = reference
    cfg = load_config("tiny", overrides)
    specs = chat.columns(cfg, store, seed=1)
    assert list(specs) == ["base", *cfg.arms]
    assert all(specs[a].endswith(f"04_finetune/{a}/seed-1") for a in cfg.arms)


def test_gradio_message_parts_become_turns():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]
    assert chat.turns_of(history) == ["hi", "yo"]


@pytest.mark.slow
def test_the_panel_streams_and_matches_the_evaluated_greedy_answers(reference):
    overrides, store, _, _ = reference
    cfg = load_config("tiny", overrides)
    panel = chat.Panel(cfg, chat.columns(cfg, store))
    history = store.read("05_evaluate", "predictions/synth_empathy.seed-0.jsonl")[0]["history"]
    grown = list(panel.stream("synth_empathy", history))
    assert grown and all(b.startswith(a) for a, b in zip(grown, grown[1:])), "each piece extends the last"
    replies = {name: panel.reply(name, history) for name in panel.names}
    assert all(replies.values()), replies
    # the same model and decoding as stage 05: the arm's answer is the one it was scored on
    evaluated = {name: store.read("05_evaluate", f"predictions/{name}.seed-0.jsonl")[0]["prediction"]
                 for name in cfg.arms}
    assert sum(replies[n] == evaluated[n] for n in cfg.arms) >= len(cfg.arms) - 1, (replies, evaluated)
    # notebook 05's table answers every column in one mixed-adapter batch (each row through its own adapter):
    # the same replies as column after column
    assert panel.side_by_side([history]) == [{"last turn": history[-1], **replies}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(cfg_args: list[str], cwd, log) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(GUARD), os.environ.get("PYTHONPATH")])),
           "OFFLINE_GUARD_LOG": str(log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "synthempathy", "chat", "--profile", "tiny", *cfg_args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.time() + 240
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if m := re.search(r"chat app: (http://127\.0\.0\.1:\d+/?)", line):
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the chat app did not start:\n" + "".join(lines))


def _bot_texts(page, names) -> dict:
    return {n: page.locator(f"#chat-{n} .bot.message").all_inner_texts() for n in names}


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium not installed (make setup installs it)")
def test_the_app_answers_in_every_column_in_a_headless_browser(reference, tmp_path):
    from playwright.sync_api import sync_playwright

    overrides, store, _, _ = reference
    names = ["base", *load_config("tiny", overrides).arms]
    log = tmp_path / "network.log"
    proc, url = _start_app(["-p", f"run_root={overrides['run_root']}", "-p", "eval_max_new_tokens=12",
                            "--port", str(_free_port())], tmp_path, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            for i, message in enumerate(["I lost my job today and I feel awful.", "Thank you. What should I do?"], 1):
                page.fill("#message textarea", message)
                page.press("#message textarea", "Enter")
                # every column answers, each in its own history: i user turns and i replies per column
                page.wait_for_function(
                    """([names, i]) => names.every(n => {
                         const bots = document.querySelectorAll(`#chat-${n} .bot.message`);
                         const users = document.querySelectorAll(`#chat-${n} .user.message`);
                         return users.length === i && bots.length === i && bots[i - 1].innerText.trim().length > 0;
                       }) && !document.querySelector('#message textarea').disabled""",
                    arg=[names, i], timeout=180_000)
            texts = _bot_texts(page, names)
            assert all(len(t) == 2 and all(s.strip() for s in t) for t in texts.values()), texts
            page.click("#clear")
            page.wait_for_function("() => !document.querySelector('.bot.message')", timeout=30_000)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode is not None
    assert not log.exists(), f"the chat app tried to reach the network:\n{log.read_text()}"
