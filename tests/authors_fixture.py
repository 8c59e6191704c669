"""A fake clone of the authors' repository, written by the tests in the same file layout (the same assignment
names, function names and message lists) with the project's own words; its checksums are pinned in its place.
And one of their released data files (`released_file`): their record format, ED from the seed corpus in their
spelling, and synthetic dialogues of our own."""

import hashlib

from synthempathy.lib import authors

GENERATION = '''import json

def load_file(path):
    return json.load(open(path))

prompt_template = """
Seed turns: {context}
Seed reply: {response}

Invent a new conversation of three rounds.
"""
'''

DISCRIMINATOR = '''def zero_shot_eval_model(test_data, model_path):
    prompt = []
    for i in range(0, len(test_data)):
        prompt_i = [{"role":"user", "content":f"""{test_data[i]["instruction"]}"""}]
        input = [{"role":"system", "content":"Reply as the listener."}] + prompt_i
        prompt.append(input)
    return prompt
'''

JUDGE_FUNCTION = '''
def zero_shot_eval_{Name}(test_data, model_path):
    prompt = []
    for i in range(0, len(test_data)):
        prompt_i_ = f"""Grade the reply for {name}.\\nUse 1, 2 or 3."""
        prompt_i = [{{"role":"user", "content":prompt_i_}}, {{"role":"user", "content":f"""Turns so far:\\n{{test_data[i]["instruction"]}}\\n\\nReply:\\n{{test_data[i]["output"]}}\\n\\nMarks as {{{{1, 2, 3}}}}:\\n- {Name}:"""}}]
        input = [{{"role":"system", "content":"Grade fairly."}}] + prompt_i
        prompt.append(input)
    return prompt
'''
CRITERIA = ("Naturalness", "Coherence", "Empathy")


def judge_script(criteria=CRITERIA) -> str:
    return "import json\n" + "".join(JUDGE_FUNCTION.format(Name=c, name=c.lower()) for c in criteria)


def write_clone(folder, monkeypatch, **texts):
    """A fake clone of the authors' repository, its checksums pinned; `texts` replaces a file by name stem."""
    files = {"rewrite_ed_prompt.py": GENERATION, "quality_data_score.py": DISCRIMINATOR,
             "data_evaluation.py": judge_script()}
    files.update({f"{stem}.py": text for stem, text in texts.items()})
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    monkeypatch.setitem(authors.PINNED, "files",
                        {name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()})
    return folder


# -- a released file of theirs (selected_data/*.json), in their format, with our own dialogues ------------------

# Synthetic records written for the tests, one per k (earlier rounds shown): (shown turns, reply).
SYNTHETIC = [
    (["My sister moved abroad last week and the flat feels far too quiet."],
     "Quiet can weigh a lot after someone leaves. Have you two set a time to talk?"),
    (["I planted tomatoes for the first time this spring.",
      "What a lovely thing to start. How are they coming along?",
      "Half of them wilted in yesterday's heat and I can't stop thinking about it."],
     "Losing plants you tended stings. Some may still come back with shade and water."),
    (["My old bike was stolen from outside the library.", "Oh no, had you had it long?",
      "Nine years. I rode it to every job I ever had.", "So it carried a lot of your life, not just you.",
      "Exactly, and the police said it is unlikely to turn up."],
     "That is a real loss. Would a new bike help, or does it feel too soon?"),
    (["I passed my driving test this morning!", "Congratulations! Was it your first try?",
      "Third, actually. I was so nervous each time.", "Sticking with it after two misses takes grit.",
      "Thanks. My dad cried a little when I told him.", "That must have felt wonderful to see.",
      "It did. I'm taking him for a drive on Sunday."],
     "What a sweet way to thank him. I hope the roads are kind to you both."),
]


def their_spelling(text: str) -> str:
    """ED text as their preprocessed copy spells it: lower case, punctuation apart, contractions spelled out."""
    import re

    text = text.lower().replace("cannot", "can not")
    for short, long in (("won't", "will not"), ("can't", "can not"), ("n't", " n't"), ("'m", " am"), ("'s", " 's")):
        text = text.replace(short, long)
    return " ".join(re.sub(r"([.,!?;:])", r" \1 ", text).split())


def released_record(turns, reply) -> dict:
    """One record as their turn sampling writes it: the transcript ends in an empty listener label."""
    lines = "".join(f"{('Speaker', 'Listener')[i % 2]}: {t}\n" for i, t in enumerate(turns))
    return {"instruction": lines + "Listener: ", "input": "", "output": reply}


def released_file(path, ed_records, order: int = 0):
    """Their file: the ED records in their spelling (the first also with `_comma_`, the second cut to its last
    three turns) and SYNTHETIC, plus a decoy whose reply is an ED reply after other turns; shuffled by `order`.
    Returns the synthetic records' replies (SYNTHETIC's and the decoy's)."""
    import json
    import random

    ed = [([their_spelling(t) for t in r.history], their_spelling(r.response)) for r in ed_records]
    ed[0] = ([t.replace(" , ", " _comma_ ") for t in ed[0][0]], ed[0][1])
    ed[1] = (ed[1][0][-3:], ed[1][1])
    decoy = (["My neighbour's dog barks all night."], ed_records[0].response)
    records = [released_record(*r) for r in ed + SYNTHETIC + [decoy]]
    random.Random(order).shuffle(records)
    path.write_text(json.dumps(records), encoding="utf-8")
    return {reply for _, reply in SYNTHETIC + [decoy]}
