"""4-bit QLoRA against plain LoRA: training tokens/s and peak RSS on the same model, data and steps.

Each variant trains in its own subprocess (so peak RSS is its own), one after the other, on the seed corpus.
    python bench/finetune.py [--steps 8] [--batch 4] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
from synthempathy.lib import sft
from synthempathy.config import load_config
from synthempathy.lib.ed import load_ed
args = json.loads(sys.argv[1])
cfg = load_config("tiny", {"quantization": args["q"], "max_steps": args["steps"], "train_batch_size": args["batch"],
                           "max_length": args["max_length"]})
items = [r.to_dict() for r in load_ed("packaged:seed", "train")]
rec = sft.train_lora(cfg, items, args["out"] + "/adapter", args["out"] + "/work", name=args["q"])
rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(rec))
"""


def run(q: str, args) -> dict:
    with tempfile.TemporaryDirectory() as out:
        payload = json.dumps({"q": q, "steps": args.steps, "batch": args.batch, "max_length": args.max_length, "out": out})
        proc = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{q} run failed:\n{proc.stderr[-3000:]}")
        return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    print(f"# load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    res = {q: run(q, args) for q in ("none", "4bit")}
    for q, r in res.items():
        print(f"finetune {q:>4}: {r['steps']} steps x {args.batch} examples, {r['train_tokens']} tokens in "
              f"{r['train_seconds']} s = {r['tokens_per_s']} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"final loss {r['final_loss']:.3f} (double quant: {r.get('double_quant', '-')})")
    a, b = res["4bit"], res["none"]
    print(f"finetune ratio 4bit/none: speed {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
          f"peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
