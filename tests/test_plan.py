"""`python -m synthempathy plan`: the offline dry run of a profile (synthempathy/chain/plan.py); no model loads."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthempathy.chain import plan as P
from synthempathy.chain.config import load_config
from synthempathy.chain.store import STAGES
from synthempathy.generate import generation_requests
from synthempathy.lib import arms
from synthempathy.lib.ed import SEED_DIR, load_ed
from synthempathy.lib.judging import CRITERIA

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("tiny")
    return cfg, P.plan(cfg, gpu=False)


def stage(plan_dict: dict, name: str) -> dict:
    return next(s for s in plan_dict["stages"] if s["stage"] == name)


def request(plan_dict: dict, name: str, what: str) -> dict:
    return next(r for r in stage(plan_dict, name)["requests"] if r["what"] == what)


def test_tiny_lists_every_stage_in_process_on_cpu_and_flags_nothing(tiny):
    cfg, p = tiny
    assert [s["stage"] for s in p["stages"]] == list(STAGES)
    models = [m for s in p["stages"] for m in s["models"]]
    assert models and all(m["device"] == "cpu" and m["where"] == "in process (cpu)" for m in models)
    assert all(m["estimate_gib"] is not None and m["fits"] for m in models)
    assert P.flags(p) == [] and p["warnings"] == []
    text = P.render(p)
    assert all(s in text for s in STAGES) and "flags: none" in text


def test_tiny_counts_follow_the_profile_and_the_seed_corpus(tiny):
    cfg, p = tiny
    seeds = [r.to_dict() for r in load_ed(SEED_DIR, cfg.train_split)][: cfg.max_seed_records][
        : cfg.gen_max_seeds
    ]
    n_gen = len(generation_requests(seeds, cfg))  # what stage 01 builds
    assert n_gen == len(seeds) * cfg.passes
    assert request(p, "01_generate", "generations")["count"] == n_gen
    assert request(p, "01_generate", "generations")["tokens_out"] == n_gen * cfg.gen_max_new_tokens
    assert p["data"] == {
        "train": cfg.max_seed_records,
        "seeds": len(seeds),
        "eval": len(load_ed(SEED_DIR, cfg.eval_split)),
    }
    # the judge: every (<= one per generation) example and the sanity panel, 3 criteria each
    assert request(p, "02_quality", "judge scores")["count"] == (n_gen + 2 * cfg.sanity_pairs) * len(CRITERIA)
    adapters = (len(cfg.arms) + len(arms.sweep_runs(cfg))) * len(cfg.train_seeds)
    assert adapters == 3 and f"= {adapters} adapters" in stage(p, "04_finetune")["notes"][0]
    steps = request(p, "04_finetune", "ed steps")["count"]
    assert steps == -(-cfg.max_seed_records // cfg.train_batch_size) * len(cfg.train_seeds)
    n_eval = p["data"]["eval"]
    models = 1 + len(cfg.arms) * len(cfg.train_seeds) + len(arms.sweep_runs(cfg)) * len(cfg.train_seeds)
    assert request(p, "05_evaluate", "predictions")["count"] == models * n_eval
    assert request(p, "05_evaluate", "A/B judge")["count"] == (
        len(cfg.ab_comparisons) * len(cfg.train_seeds) * cfg.ab_records * 2 * len(CRITERIA)
    )


def test_paper_fits_one_80_gb_gpu():
    p = P.plan(load_config("paper"), gpu_gib=80, gpu=True)
    assert P.flags(p) == []
    in_process = [m for s in p["stages"] for m in s["models"] if m["device"]]
    assert {m["device"] for m in in_process} == {"cuda"}
    assert {"M_D training", "embedder"} <= {m["role"] for m in in_process}
    assert all(0 < m["estimate_gib"] <= 80 for m in in_process)
    endpoints = [m for s in p["stages"] for m in s["models"] if not m["device"]]
    assert {m["role"] for m in endpoints} >= {"generator", "judge"}
    assert request(p, "01_generate", "generations")["where"] == "http://localhost:8000/v1"


def test_paper_with_the_70b_judge_in_process_is_flagged():
    p = P.plan(load_config("paper", {"judge_endpoints": []}), gpu_gib=80, gpu=True)
    found = P.flags(p)
    assert found and all("meta-llama/Meta-Llama-3-70B-Instruct" in f and "judge" in f for f in found)
    assert any(f.startswith("02_quality:") for f in found)
    gib = float(found[0].split("~")[1].split(" GiB")[0])
    assert gib > 130  # 70.6B parameters in bf16 alone are 131 GiB
    assert "on cuda" in found[0] and "80 GiB of the GPU" in found[0]
    assert "DOES NOT FIT" in P.render(p)


def test_an_unknown_local_model_is_unknown_not_unfitting(tmp_path):
    folder = tmp_path / "mystery-model"
    folder.mkdir()
    p = P.plan(load_config("tiny", {"judge_model": str(folder)}), gpu=False)
    judge = next(m for m in stage(p, "02_quality")["models"] if m["role"] == "judge")
    assert judge["params"] is None and judge["estimate_gib"] is None and judge["fits"] is None
    assert P.flags(p) == []
    assert any("unknown size" in w and str(folder) in w for w in p["warnings"])
    assert "unknown size" in P.render(p)


def test_sizes_come_from_a_local_config_or_the_table(tmp_path):
    smol = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(smol))
    arch = P.model_size(str(tmp_path))
    assert (
        arch.source == "config.json"
        and arch.params == pytest.approx(134.5e6, rel=0.01)
        and arch.kv_dim == 192
    )
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path)}))
    assert P.model_size(str(adapter)) == arch
    assert P.model_size("meta-llama/Meta-Llama-3-70B-Instruct").params == pytest.approx(70.6e9)
    assert P.model_size("meta-llama/Meta-Llama-3-8B-Instruct").params == pytest.approx(8.03e9)
    assert P.model_size("someone/fancy-13b-chat").source == "name"
    assert P.model_size("someone/fancy-chat") is None


def test_command_exit_status():
    out: list[str] = []
    assert P.command("tiny", [], echo=out.append) == 0 and "01_generate" in out[0]
    assert P.command("paper", ["judge_endpoints=[]", "device=cuda"], gpu_gib=80, echo=out.append) == 1
    assert P.command("paper", ["judge_endpoints=[]"], gpu_gib=200, echo=out.append) == 0


def test_the_plan_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t = time.time()\n"
        "from synthempathy.chain.config import load_config\nfrom synthempathy.chain.plan import plan, render, flags\n"
        "for prof in ('tiny', 'paper'): render(plan(load_config(prof)))\n"
        "print(time.time() - t, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seconds, torch, transformers = out.stdout.split()
    assert (torch, transformers) == ("False", "False")
    assert float(seconds) < 5 and time.time() - t0 < 10


# -- placement: which GPUs each part uses, what each GPU holds, the launch lines ---------------------------------

ONE_GPU_SERVER = "http://localhost:8000/v1"


def launch(plan_dict: dict) -> list[str]:
    return plan_dict["gpus"]["launch"]


def test_tiny_places_nothing_on_a_gpu(tiny):
    _, p = tiny
    assert p["gpus"]["use"] == {} and p["gpus"]["launch"] == [] and p["gpus"]["servers"] == []
    assert "GPUs:" not in P.render(p) and "launch" not in P.render(p)


def test_paper_places_the_70b_on_four_gpus_the_chain_on_a_fifth_the_evaluation_on_a_sixth():
    p = P.plan(load_config("paper"), gpu_gib=80, gpu=True)
    use = p["gpus"]["use"]
    assert all(set(use[s]) == {0, 1, 2, 3, 4} for s in ("02_quality", "03_diversity", "04_finetune"))
    assert set(use["01_generate"]) == {0, 1, 2, 3}  # nothing in process in 01
    assert set(use["05_evaluate"]) == {0, 1, 2, 3, 4, 5}  # the evaluation's server is up in 05 only
    assert all(len(parts) == 1 for held in use.values() for parts in held.values()), "no GPU is shared"
    assert use["02_quality"][0] == [("server http://localhost:8000/v1 (0.9 x 80)", 72.0)]
    (what, gib), = use["02_quality"][4]
    assert what == "the chain's M_D answering + embedder" and 40 < gib < 60
    assert P.flags(p) == [] and p["gpus"]["shared"] == []
    in_process = [m["where"] for s in p["stages"] for m in s["models"] if m["device"]]
    assert set(in_process) == {"in process (cuda, GPU 4)"}
    text = P.render(p)
    assert "GPU 4" in text and "and every GPU its parts" in text


def test_paper_launch_lines_start_the_servers_first_and_the_evaluation_server_after_04():
    lines = launch(P.plan(load_config("paper"), gpu_gib=80, gpu=True))
    assert lines[0] == ("CUDA_VISIBLE_DEVICES=0,1,2,3 vllm serve meta-llama/Meta-Llama-3-70B-Instruct --port 8000 "
                        "--tensor-parallel-size 4 --gpu-memory-utilization 0.9 &")
    assert lines[1] == "until curl -sf http://localhost:8000/health > /dev/null; do sleep 10; done"
    assert lines[2] == "python -m synthempathy run --profile paper --to 4"
    assert lines[3].startswith("CUDA_VISIBLE_DEVICES=5 vllm serve meta-llama/Meta-Llama-3-8B-Instruct --port 8001 "
                               "--gpu-memory-utilization 0.9 --enable-lora --max-lora-rank 8 ")
    assert "--lora-modules $(for d in runs/paper/04_finetune/*/seed-*;" in lines[3]
    assert lines[4].startswith("until curl -sf http://localhost:8001/health")
    assert lines[5] == "python -m synthempathy run --profile paper --from 5" and len(lines) == 6


def test_the_readme_shows_the_paper_launch_lines_that_plan_prints():
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("### `paper` on GPUs"):]
    block = block[: block.index("```\n\n")]
    for line in launch(P.plan(load_config("paper"), gpu_gib=80, gpu=True)):
        assert line in block, line
    assert block.index("vllm serve meta-llama/Meta-Llama-3-70B") < block.index("run --profile paper --to 4")


def test_one_gpu_fits_one_80_gb_gpu_beside_its_server():
    cfg = load_config("one_gpu")
    p = P.plan(cfg, gpu_gib=80, gpu=True)
    assert P.flags(p) == [], P.flags(p)
    use = p["gpus"]["use"]
    assert all(set(held) == {0} for held in use.values())
    server = ("server http://localhost:8000/v1 (0.3 x 80)", 24.0)
    assert all(held[0][0] == server for held in use.values()), "the server holds its share in every stage"
    totals = {s: sum(g for _, g in held[0]) for s, held in use.items()}
    assert max(totals, key=totals.get) == "02_quality" and totals["02_quality"] < 76  # a margin under 80
    assert p["gpus"]["shared"] and "start the server first" in p["gpus"]["shared"][0]
    roles = {m["role"]: m for s in p["stages"] for m in s["models"]}
    assert {r for r, m in roles.items() if m["device"] is None} == {"generator", "judge", "predictions"}
    assert cfg.embedder == "Alibaba-NLP/gte-Qwen2-7B-instruct" and cfg.quantization == "4bit"
    # the authors' bf16 LoRA raises training, not the peak (M_D answering beside the embedder): it fits too
    assert P.flags(P.plan(load_config("one_gpu", {"quantization": "none"}), gpu_gib=80, gpu=True)) == []
    out: list[str] = []
    assert P.command("one_gpu", [], gpu_gib=80, echo=out.append) == 0


def test_one_gpu_launches_one_server_then_restarts_it_with_the_adapters():
    lines = launch(P.plan(load_config("one_gpu"), gpu_gib=80, gpu=True))
    serve = ("CUDA_VISIBLE_DEVICES=0 vllm serve meta-llama/Meta-Llama-3-8B-Instruct --port 8000 "
             "--gpu-memory-utilization 0.3 --enable-lora --max-lora-rank 8 --max-loras 4")
    assert lines[0] == serve + " &"
    assert lines[2] == "python -m synthempathy run --profile one_gpu --to 4"
    assert lines[3].startswith("# stop the server at http://localhost:8000/v1")
    assert lines[4].startswith(serve + " --lora-modules $(for d in runs/one_gpu/04_finetune/*/seed-*;")
    assert lines[-1] == "python -m synthempathy run --profile one_gpu --from 5"


def test_the_launch_lines_carry_the_plans_overrides_and_the_api_key():
    out: list[str] = []
    P.command("one_gpu", ["endpoint_api_key_env=VLLM_KEY", "passes=2"], gpu_gib=80, echo=out.append)
    text = out[0]
    assert '--api-key "$VLLM_KEY"' in text
    assert "python -m synthempathy run --profile one_gpu -p endpoint_api_key_env=VLLM_KEY -p passes=2 --to 4" in text


def test_a_server_sharing_the_chains_gpu_beyond_its_memory_is_flagged():
    p = P.plan(load_config("paper", {"in_process_gpu": 0}), gpu_gib=80, gpu=True)
    found = P.flags(p)
    assert found and all("GPU 0 would hold" in f and "server http://localhost:8000/v1 (0.9 x 80) ~72.0" in f
                         for f in found)
    assert found[0].startswith("02_quality: GPU 0 would hold ~121.1 GiB") and "M_D answering + embedder" in found[0]
    assert any(f.startswith("03_diversity, 05_evaluate: ") for f in found), "stages with the same overlap merge"
    assert P.command("paper", ["in_process_gpu=0"], gpu_gib=80, echo=[].append) == 1


def test_two_servers_on_one_gpu_beyond_its_memory_are_flagged_once_per_gpu_set():
    servers = ["http://localhost:8000/v1 gpus=0,1,2,3 utilization=0.9", "http://localhost:8001/v1 gpus=2,3 utilization=0.5"]
    found = P.flags(P.plan(load_config("paper", {"servers": servers}), gpu_gib=80, gpu=True))
    assert found == ["05_evaluate: GPUs 2,3 would hold ~112.0 GiB each, more than the 80 GiB of a GPU (--gpu-gib): "
                     "server http://localhost:8000/v1 (0.9 x 80) ~72.0 + server http://localhost:8001/v1 (0.5 x 80) ~40.0"]


def test_a_server_too_small_for_its_weights_or_asked_for_two_models_is_flagged():
    small = load_config("one_gpu", {"servers": [f"{ONE_GPU_SERVER} gpus=0 utilization=0.15"]})
    (found,) = P.flags(P.plan(small, gpu_gib=80, gpu=True))
    assert "needs ~15.0 GiB of bf16 weights per GPU + ~4 GiB to work, more than its 0.15 x 80 = 12.0 GiB" in found
    mixed = load_config("paper", {"eval_endpoints": ["http://localhost:8000/v1"]})
    found = P.flags(P.plan(mixed, gpu_gib=80, gpu=True))
    assert any("would serve meta-llama/Meta-Llama-3-70B-Instruct and meta-llama/Meta-Llama-3-8B-Instruct" in f
               for f in found)


def test_undescribed_and_unused_servers_are_noted_not_counted():
    cfg = load_config("paper", {"servers": ["http://localhost:9999/v1 gpus=7 utilization=0.5"]})
    p = P.plan(cfg, gpu_gib=80, gpu=True)
    assert p["gpus"]["servers"] == [] and P.flags(p) == []
    assert any("http://localhost:9999/v1 is no URL" in w for w in p["warnings"])
    bare = P.plan(load_config("paper", {"servers": []}), gpu_gib=80, gpu=True)
    assert any("not described (`servers`)" in w for w in bare["warnings"]) and launch(bare) == []
