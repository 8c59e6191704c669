"""Served adapters: before an evaluation server answers for an arm, check that it serves that arm's adapter.

Answers are cached under an adapter's training fingerprint (sft.model_identity), but a server is asked only by
module name (`<arm>.seed-<s>`). A server started before an arm was retrained, or a name mapped to another
folder, would answer with other weights and nothing would notice. vLLM's `GET /v1/models` lists each LoRA module
with the path it was loaded from (`root`) and its base (`parent`), and its `/metrics` page the server's start
time (`process_start_time_seconds`, where the Prometheus process collector runs). Every server must show, for
every module the run needs: the module, loaded from that adapter's folder (the folder holding the fingerprint the
answers are keyed by), on the run's base model, and started after the adapter was written.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..chain.config import REPO_ROOT
from ..chain.store import read_json
from .sft import COMPLETED

START_TIME = re.compile(r"^process_start_time_seconds(?:\{[^}]*\})?\s+([0-9.eE+]+)\s*$", re.M)


class AdapterMismatch(RuntimeError):
    """A server does not serve an adapter the evaluation needs as that adapter; the message says what to restart."""


def same_folder(root: str, folder: str | Path) -> bool:
    """Whether a module's `root` is the adapter folder (a relative root is read from the repo root, where the
    launch lines start the servers)."""
    path = Path(root)
    return (path if path.is_absolute() else REPO_ROOT / path).resolve() == Path(folder).resolve()


def mismatch(module: str, card: dict | None, folder: str, base: str, started: float | None) -> str | None:
    """What is wrong with one served module (its /v1/models card), or None when it is that adapter."""
    if card is None:
        return "does not serve it"
    if not card.get("root") or not same_folder(card["root"], folder):
        return f"serves it from {card.get('root')!r}, not from its folder {folder}"
    if card.get("parent") not in (None, base):
        return f"serves it on the base {card['parent']!r}, not on {base!r}"
    written = (Path(folder) / COMPLETED).stat().st_mtime
    if started is not None and started < written:
        fingerprint = read_json(Path(folder) / COMPLETED)["fingerprint"][:12]
        return (f"comes from a server started before the adapter was written (fingerprint {fingerprint}), so it "
                "may hold the weights of an earlier training")
    return None


def check_served(backend, needed: dict[str, str], base: str) -> None:
    """needed: {module name: adapter folder}. Raises one AdapterMismatch naming every module, server and what to
    restart, or returns when every server serves every module as its adapter."""
    problems = []
    for url in backend.endpoints:
        cards = {c["id"]: c for c in listed_models(url, backend.headers, backend.timeout)}
        started = server_start(url, backend.headers, backend.timeout)
        problems += [f"{url}: module {module} {why}" for module, folder in needed.items()
                     if (why := mismatch(module, cards.get(module), folder, base, started))]
    if problems:
        raise AdapterMismatch("the evaluation servers do not serve the trained adapters as they are:\n  "
                              + "\n  ".join(problems) + "\nRestart each server named with every adapter as its "
                              "module, `--lora-modules <arm>.seed-<s>=<its folder>` (`python -m synthempathy plan "
                              "--profile <profile>` prints the line), then rerun; cached answers are kept.")


def listed_models(url: str, headers: dict, timeout: float) -> list[dict]:
    """The model cards a server lists at GET <url>/models (vLLM: the base, then each LoRA module)."""
    import httpx

    try:
        resp = httpx.get(f"{url}/models", headers=headers, timeout=min(timeout, 10.0))
        resp.raise_for_status()
        return resp.json().get("data", [])
    except (httpx.HTTPError, ValueError) as e:
        raise AdapterMismatch(f"{url}: GET /models failed ({type(e).__name__}: {e}), so the adapters it serves "
                              "cannot be checked") from None


def server_start(url: str, headers: dict, timeout: float) -> float | None:
    """When the server at `url` (…/v1) started, from the /metrics page beside it; None when it has none."""
    import httpx

    try:
        resp = httpx.get(url.rsplit("/v1", 1)[0] + "/metrics", headers=headers, timeout=min(timeout, 10.0))
    except httpx.HTTPError:
        return None
    return start_time(resp.text) if resp.status_code == 200 else None


def start_time(metrics_text: str) -> float | None:
    """The server process's start (Unix seconds) from a Prometheus /metrics page, or None when it has none."""
    m = START_TIME.search(metrics_text)
    return float(m.group(1)) if m else None
