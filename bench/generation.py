"""Benchmark stage-1 generation: the batched TransformersBackend against one prompt at a time, and llama.cpp.

  python bench/generation.py                      # 32 prompts: batch sizes 1, 16, 32, then llama.cpp
  python bench/generation.py --n 16 --batch-sizes 16
  python bench/generation.py --n 16 --parse-variants   # parse rate of the four prompt variants instead
  python bench/generation.py --n 40 --batch-sizes 40 --cache   # the reserved KV cache against transformers' own

Every configuration gets the same prompts (the first N seed records of the profile's corpus, built with
generate.generation_requests under the profile, tiny by default), the same sampling settings and a fresh
temporary cache. Tokens are the real generated tokens up to and including EOS (padding after EOS in a batch
is not counted); tokens/s is over the wall time of the whole generate call, model already loaded and warmed.
The target is batched >= 4x one-at-a-time on a 2-core machine. What gets the batched backend there: the prompts'
shared prefix (system prompt and one-shot format example, about 60% of each prompt) is encoded once per batch and
its KV cache reused by every row (lib/prefix.shared_prefix_batch); measured 2026-11-24: batch 32 4.27x, batch 16
3.76x (before prefix sharing: 3.2x and 3.1x).

llama.cpp (llama-cpp-python, when it imports) runs the packaged GGUF in process, one prompt at a time, on the
exact prompt text our backend renders (chat template + prefilled reply) through `create_completion`: a chat
completion cannot continue a prefilled assistant reply. Sampling: the same temperature, top_p, max tokens and
per-request seed, with llama.cpp's extra samplers off (top_k 0, min_p 0, no repeat penalty). Note that
llama-cpp-python reuses the KV cache of the prompt prefix shared with the previous prompt (system prompt and
format example). It is the practical CPU limit for this model.

The parse rate is the share of outputs with >= 1 (context, response) pair after generate.parse_generation
(prefill prepended, cut-off last responses and copies of the format example dropped), and the mean pairs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from machine import cpu_flags  # noqa: E402

from synthempathy import generate  # noqa: E402
from synthempathy.chain.config import load_config  # noqa: E402
from synthempathy.chain.store import JsonlCache  # noqa: E402
from synthempathy.lib.backends import Request, TransformersBackend  # noqa: E402
from synthempathy.lib.ed import load_ed  # noqa: E402


def build_requests(cfg, n: int) -> list[Request]:
    seeds = [r.to_dict() for r in load_ed(cfg.data_source, cfg.train_split)[:n]]
    if len(seeds) < n:
        sys.exit(f"only {len(seeds)} seed records in {cfg.data_source}, asked for --n {n}")
    return [r for _, n_pass, r in generate.generation_requests(seeds, cfg) if n_pass == 0]


def _overrides(cfg) -> dict:
    keys = ("format_example", "prefill", "gen_max_new_tokens", "temperature", "top_p", "seed")
    return {k: getattr(cfg, k) for k in keys}


def parse_stats(reqs: list[Request], rows: list[dict], format_example: bool) -> dict:
    pairs = [len(generate.parse_generation(r.prefill + row["text"], row["finished"], format_example)[0])
             for r, row in zip(reqs, rows)]
    return {"parsed": sum(p > 0 for p in pairs), "mean_pairs": statistics.fmean(pairs) if pairs else 0.0,
            "finished": sum(row["finished"] for row in rows)}


def run_transformers(reqs: list[Request], batch_size: int, shared: TransformersBackend) -> tuple[dict, list[dict]]:
    """One configuration: a backend of this batch size on the already loaded model, a fresh cache."""
    backend = TransformersBackend(shared.model_spec, shared.device, batch_size)
    backend._model, backend._tok = shared.model, shared.tokenizer  # the same loaded model for every configuration
    with tempfile.TemporaryDirectory() as d:
        cache = JsonlCache(Path(d) / "cache.jsonl")
        t0 = time.perf_counter()
        backend.generate(reqs, cache, progress=False)
        seconds = time.perf_counter() - t0
        rows = [cache[r.key] for r in reqs]
    return {"tokens": sum(r["tokens"] for r in rows), "seconds": seconds}, rows


def run_llama_cpp(reqs: list[Request], renderer: TransformersBackend, threads: int) -> tuple[dict, list[dict], dict]:
    import llama_cpp

    from synthempathy.lib.models import packaged_file

    llm = llama_cpp.Llama(model_path=str(packaged_file("packaged:smollm2-135m-instruct")), n_ctx=2048,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    prompts = [renderer.render(r) for r in reqs]
    llm.create_completion(prompts[0], max_tokens=4, temperature=0.0)  # warm-up
    rows, prompt_tokens = [], []
    t0 = time.perf_counter()
    for req, prompt in zip(reqs, prompts):
        s = req.sampling
        out = llm.create_completion(prompt, max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                    top_k=0, min_p=0.0, repeat_penalty=1.0, seed=req.seed)
        choice, usage = out["choices"][0], out["usage"]
        stopped = choice["finish_reason"] == "stop"  # an EOS token: llama.cpp does not count it, we do
        rows.append({"text": choice["text"], "tokens": usage["completion_tokens"] + stopped, "finished": stopped})
        prompt_tokens.append(usage["prompt_tokens"])
    seconds = time.perf_counter() - t0
    llm.close()
    return {"tokens": sum(r["tokens"] for r in rows), "seconds": seconds}, rows, {
        "prompt_tokens": statistics.fmean(prompt_tokens)}


def line(name: str, timing: dict, parsed: dict, n: int, extra: str = "") -> float:
    rate = timing["tokens"] / timing["seconds"]
    print(f"{name:<34} {timing['tokens']:>6} tokens {timing['seconds']:>7.1f} s {rate:>7.1f} tok/s | "
          f"parsed {parsed['parsed']:>3}/{n} mean pairs {parsed['mean_pairs']:.2f} "
          f"finished {parsed['finished']}/{n}{extra}", flush=True)
    return rate


def warm_up(backend: TransformersBackend, reqs: list[Request]) -> None:
    """Load the model and run two short generations (one prompt, then a batch) outside the timings."""
    short = [Request.make("warm-up", r.messages, r.prefill, type(r.sampling)(r.sampling.temperature, r.sampling.top_p, 4),
                          r.seed) for r in reqs[:2]]
    for bs in (1, 2):
        run_transformers(short, bs, backend)


def speed(cfg, args, shared: TransformersBackend, reqs: list[Request]) -> None:
    n = len(reqs)
    rates = {}
    t, rows = run_transformers(reqs, 1, shared)
    rates[1] = line("transformers batch 1", t, parse_stats(reqs, rows, cfg.format_example), n)
    for bs in args.batch_sizes:
        t, rows = run_transformers(reqs, bs, shared)
        rates[bs] = line(f"transformers batch {bs}", t, parse_stats(reqs, rows, cfg.format_example), n,
                         f" | {t['tokens'] / t['seconds'] / rates[1]:.2f}x batch 1")
    best_bs = max(args.batch_sizes, key=lambda b: rates[b])
    ratio = rates[best_bs] / rates[1]
    verdict = "meets" if ratio >= 4 else "BELOW"
    print(f"batched / one at a time: {ratio:.2f}x (batch {best_bs}; {verdict} the >= 4x target)", flush=True)

    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a missing or broken build: report and skip
        print(f"llama.cpp: skipped ({type(e).__name__}: {e})")
        return
    t, rows, info = run_llama_cpp(reqs, shared, args.llama_threads)
    ours_prompt = statistics.fmean(len(shared.tokenizer(shared.render(r), add_special_tokens=False)["input_ids"])
                                   for r in reqs)
    llama_rate = line(f"llama.cpp in process ({args.llama_threads} threads)", t,
                      parse_stats(reqs, rows, cfg.format_example), n,
                      f" | prompt tokens {info['prompt_tokens']:.0f} (ours {ours_prompt:.0f})")
    print(f"ours (batch {best_bs}) / llama.cpp: {rates[best_bs] / llama_rate:.2f}x", flush=True)


def cache_comparison(cfg, args, shared: TransformersBackend, reqs: list[Request]) -> None:
    """The largest batch with the package's KV cache (lib/prefix.reserved_cache: each new position written in place)
    and with transformers' DynamicCache (each new position concatenated onto the whole cache), side by side."""
    from transformers.cache_utils import DynamicCache

    from synthempathy.lib import prefix

    bs, reserved = max(args.batch_sizes), prefix.reserved_cache
    runs = {}
    for name, make in (("reserved", reserved), ("transformers", lambda reserve: DynamicCache())):
        prefix.reserved_cache = make
        try:
            t, rows = run_transformers(reqs, bs, shared)
        finally:
            prefix.reserved_cache = reserved
        runs[name] = (line(f"batch {bs}, {name} cache", t, parse_stats(reqs, rows, cfg.format_example), len(reqs)),
                      [r["text"] for r in rows])
    same = runs["reserved"][1] == runs["transformers"][1]
    print(f"reserved / transformers cache: {runs['reserved'][0] / runs['transformers'][0]:.2f}x tokens/s; "
          f"the same texts: {same}", flush=True)


def parse_variants(cfg, args, shared: TransformersBackend) -> None:
    bs = max(args.batch_sizes)
    print(f"parse rate of the prompt variants, batch {bs}, {args.n} prompts, "
          f"{cfg.gen_max_new_tokens} new tokens", flush=True)
    print(f"{'format_example':<15} {'prefill':<8} {'>= 1 pair':>10} {'mean pairs':>11} {'finished':>9} {'tok/s':>7}")
    for fe in (False, True):
        for pf in (False, True):
            variant = load_config(cfg.profile, {**_overrides(cfg), "format_example": fe, "prefill": pf})
            reqs = build_requests(variant, args.n)
            t, rows = run_transformers(reqs, bs, shared)
            p = parse_stats(reqs, rows, fe)
            print(f"{fe!s:<15} {pf!s:<8} {p['parsed']:>6}/{len(reqs):<3} {p['mean_pairs']:>11.2f} "
                  f"{p['finished']:>5}/{len(reqs):<3} {t['tokens'] / t['seconds']:>7.1f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="tiny", help="profile whose prompts, sampling and model are used")
    p.add_argument("--n", type=int, default=32, help="prompts: the first N seed records (default 32)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's gen_max_new_tokens")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32],
                   help="comma-separated batched configurations, compared with batch 1 (default 16,32)")
    p.add_argument("--llama-threads", type=int, default=os.cpu_count() or 1,
                   help="llama.cpp threads (default: all cores, as torch uses)")
    p.add_argument("--parse-variants", action="store_true",
                   help="instead of the speed comparison: parse rate of format_example x prefill, batched")
    p.add_argument("--cache", action="store_true",
                   help="instead: the reserved KV cache against transformers' concatenating one, largest batch")
    args = p.parse_args()

    import torch

    overrides = {"device": "cpu"}
    if args.max_new_tokens:
        overrides["gen_max_new_tokens"] = args.max_new_tokens
    cfg = load_config(args.profile, overrides)
    shared = TransformersBackend(cfg.generator_model, "cpu", 1)
    reqs = build_requests(cfg, args.n)
    load = os.getloadavg()
    print(f"# CPU: {cpu_flags()}; torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before loading", flush=True)
    print(f"# {cfg.generator_model}, {args.n} prompts from {cfg.data_source} ({args.profile}: format_example="
          f"{cfg.format_example} prefill={cfg.prefill}), temperature {cfg.temperature} top_p {cfg.top_p} "
          f"max_new_tokens {cfg.gen_max_new_tokens}", flush=True)
    warm_up(shared, reqs)
    print(f"# load average {os.getloadavg()[0]:.2f} after loading and warm-up", flush=True)
    if args.parse_variants:
        parse_variants(cfg, args, shared)
    elif args.cache:
        cache_comparison(cfg, args, shared, reqs)
    else:
        speed(cfg, args, shared, reqs)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end", flush=True)


if __name__ == "__main__":
    main()
