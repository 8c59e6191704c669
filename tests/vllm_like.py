"""A small HTTP server that answers in vLLM's OpenAI-compatible schema, for what a llama.cpp server cannot show:
a judge whose top logprobs leave the labels out, a module list with LoRA adapters and their paths, the server's
start time on /metrics, an API key. It runs no model: each test says what the server answers, and the server
records every request body, so a test sees what the package asked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHOICE_FIELDS = ("structured_outputs", "guided_choice")


def allowed(body: dict) -> list[str] | None:
    """The labels a request holds the answer to (vLLM's structured_outputs choice, or the older guided_choice)."""
    if isinstance(body.get("structured_outputs"), dict):
        return body["structured_outputs"].get("choice")
    return body.get("guided_choice")


class VllmLike:
    """`top(messages) -> [(token, logprob), ...]`, most likely first, is the model's raw next-token distribution.
    As vLLM with its default raw logprobs, the reply's top logprobs are that list (cut at `top_logprobs`), and
    the chosen token is the best allowed one when the request constrains the answer."""

    def __init__(self, top: Callable[[list[dict]], list[tuple[str, float]]] | None = None,
                 models: list[dict] | None = None, metrics: str | None = None, api_key: str | None = None,
                 delay: float = 0.0):
        self.top = top or (lambda messages: [("ok", -0.1)])
        self.models, self.metrics, self.api_key, self.delay = models or [], metrics, api_key, delay
        self.bodies: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reply(self, body: dict) -> dict:
        raw = self.top(body["messages"])
        labels = allowed(body)
        chosen = next(((t, lp) for t, lp in raw if labels is None or t in labels), None)
        if chosen is None:  # the mask leaves only the labels; vLLM still reports the chosen one's raw logprob
            chosen = (labels[0], -30.0)
        shown = [{"token": t, "logprob": lp, "bytes": None} for t, lp in raw[: body.get("top_logprobs", 0)]]
        logprobs = {"content": [{"token": chosen[0], "logprob": chosen[1], "bytes": None, "top_logprobs": shown}]}
        return {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": chosen[0]},
                             "logprobs": logprobs if body.get("logprobs") else None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the test reads `bodies`, not a log
                pass

            def send(self, status: int, payload, content_type: str = "application/json") -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorized(self) -> bool:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self.send(401, {"error": "Unauthorized"})
                    return False
                return True

            def do_GET(self):
                if self.path == "/metrics" and server.metrics is not None:
                    self.send(200, server.metrics, "text/plain")
                elif self.path == "/v1/models" and self.authorized():
                    self.send(200, {"object": "list", "data": server.models})
                elif self.path not in ("/v1/models",):
                    self.send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send(404, {"error": "not found"})
                elif self.authorized():
                    server.bodies.append(body)
                    time.sleep(server.delay)  # a server slower than the client's timeout
                    self.send(200, server.reply(body))

        return Handler


def card(model_id: str, root: str, parent: str | None = None) -> dict:
    """One entry of vLLM's GET /v1/models: the base (parent None) or a LoRA module loaded from `root`."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "vllm", "root": root, "parent": parent}
