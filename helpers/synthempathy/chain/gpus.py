"""Which GPUs each part of a run uses, what each GPU then holds in each stage, and the lines that start the parts
in the order that works: the vLLM servers first, then the chain.

A vLLM server (a `servers` entry of the profile) takes `utilization` x the memory of every GPU it sees, from its
start and whatever it needs, and refuses to start unless that much is free. So the servers start before the chain's
own models take memory, and the chain waits until they answer. The chain's process (`in_process_gpu`) holds its
stage's in-process peak (plan.py estimates it); each stage runs in a fresh notebook kernel, so a stage's memory is
free again when the next one starts. A server that answers only the evaluation starts after 04_finetune, once the
adapters it serves as LoRA modules exist; a server that also generates or judges is restarted then, with them.

plan.py gives this module its numbers (the in-process peaks, each server's weights); this module adds them up per
GPU, flags a GPU that would hold more than it has, and writes the launch lines.
"""

from __future__ import annotations

from urllib.parse import urlparse

from .config import REPO_ROOT
from .store import STAGES

EVALUATION = STAGES[-1]
# (role, the config key of its URLs): a URL's roles say what its server must serve
ROLE_KEYS = (("generator", "gen_endpoints"), ("M_D", "disc_endpoints"), ("judge", "judge_endpoints"),
             ("evaluation", "eval_endpoints"))
LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # the values vLLM accepts for --max-lora-rank
# beyond its weights a server needs room for activations, CUDA graphs and a KV cache worth having
SERVER_RESERVE_GIB = 4.0


def roles(cfg) -> dict[str, list[str]]:
    """Each endpoint URL of the profile and the roles it answers for."""
    out: dict[str, list[str]] = {}
    for role, key in ROLE_KEYS:
        urls = getattr(cfg, key) if role != "generator" or cfg.gen_backend == "openai" else []
        for url in urls:
            out.setdefault(url, []).append(role)
    return out


def served_model(cfg, role: str) -> str:
    """The model a server loads for a role: M_D and the evaluated adapters are LoRA modules on the base."""
    return {"generator": cfg.generator_model, "judge": cfg.judge_model}.get(role, cfg.base_model)


def servers(cfg) -> list[dict]:
    """The profile's servers that an endpoint key uses: URL, GPUs, utilization, roles, the models the roles need
    (one, when the profile is right) and the stages the server is up in."""
    by_url = roles(cfg)
    out = []
    for s in cfg.placed_servers:
        if s.url not in by_url:
            continue
        served = by_url[s.url]
        out.append({
            "url": s.url, "gpus": list(s.gpus), "utilization": s.utilization, "roles": served,
            "models": list(dict.fromkeys(served_model(cfg, r) for r in served)),
            "stages": [EVALUATION] if served == ["evaluation"] else list(STAGES[1:]),
        })
    return out


def unplaced(cfg) -> list[str]:
    """Notes on what the profile leaves undescribed or describes for nothing."""
    by_url, described = roles(cfg), {s.url for s in cfg.placed_servers}
    notes = [f"servers: {u} is no URL of gen_endpoints, disc_endpoints, judge_endpoints or eval_endpoints: "
             "not counted" for u in sorted(described - set(by_url))]
    if described:
        notes += [f"{u} ({', '.join(r)}) is not in `servers`: its GPUs are not checked and no launch line is "
                  "printed" for u, r in by_url.items() if u not in described]
    elif by_url:
        notes.append("the servers behind the endpoint URLs are not described (`servers`): their GPUs are not "
                     "checked and no launch line is printed")
    return notes


def gpu_use(found: list[dict], gpu_gib: float, chain_gpu: int | None, peaks: dict) -> dict[str, dict]:
    """Per stage, per GPU: the parts it holds, as (name, GiB). `peaks` maps a stage to the chain's in-process
    peak there, (GiB, what)."""
    use: dict[str, dict] = {}
    for stage in STAGES[1:]:
        held: dict[int, list] = {}
        for s in found:
            if stage in s["stages"]:
                for g in s["gpus"]:
                    held.setdefault(g, []).append(
                        (f"server {s['url']} ({s['utilization']:g} x {gpu_gib:g})", s["utilization"] * gpu_gib))
        gib, what = peaks.get(stage, (0.0, ""))
        if chain_gpu is not None and gib:
            held.setdefault(chain_gpu, []).append((f"the chain's {what}", gib))
        use[stage] = dict(sorted(held.items()))
    return use


def _gpus(ids) -> str:
    ids = list(ids)
    return f"GPU {ids[0]}" if len(ids) == 1 else f"GPUs {','.join(map(str, ids))}"


def overcommitted(use: dict, gpu_gib: float) -> list[str]:
    """One flag per set of GPUs whose parts together would hold more than gpu_gib, the stages where they do
    merged. (The chain alone on a GPU is flagged by its models' own estimates, plan.flags.)"""
    found: dict[str, list[str]] = {}
    for stage, held in use.items():
        same: dict[tuple, list[int]] = {}
        for g, parts in held.items():
            if len(parts) > 1 and sum(gib for _, gib in parts) > gpu_gib:
                same.setdefault(tuple(parts), []).append(g)
        for parts, ids in same.items():
            total = sum(gib for _, gib in parts)
            msg = (f"{_gpus(ids)} would hold ~{total:.1f} GiB{' each' if len(ids) > 1 else ''}, more than the "
                   f"{gpu_gib:g} GiB of a GPU "
                   f"(--gpu-gib): " + " + ".join(f"{name} ~{gib:.1f}" for name, gib in parts))
            found.setdefault(msg, []).append(stage)
    return [f"{', '.join(stages)}: {msg}" for msg, stages in found.items()]


def server_flags(found: list[dict], gpu_gib: float, weights: dict) -> list[str]:
    """A server whose roles need two base models, or whose share of a GPU cannot hold its weights and a
    working margin (`weights`: GiB of bf16 weights per GPU, None when unknown)."""
    out = []
    for s in found:
        if len(s["models"]) > 1:
            out.append(f"server {s['url']} would serve {' and '.join(s['models'])} ({', '.join(s['roles'])}): "
                       "one vLLM server serves one base model (LoRA modules on top); give each model its own URL")
        budget, w = s["utilization"] * gpu_gib, weights.get(s["url"])
        if w is not None and w + SERVER_RESERVE_GIB > budget:
            tp = f" (tensor parallel {len(s['gpus'])})" if len(s["gpus"]) > 1 else ""
            out.append(f"server {s['url']}: {s['models'][0]} needs ~{w:.1f} GiB of bf16 weights per GPU{tp} "
                       f"+ ~{SERVER_RESERVE_GIB:g} GiB to work, more than its "
                       f"{s['utilization']:g} x {gpu_gib:g} = {budget:.1f} GiB")
    return out


def shared_notes(use: dict, found: list[dict], chain_gpu: int | None, gpu_gib: float) -> list[str]:
    """Where a server shares a GPU with the chain or another server: why the order of the launch lines matters."""
    shared = sorted({g for held in use.values() for g, parts in held.items() if len(parts) > 1})
    notes = []
    for g in shared:
        names = [s for s in found if g in s["gpus"]]
        parts = [f"server {s['url']}" for s in names] + (["the chain"] if g == chain_gpu else [])
        notes.append(f"GPU {g} is shared by {' and '.join(parts)}: start the server{'s' if len(names) > 1 else ''} "
                     "first and wait until it answers; vLLM checks at start that its share is free ("
                     + ", ".join(f"{s['utilization']:g} x {gpu_gib:g} GiB" for s in names) + ")")
    return notes


def _port(url: str) -> int:
    u = urlparse(url)
    return u.port or (443 if u.scheme == "https" else 80)


def adapters_loop(cfg) -> str:
    """The shell words that name every adapter of 04_finetune as the LoRA module <arm>.seed-<s> (05_evaluate asks
    for it by that name)."""
    folder = cfg.run_dir / "04_finetune"
    folder = folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder
    return (f'$(for d in {folder}/*/seed-*; do a=${{d%/seed-*}}; echo "${{a##*/}}.seed-${{d##*-}}=$d"; done)')


def serve_lines(cfg, s: dict, with_adapters: bool) -> list[str]:
    """`vllm serve` for one server on its GPUs with its share of each, then the wait until it answers."""
    args = [f"CUDA_VISIBLE_DEVICES={','.join(map(str, s['gpus']))} vllm serve {s['models'][0]}",
            f"--port {_port(s['url'])}"]
    if len(s["gpus"]) > 1:
        args.append(f"--tensor-parallel-size {len(s['gpus'])}")
    args.append(f"--gpu-memory-utilization {s['utilization']:g}")
    modules = [f"{cfg.disc_checkpoint}={cfg.disc_checkpoint}"] if "M_D" in s["roles"] and cfg.disc_checkpoint else []
    if with_adapters:
        modules.append(adapters_loop(cfg))
    if {"M_D", "evaluation"} & set(s["roles"]):
        rank = next((r for r in LORA_RANKS if r >= cfg.lora_r), cfg.lora_r)
        args += ["--enable-lora", f"--max-lora-rank {rank}", "--max-loras 4"]
    if modules:
        args.append("--lora-modules " + " ".join(modules))
    if cfg.endpoint_api_key_env:
        args.append(f'--api-key "${cfg.endpoint_api_key_env}"')
    u = urlparse(s["url"])
    return [" ".join(args) + " &", f"until curl -sf {u.scheme}://{u.netloc}/health > /dev/null; do sleep 10; done"]


def launch_lines(cfg, found: list[dict], run_args: str = "") -> list[str]:
    """The servers first (each waited for), then the chain; with an evaluation server, the chain to 04, then that
    server with the adapters as LoRA modules (restarted if it was up), then 05."""
    run = f"python -m synthempathy run --profile {cfg.profile}{run_args}"
    early = [s for s in found if s["stages"][0] != EVALUATION]
    late = [s for s in found if "evaluation" in s["roles"]]
    lines = [line for s in early for line in serve_lines(cfg, s, with_adapters=False)]
    if not late:
        return [*lines, run]
    lines.append(f"{run} --to 4")
    restarted = [s["url"] for s in late if s in early]
    if restarted:
        lines.append(f"# stop the server at {', '.join(restarted)}: it restarts with the adapters as LoRA modules")
    lines += [line for s in late for line in serve_lines(cfg, s, with_adapters=True)]
    return [*lines, f"{run} --from 5"]
