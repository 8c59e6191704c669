"""01_generate logic that needs no model: prompt building, parsing messy outputs, turn sampling, the cache."""

import random

import pytest

from synthempathy import generate as G
from synthempathy.chain.config import load_config
from synthempathy.chain.store import JsonlCache

CLEAN = ("I failed my driving test again today.", "That must be frustrating. What happened this time?")
CLEAN2 = ("I panicked at the roundabout.", "Roundabouts rattle lots of people. You will get there.")

PARSE_CASES = [
    ("plain", "Round 1:\nContext: {c1}\nResponse: {r1}\nRound 2:\nContext: {c2}\nResponse: {r2}", 2),
    ("no Round lines", "Context: {c1}\nResponse: {r1}\nContext: {c2}\nResponse: {r2}", 2),
    ("bold labels", "**Round 1:**\n**Context:** {c1}\n**Response:** {r1}\n\n**Round 2**\n**Context:** {c2}\n**Response:** {r2}", 2),
    ("numbered rounds", "1.\nContext: {c1}\nResponse: {r1}\n2.\nContext: {c2}\nResponse: {r2}", 2),
    ("numbered labels", "1. Context: {c1}\n   Response: {r1}\n2. Context: {c2}\n   Response: {r2}", 2),
    ("quotes", 'Round 1:\nContext: "{c1}"\nResponse: “{r1}”', 1),
    ("blank lines and markdown bullets", "### Round 1\n\n- Context: {c1}\n\n- Response: {r1}\n\n\n", 1),
    ("value on the next line", "Round 1:\nContext:\n{c1}\nResponse:\n{r1}", 1),
    ("trailing note after the last round", "Round 1:\nContext: {c1}\nResponse: {r1}\n\nNote: each response is under 30 words.", 1),
    ("trailing unfinished round", "Round 1:\nContext: {c1}\nResponse: {r1}\nRound 2:\nContext: {c2}\n", 1),
    ("Speaker/Listener labels", "Round 1:\nSpeaker: {c1}\nListener: {r1}", 1),
    ("Round with number and dash", "Round 1 -\nContext - {c1}\nResponse - {r1}", 1),
    ("prose, no pair", "I am sorry to hear that. Take care of yourself and talk to a friend.", 0),
    ("context only", "Context: {c1}", 0),
    ("empty response", "Context: {c1}\nResponse:\n\nRound 2:", 0),
]


@pytest.mark.parametrize("case, template, n", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_rounds_table(case, template, n):
    text = template.format(c1=CLEAN[0], r1=CLEAN[1], c2=CLEAN2[0], r2=CLEAN2[1])
    pairs = G.parse_rounds(text)
    assert len(pairs) == n
    if n:
        assert pairs[0] == CLEAN
    if n == 2:
        assert pairs[1] == CLEAN2


def test_cut_off_last_response_is_dropped_only_when_generation_hit_its_limit():
    text = f"Round 1:\nContext: {CLEAN[0]}\nResponse: {CLEAN[1]}\nRound 2:\nContext: {CLEAN2[0]}\nResponse: Roundabouts rattle lots of"
    assert G.parse_rounds(text, complete=False) == [CLEAN]
    assert len(G.parse_rounds(text, complete=True)) == 2
    finished = text + " people."
    assert len(G.parse_rounds(finished, complete=False)) == 2


def test_copies_of_the_format_example_are_dropped():
    answer = G.prompts()["format_example"]["answer"]
    assert G.parse_generation(answer, True, format_example=True) == ([], "copied_example")
    mixed = answer.split("Round 2:")[0] + f"Round 2:\nContext: {CLEAN[0]}\nResponse: {CLEAN[1]}"
    assert G.parse_generation(mixed, True, format_example=True) == ([CLEAN], "ok")
    assert G.parse_generation("no rounds here", True, format_example=True) == ([], "no_pair")


def test_prompt_carries_the_seed_and_the_authors_instruction():
    msgs = G.generation_messages(["I lost my keys.", "Oh no!", "And my wallet."], "That is a rough day.",
                                 format_example=False)
    assert [r for r, _ in msgs] == ["system", "user"]
    user = msgs[-1][1]
    assert "Original Context: I lost my keys.\nOh no!\nAnd my wallet." in user
    assert "Original Response: That is a rough day." in user
    assert "at least three rounds" in user and "at most 30 words" in user
    with_example = G.generation_messages(["x"], "y", format_example=True)
    assert [r for r, _ in with_example] == ["system", "user", "assistant", "user"]
    assert "Original Context: x" in with_example[-1][1]


def test_requests_differ_per_pass_and_are_stable():
    seeds = [{"id": "c:1:2", "history": ["a"], "response": "b"}, {"id": "c:2:2", "history": ["c"], "response": "d"}]
    cfg = load_config("tiny", {"passes": 2})
    a = G.generation_requests(seeds, cfg)
    b = G.generation_requests(seeds, cfg)
    assert [r.key for *_, r in a] == [r.key for *_, r in b]
    assert len({r.key for *_, r in a}) == 4 and len({r.seed for *_, r in a}) == 4
    other = G.generation_requests(seeds, load_config("tiny", {"passes": 2, "seed": 1}))
    assert not {r.key for *_, r in a} & {r.key for *_, r in other}


ROUNDS = [(f"context {i}", f"response {i}") for i in range(5)]


def test_turn_sampling_prompt_and_target():
    ex = G.sample_example(ROUNDS[:3], random.Random(0), max_k=3)
    k = ex["k"]
    assert 1 <= k <= 2
    lines = ex["instruction"].split("\n")
    assert lines[: 2 * k] == [x for i in range(k) for x in (f"Speaker: context {i}", f"Listener: response {i}")]
    assert lines[2 * k:] == [f"Speaker: context {k}", "Listener: "]
    assert ex["output"] == f"response {k}"
    authors = G.sample_example(ROUNDS[:3], random.Random(0), max_k=3, authors_target="last")
    assert authors["k"] == k and authors["output"] == "response 2"


def test_turn_sampling_k_is_uniform_and_capped():
    rng = random.Random(1)
    ks = [G.sample_example(ROUNDS, rng, max_k=3)["k"] for _ in range(3000)]
    assert set(ks) == {1, 2, 3} and all(abs(ks.count(k) / 3000 - 1 / 3) < 0.04 for k in (1, 2, 3))
    assert {G.sample_example(ROUNDS[:2], rng)["k"] for _ in range(50)} == {1}
    assert G.sample_example(ROUNDS[:1], rng) is None


def test_build_examples_is_independent_of_order():
    gens = [{"seed_id": f"s{i}", "pass": 0, "emotion": "sad", "rounds": [list(r) for r in ROUNDS]} for i in range(20)]
    a = G.build_examples(gens, 0, 3, "next")
    b = G.build_examples(list(reversed(gens)), 0, 3, "next")
    assert sorted(a, key=lambda e: e["id"]) == sorted(b, key=lambda e: e["id"])
    assert len({e["k"] for e in a}) > 1


def test_cache_drops_a_torn_last_line_and_keeps_the_rest(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    cache = JsonlCache(path)
    cache.add([{"key": "a", "text": "1"}, {"key": "b", "text": "2"}])
    with open(path, "a") as f:
        f.write('{"key": "c", "te')  # the process died mid-write
    reopened = JsonlCache(path)
    assert "a" in reopened and "b" in reopened and "c" not in reopened
    assert reopened.dropped == [3] and "torn write" in caplog.text
    reopened.add([{"key": "c", "text": "3"}, {"key": "a", "text": "dup"}])
    assert [line.count('"key"') for line in path.read_text().splitlines()] == [1, 1, 1]
    assert JsonlCache(path)["a"]["text"] == "1", "a finished item is never redone or duplicated"


@pytest.mark.slow
def test_batched_greedy_generation_equals_one_prompt_at_a_time(tmp_path):
    """Batching (shared-prefix KV cache, padding between prefix and suffix) must not change what a prompt gets."""
    import dataclasses

    from synthempathy.lib.backends import TransformersBackend
    from synthempathy.lib.ed import load_ed

    cfg = load_config("tiny")
    seeds = [r.to_dict() for r in load_ed(cfg.data_source, cfg.train_split)[:4]]
    greedy = G.Sampling(temperature=0.0, top_p=1.0, max_new_tokens=24)
    reqs = [dataclasses.replace(r, sampling=greedy) for _, n, r in G.generation_requests(seeds, cfg) if n == 0]
    one = TransformersBackend(cfg.generator_model, "cpu", batch_size=1)
    batched = TransformersBackend(cfg.generator_model, "cpu", batch_size=4)
    batched._model, batched._tok = one.model, one.tokenizer
    lengths = {len(one.tokenizer(one.render(r))["input_ids"]) for r in reqs}
    assert len(lengths) > 1, "the prompts should differ in length, so padding is exercised"
    texts = {}
    for name, backend in (("one", one), ("batched", batched)):
        cache = JsonlCache(tmp_path / f"{name}.jsonl")
        backend.generate(reqs, cache, progress=False)
        texts[name] = [cache[r.key]["text"] for r in reqs]
    assert texts["batched"] == texts["one"]
    assert all(t.strip() for t in texts["one"])



@pytest.mark.slow
def test_the_reserved_cache_samples_the_tokens_of_transformers_own_cache():
    """lib/prefix.py's cache writes each generated position in place instead of concatenating: the same keys and
    values, so the same sampled tokens, seed for seed, as transformers' DynamicCache; and no copy per token."""
    import torch

    from synthempathy.lib.backends import TransformersBackend
    from synthempathy.lib.ed import load_ed
    from synthempathy.lib.prefix import shared_prefix_batch

    cfg = load_config("tiny")
    seeds = [r.to_dict() for r in load_ed(cfg.data_source, cfg.train_split)[:4]]
    backend = TransformersBackend(cfg.generator_model, "cpu", batch_size=4)
    model, tok = backend.model, backend.tokenizer
    ids = [tok(backend.render(r), add_special_tokens=False)["input_ids"] for _, n, r in G.generation_requests(seeds, cfg)
           if n == 0]
    new = 24
    input_ids, mask, shared, reserved = shared_prefix_batch(model, ids, tok.pad_token_id, reserve=new)
    assert shared > 0, "the prompts share the system prompt and the format example"
    plain = model(input_ids=input_ids[:1, :shared], use_cache=True).past_key_values  # transformers' own, as before
    plain.batch_repeat_interleave(len(ids))
    outputs = []
    for cache in (reserved, plain):
        torch.manual_seed(0)
        with torch.inference_mode():
            outputs.append(model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache, do_sample=True,
                                          temperature=0.8, top_p=0.9, top_k=0, max_new_tokens=new,
                                          min_new_tokens=new, pad_token_id=tok.pad_token_id))
    assert torch.equal(outputs[0], outputs[1])
    layer = reserved.layers[0]
    assert layer.keys.shape[-2] == input_ids.shape[1] + new - 1, "every position but the last token's is cached"
    assert layer.keys.data_ptr() == layer._k.data_ptr() and layer._k.shape[-2] == input_ids.shape[1] + new, \
        "the prompt and the new tokens were written into the room reserved after the batch was laid out"


def test_the_nucleus_filter_keeps_the_tokens_of_transformers_top_p():
    """lib/sampling.py finds the nucleus among each row's most probable tokens instead of sorting the row. A token is
    in the nucleus when the probability of the tokens above it is below p: it keeps every such token and no other,
    as transformers' temperature and top-p do, also for a row whose nucleus is wider than the tokens it reads first
    (then it sorts). Only a token whose mass above lies within float rounding of p may go either way (the two sum
    in other orders, and kernels round differently), and the kept tokens keep their tempered logits."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from synthempathy.lib.sampling import nucleus_filter

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 49152, generator=gen) * torch.tensor([[1.0], [3.0], [6.0], [10.0], [0.2], [20.0]])
    for top_p, temperature in ((0.9, 0.8), (0.5, 1.0), (0.99, 0.7)):
        probs = (logits.double() / temperature).softmax(-1)
        ranked, order = probs.sort(-1, descending=True)
        above = torch.empty_like(probs).scatter(-1, order, ranked.cumsum(-1) - ranked)  # exact, in float64
        inside, outside = above < top_p - 1e-5, above > top_p + 1e-5
        theirs = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
        for kept in [torch.isfinite(theirs)] + [torch.isfinite(nucleus_filter(logits, temperature, top_p, top=top))
                                                for top in (64, 512, 49152)]:
            assert kept[inside].all() and not kept[outside].any(), (top_p, kept.sum(-1), inside.sum(-1))
        ours = nucleus_filter(logits, temperature, top_p, top=64)
        assert torch.equal(ours[torch.isfinite(ours)], (logits / temperature)[torch.isfinite(ours)])
        assert (~inside & ~outside).sum() <= 24, "only tokens at the edge of a row's nucleus may go either way"
    assert torch.equal(nucleus_filter(logits, 0.8, 1.0), logits / 0.8)


# -- shapes larger generators write (issue #14, item 5) -------------------------------------------------------

EXAM = ("I failed my exam.", "I'm sorry, that must hurt.")
RETAKE = ("I have to retake it in June.", "That gives you time to prepare. You can do this.")

SHAPE_CASES = [
    ("one line per round",
     "Round 1: Context: I failed my exam. Response: I'm sorry, that must hurt.\n"
     "Round 2: Context: I have to retake it in June. Response: That gives you time to prepare. You can do this."),
    ("one line per round, no Round labels",
     "Context: I failed my exam. Response: I'm sorry, that must hurt.\n"
     "Context: I have to retake it in June. Response: That gives you time to prepare. You can do this."),
    ("bold labels, colon inside or outside, no blank lines",
     "**Round 1:**\n**Context:** I failed my exam.\n**Response**: I'm sorry, that must hurt.\n"
     "**Round 2**\n**Context**: I have to retake it in June.\n**Response:** That gives you time to prepare. You can do this."),
    ("italic labels",
     "*Round 1:*\n*Context*: I failed my exam.\n*Response:* I'm sorry, that must hurt.\n"
     "_Round 2_:\n_Context_: I have to retake it in June.\n__Response__: That gives you time to prepare. You can do this."),
    ("markdown headings, no blank lines",
     "### Round 1\nContext: I failed my exam.\nResponse: I'm sorry, that must hurt.\n"
     "### Round 2\nContext: I have to retake it in June.\nResponse: That gives you time to prepare. You can do this."),
    ("numbered list with a dot",
     "1. Context: I failed my exam.\n   Response: I'm sorry, that must hurt.\n"
     "2. Context: I have to retake it in June.\n   Response: That gives you time to prepare. You can do this."),
    ("numbered list with a parenthesis",
     "1) Context: I failed my exam.\n   Response: I'm sorry, that must hurt.\n"
     "2) Context: I have to retake it in June.\n   Response: That gives you time to prepare. You can do this."),
    ("bullets",
     "- Context: I failed my exam.\n- Response: I'm sorry, that must hurt.\n"
     "- Context: I have to retake it in June.\n- Response: That gives you time to prepare. You can do this."),
    ("straight and curly double quotes",
     "Round 1:\nContext: \"I failed my exam.\"\nResponse: “I'm sorry, that must hurt.”\n"
     "Round 2:\nContext: “I have to retake it in June.”\nResponse: \"That gives you time to prepare. You can do this.\""),
    ("single quotes around turns with apostrophes",
     "Round 1:\nContext: 'I failed my exam.'\nResponse: 'I'm sorry, that must hurt.'\n"
     "Round 2:\nContext: ‘I have to retake it in June.’\nResponse: ‘That gives you time to prepare. You can do this.’"),
    ("bold labels and quotes",
     "**Round 1:**\n**Context:** \"I failed my exam.\"\n**Response:** “I'm sorry, that must hurt.”\n\n"
     "**Round 2:**\n**Context:** \"I have to retake it in June.\"\n**Response:** \"That gives you time to prepare. You can do this.\""),
    ("bold labels and quotes, one line per round",
     "**Round 1:** **Context:** \"I failed my exam.\" **Response:** \"I'm sorry, that must hurt.\"\n"
     "**Round 2:** **Context:** \"I have to retake it in June.\" **Response:** \"That gives you time to prepare. You can do this.\""),
    ("numbered, one line per round",
     "1. Context: I failed my exam. Response: I'm sorry, that must hurt.\n"
     "2. Context: I have to retake it in June. Response: That gives you time to prepare. You can do this."),
    ("italic quoted turns",
     "Round 1:\nContext: *\"I failed my exam.\"*\nResponse: *I'm sorry, that must hurt.*\n"
     "Round 2:\nContext: _I have to retake it in June._\nResponse: \"*That gives you time to prepare. You can do this.*\""),
]


@pytest.mark.parametrize("case, text", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_parse_rounds_reads_each_common_shape(case, text):
    assert G.parse_rounds(text) == [EXAM, RETAKE]
    assert G.parse_rounds(text, complete=False) == [EXAM, RETAKE], "every round ends a sentence"


def test_whole_dialogue_on_one_line():
    text = ("Round 1: Context: I failed my exam. Response: I'm sorry, that must hurt. "
            "Round 2: Context: I have to retake it in June. Response: That gives you time to prepare. You can do this. "
            "Round 3: Context: My parents don't know yet. Response: Telling them may feel lighter than carrying it alone.")
    assert G.parse_rounds(text) == [EXAM, RETAKE, ("My parents don't know yet.",
                                                   "Telling them may feel lighter than carrying it alone.")]
    numbered = ("1. Context: I failed my exam. Response: I'm sorry, that must hurt. 2. Context: I have to retake it "
                "in June. Response: That gives you time to prepare. You can do this.")
    assert G.parse_rounds(numbered) == [EXAM, RETAKE]


def test_one_line_rounds_keep_the_cut_off_rule():
    text = ("Round 1: Context: I failed my exam. Response: I'm sorry, that must hurt. "
            "Round 2: Context: I have to retake it in June. Response: That gives you time to")
    assert G.parse_rounds(text, complete=False) == [EXAM]
    assert G.parse_rounds(text, complete=True)[1] == ("I have to retake it in June.", "That gives you time to")


def test_a_label_word_inside_a_turn_does_not_split_it():
    context = "Without the context of it, my response: silence, seemed rude to them."
    response = "Context matters, and your response was a human one. What did they say?"
    assert G.parse_rounds(f"Round 1: Context: {context} Response: {response}") == [(context, response)]
    assert G.parse_rounds(f"Round 1:\nContext: {context}\nResponse:\n{response}") == [(context, response)]


@pytest.mark.parametrize("turn, cleaned", [
    ('"I failed my exam."', "I failed my exam."),
    ("'I'm sorry, that must hurt.'", "I'm sorry, that must hurt."),
    ("“‘I failed.’”", "I failed."),
    ('**"I failed my exam."**', "I failed my exam."),
    ('"Hi," she said, "bye."', '"Hi," she said, "bye."'),
    ("“Hi,” she said, “bye.”", "“Hi,” she said, “bye.”"),
    ("'Hi,' she said, 'bye.'", "'Hi,' she said, 'bye.'"),
    ('She said "no" to me.', 'She said "no" to me.'),
    ("*sigh* I'm tired *again*", "*sigh* I'm tired *again*"),
])
def test_quotes_are_stripped_only_when_they_wrap_the_whole_turn(turn, cleaned):
    assert G.clean(turn) == cleaned
