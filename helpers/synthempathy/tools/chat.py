"""Talk to the tuned models side by side: `python -m synthempathy chat --profile tiny`.

One message goes to the untuned base model and to every trained arm of a run; each answers in its own column,
streamed as it generates, and keeps its own dialogue history, so a class can watch what fine-tuning on synthetic
data changed. Replies are made the way stage 05 evaluates them (the arms' input format, `sft.arm_input`; greedy;
`eval_max_new_tokens`); the app's settings let a user sample instead.

The base model is loaded once and every arm's LoRA adapter is attached to it by name (`Panel`): one copy of the
weights however many arms a profile trains. A reply switches to its arm's adapter under a lock, since the adapter
is state of the one shared model; the base answers with the adapters switched off. The app binds to 127.0.0.1
only: it serves models, not the network.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..lib import arms, sft
from ..lib.arms import BASE
from ..lib.backends import as_list
from ..lib.dialogue import chat
from ..lib.models import load_lm
from ..lib.prefix import reserved_cache
from ..lib.terminal import off_the_page

HOST = "127.0.0.1"
# Seconds between two redraws of a streaming reply: every token would resend all columns and redraw the page,
# which on a small CPU takes cycles from the model the user is waiting for.
REDRAW_EVERY = 0.15
PEFT_BASE = "__base__"  # PEFT's name, in a mixed-adapter batch, for rows that no adapter touches


class ChatError(RuntimeError):
    """The chat cannot start; the message says which run folder and what to run first."""


def columns(cfg, store, seed: int | None = None) -> dict[str, str]:
    """{column: model spec}: the base model, then every arm of `cfg.arms` trained at `seed` (default: the first
    training seed). Arms not trained yet are left out; with none trained, a ChatError says what to run."""
    seed = cfg.train_seeds[0] if seed is None else seed
    folders = {arm: store.root / "04_finetune" / arm / f"seed-{seed}" for arm in cfg.arms}
    ready = {arm: str(folder) for arm, folder in folders.items() if sft.is_completed(folder)}
    if not ready:
        raise ChatError(f"{store.root}: no trained arm at seed {seed} yet (looked for {', '.join(cfg.arms)} under "
                        f"04_finetune/<arm>/seed-{seed}); train them with "
                        f"`python -m synthempathy run --profile {cfg.profile} --to 04`")
    return {BASE: cfg.base_model, **ready}


class Panel:
    """The base model with every arm's adapter attached; answers one dialogue as a named column."""

    def __init__(self, cfg, specs: dict[str, str]):
        from peft import PeftModel

        self.names = list(specs)
        self.max_new_tokens = cfg.eval_max_new_tokens
        self.system, self.transcript = sft.arm_input(cfg)
        base, self.tokenizer = load_lm(specs[BASE], cfg.device)
        adapters = [(name, spec) for name, spec in specs.items() if name != BASE]
        self.model = PeftModel.from_pretrained(base, adapters[0][1], adapter_name=adapters[0][0])
        for name, spec in adapters[1:]:
            self.model.load_adapter(spec, adapter_name=name)
        self.model.eval()
        self.eos = sorted({self.tokenizer.eos_token_id, *as_list(base.generation_config.eos_token_id)} - {None})
        self._lock = threading.Lock()

    def prompt_ids(self, turns: Sequence[str]):
        """The token ids the arms see for `turns` (speaker first, alternating), ending with the reply's header."""
        text = self.tokenizer.apply_chat_template(chat(turns, self.system, self.transcript),
                                                  add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def stream(self, name: str, turns: Sequence[str], max_new_tokens: int | None = None,
               temperature: float = 0.0) -> Iterator[str]:
        """The reply of column `name` to the dialogue `turns`, yielded as it grows (the whole text so far)."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        ids = self.prompt_ids(turns).to(self.model.device)
        new = max_new_tokens or self.max_new_tokens
        kwargs = {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape), "streamer": streamer,
                  "max_new_tokens": new, "eos_token_id": self.eos, "pad_token_id": self.tokenizer.pad_token_id,
                  "past_key_values": reserved_cache(new)}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        failed: list[BaseException] = []
        worker = threading.Thread(target=self._generate, args=(name, kwargs, failed), daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        worker.join()
        if failed:
            raise failed[0]

    def _generate(self, name: str, kwargs: dict, failed: list) -> None:
        import torch

        try:
            with self._lock, torch.inference_mode():
                if name == BASE:
                    with self.model.disable_adapter():
                        self.model.generate(**kwargs)
                else:
                    self.model.set_adapter(name)
                    self.model.generate(**kwargs)
        except BaseException as e:  # the streamer would wait for text forever: end it, re-raise in stream()
            failed.append(e)
            kwargs["streamer"].end()

    def reply(self, name: str, turns: Sequence[str], max_new_tokens: int | None = None) -> str:
        """The whole greedy reply of column `name`."""
        text = ""
        for grown in self.stream(name, turns, max_new_tokens):
            text = grown
        return text.strip()

    def side_by_side(self, dialogues: Sequence[Sequence[str]]) -> list[dict]:
        """Every column's greedy reply to each dialogue: the app's comparison, for a notebook table."""
        rows = [(name, turns) for turns in dialogues for name in self.names]
        replies = iter(self.replies(rows))
        return [{"last turn": turns[-1], **{name: next(replies) for name in self.names}} for turns in dialogues]

    def replies(self, rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """The greedy replies of (column, dialogue) rows, all in one batch: PEFT sends each row through its own
        column's adapter and the base's rows through none. The same greedy replies as column after column
        (tests/test_chat.py), in a third of the time for notebook 05's 2 dialogues x 4 columns on 2 cores."""
        import torch

        ids = [self.prompt_ids(turns)[0].tolist() for _, turns in rows]
        # plain left padding, not prefix.shared_prefix_batch: a shared prefix's keys and values differ per adapter
        width, pad = max(map(len, ids)), self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.model.device)
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=mask, adapter_names=[PEFT_BASE if n == BASE else n for n, _ in rows],
                max_new_tokens=self.max_new_tokens, eos_token_id=self.eos, pad_token_id=pad, do_sample=False,
                temperature=None, top_p=None, top_k=None, past_key_values=reserved_cache(self.max_new_tokens))
        texts = []
        for new in out[:, width:].tolist():
            end = next((i for i, t in enumerate(new) if t in self.eos), len(new))
            texts.append(self.tokenizer.decode(new[:end], skip_special_tokens=True).strip())
        return texts


# -- the web app ----------------------------------------------------------------------------------------------

def _text(content) -> str:
    """A chatbot message's text: Gradio hands back plain strings or lists of typed parts."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)


def turns_of(history: Sequence[dict]) -> list[str]:
    """A column's chat history as dialogue turns, the user's first."""
    return [_text(m["content"]) for m in history]


def answer_order(names: Sequence[str]) -> list[str]:
    """The trained arms answer first, the base model (the reference) last: the one shared model answers one
    column at a time, and the arms are what a user waits for."""
    return [n for n in names if n != BASE] + [n for n in names if n == BASE]


def respond(panel: Panel, message: str, histories: Sequence[list], max_new_tokens: int, temperature: float):
    """Yield every column's history as the columns answer `message` one after another, each streamed."""
    # plain {role, content: text} messages throughout: Gradio hands back typed parts, and streaming a history
    # that mixes both forms leaves the page's copy of it stale
    histories = [[{"role": m["role"], "content": _text(m["content"])} for m in h or []]
                 + [{"role": "user", "content": message}] for h in histories]
    for name in answer_order(panel.names):
        i = panel.names.index(name)
        turns = turns_of(histories[i])
        histories[i] = histories[i] + [{"role": "assistant", "content": ""}]
        shown = 0.0
        for text in panel.stream(name, turns, int(max_new_tokens), float(temperature)):
            histories[i][-1] = {"role": "assistant", "content": text}
            if time.monotonic() - shown >= REDRAW_EVERY:
                shown = time.monotonic()
                yield histories
        histories[i][-1] = {"role": "assistant", "content": histories[i][-1]["content"].strip() or "(no reply)"}
        yield histories


def header(cfg, store, specs: dict[str, str], seed: int) -> str:
    missing = [a for a in cfg.arms if a not in specs]
    lines = [f"### Synth-Empathy, side by side: profile `{cfg.profile}`, run `{store.root}`, training seed {seed}",
             "One message is answered by the untuned base model and by every trained arm, each in its own column "
             "with its own history. Greedy, as evaluated in notebook 05, unless you raise the temperature.", ""]
    lines += [f"- **{name}**: {'the untuned base model' if name == BASE else arms.what(name)}" for name in specs]
    if missing:
        lines.append(f"- not trained yet, so not shown: {', '.join(missing)}")
    return "\n".join(lines)


def build_app(panel: Panel, title: str):
    import gradio as gr

    with gr.Blocks(title="Synth-Empathy chat") as app:
        gr.Markdown(title)
        with gr.Row():
            bots = [gr.Chatbot(label=name, elem_id=f"chat-{name}", height=420, feedback_options=None,
                              buttons=["copy"])
                    for name in panel.names]
        with gr.Row():
            box = gr.Textbox(placeholder="Tell them how you feel, then press Enter", show_label=False,
                             elem_id="message", scale=5)
            send = gr.Button("Send", variant="primary", elem_id="send", scale=1)
            clear = gr.Button("Clear", elem_id="clear", scale=1)
        with gr.Accordion("Generation settings", open=False):
            max_new = gr.Slider(1, max(512, panel.max_new_tokens), value=panel.max_new_tokens, step=1,
                                label="max new tokens (the profile's eval_max_new_tokens)")
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy, as evaluated)")

        def answer(message, max_new_tokens, temp, *histories):
            if not message.strip():
                yield ("", *histories)
                return
            for updated in respond(panel, message.strip(), histories, max_new_tokens, temp):
                yield ("", *updated)

        def inputs_enabled(on: bool):
            return gr.update(interactive=on), gr.update(interactive=on)

        # the inputs are off while the columns answer: a message sent meanwhile would carry half-written histories
        for trigger in (box.submit, send.click):
            (trigger(lambda: inputs_enabled(False), None, [box, send])
             .then(answer, [box, max_new, temperature, *bots], [box, *bots])
             .then(lambda: inputs_enabled(True), None, [box, send]))
        clear.click(lambda: tuple([] for _ in bots), None, bots)
    return app


def serve(cfg, store, port: int | None = None, seed: int | None = None, block: bool = True):
    """Load the models, then serve the app on 127.0.0.1; returns the app (and its URL in `app.local_url`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline by default: no usage pings
    seed = cfg.train_seeds[0] if seed is None else seed
    specs = columns(cfg, store, seed)
    app = build_app(Panel(cfg, specs), header(cfg, store, specs, seed))
    app.queue(default_concurrency_limit=1)  # one shared model: one conversation turn at a time
    app.launch(server_name=HOST, server_port=port, prevent_thread_lock=True, quiet=True, footer_links=[],
               ssr_mode=False)
    print(f"chat app: {app.local_url} (columns: {', '.join(specs)}; Ctrl+C stops it)", flush=True)
    if block:
        app.block_thread()
    return app


def default_histories(store, n: int = 3) -> list[list[str]]:
    """n evaluation dialogues (speaker's turn last) spread over the evaluation set, for the notebook's table."""
    from ..chain.store import read_jsonl

    records = read_jsonl(Path(store.root) / "00_data" / "eval.jsonl")
    step = max(1, len(records) // n)
    return [r["history"] for r in records[::step][:n]]


def side_by_side_sample(cfg, store, n: int = 2) -> list[dict]:
    """What notebook 05 shows last: every column's reply to the first n evaluation histories (model loading and
    generation report to the terminal, not the notebook)."""
    with off_the_page():
        return Panel(cfg, columns(cfg, store)).side_by_side(default_histories(store, n))
