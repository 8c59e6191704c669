"""A fake clone of the authors' repository, written by the tests in the same file layout (the same assignment
names, function names and message lists) with the project's own words; its checksums are pinned in its place."""

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
