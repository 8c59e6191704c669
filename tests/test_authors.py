"""The authors' texts, read from their scripts at run time: here from a fake clone that these tests write in the
same layout (the same assignment names, function names and message lists), filled with our own words."""

import urllib.error

import pytest
from authors_fixture import CRITERIA, DISCRIMINATOR, judge_script, write_clone

from synthempathy.lib import authors


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(authors, "_MEMO", {})


def cached_files(cache):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def check_texts(texts):
    assert texts.generation.format(context="I lost my keys.", response="That is annoying.") == (
        "\nSeed turns: I lost my keys.\nSeed reply: That is annoying.\n\nInvent a new conversation of three rounds.\n")
    assert texts.discriminator_system == "Reply as the listener."
    assert texts.judge_system == "Grade fairly."
    assert set(texts.judge) == {"naturalness", "coherence", "empathy"}
    for name in CRITERIA:
        rubric, form = texts.judge[name.lower()]
        assert rubric == f"Grade the reply for {name.lower()}.\nUse 1, 2 or 3."
        assert form.format(history="A: hi\nB: hello", response="Good to see you.") == (
            f"Turns so far:\nA: hi\nB: hello\n\nReply:\nGood to see you.\n\nMarks as {{1, 2, 3}}:\n- {name}:")


def test_a_local_clone_yields_every_text(tmp_path, monkeypatch):
    clone = write_clone(tmp_path / "clone", monkeypatch)
    texts = authors.authors_texts(str(clone), tmp_path / "cache")
    check_texts(texts)
    assert texts.source == str(clone)
    assert authors.authors_texts(str(clone), tmp_path / "cache") is texts  # memoized
    assert not (tmp_path / "cache").exists()  # a clone needs no cache


def test_github_downloads_through_raw_url_then_serves_from_the_cache(tmp_path, monkeypatch):
    clone = write_clone(tmp_path / "published", monkeypatch)
    monkeypatch.setattr(authors, "RAW_URL", clone.as_uri() + "/{path}")
    cache = tmp_path / "cache"
    check_texts(first := authors.authors_texts("github", cache))
    assert first.source == f"https://github.com/{authors.PINNED['repo']}@{authors.PINNED['commit']}"
    assert cached_files(cache) == sorted(authors.PINNED["files"])

    monkeypatch.setattr(authors, "_MEMO", {})
    monkeypatch.setattr(authors, "RAW_URL", (tmp_path / "nowhere").as_uri() + "/{path}")
    check_texts(authors.authors_texts("github", cache))


def test_a_download_with_the_wrong_checksum_is_deleted_and_named(tmp_path, monkeypatch):
    clone = write_clone(tmp_path / "published", monkeypatch)
    monkeypatch.setattr(authors, "RAW_URL", clone.as_uri() + "/{path}")
    actual = authors.PINNED["files"]["data_evaluation.py"]
    monkeypatch.setitem(authors.PINNED["files"], "data_evaluation.py", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(authors.AuthorsTextError) as err:
        authors.authors_texts("github", cache)
    for part in ("authors_source", "data_evaluation.py", "0" * 64, actual, "deleted"):
        assert part in str(err.value)
    assert "data_evaluation.py" not in cached_files(cache)
    assert not [n for n in cached_files(cache) if n.endswith(".tmp")]


def test_offline_with_an_empty_cache_says_to_clone_at_once(tmp_path, monkeypatch):
    calls = []

    def no_network(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(authors.urllib.request, "urlopen", no_network)
    with pytest.raises(authors.AuthorsTextError) as err:
        authors.authors_texts("github", tmp_path / "cache")
    assert len(calls) == 1 and calls[0].startswith("https://raw.githubusercontent.com/Aurora-slz/Synth-Empathy/")
    for part in ("authors_source", "rewrite_ed_prompt.py", "git clone", "checkout " + authors.PINNED["commit"]):
        assert part in str(err.value)
    assert cached_files(tmp_path / "cache") == []


def test_a_clone_at_another_commit_is_named_with_the_checkout_to_run(tmp_path, monkeypatch):
    clone = write_clone(tmp_path / "clone", monkeypatch)
    (clone / "quality_data_score.py").write_text(DISCRIMINATOR + "\n# edited\n")
    with pytest.raises(authors.AuthorsTextError) as err:
        authors.authors_texts(str(clone), tmp_path / "cache")
    for part in ("authors_source", "quality_data_score.py", f"git -C {clone} checkout {authors.PINNED['commit']}"):
        assert part in str(err.value)


def test_a_missing_clone_folder_or_file_is_named(tmp_path, monkeypatch):
    with pytest.raises(authors.AuthorsTextError, match=r"authors_source=.*no such folder.*'github'"):
        authors.authors_texts(str(tmp_path / "absent"), tmp_path / "cache")
    clone = write_clone(tmp_path / "clone", monkeypatch)
    (clone / "rewrite_ed_prompt.py").unlink()
    with pytest.raises(authors.AuthorsTextError, match=r"authors_source=.*rewrite_ed_prompt\.py: missing"):
        authors.authors_texts(str(clone), tmp_path / "cache")


def test_a_script_without_a_judge_function_is_named(tmp_path, monkeypatch):
    clone = write_clone(tmp_path / "clone", monkeypatch, data_evaluation=judge_script(("Naturalness", "Empathy")))
    with pytest.raises(authors.AuthorsTextError) as err:
        authors.authors_texts(str(clone), tmp_path / "cache")
    for part in ("authors_source", "data_evaluation.py", "zero_shot_eval_Coherence()", "not found"):
        assert part in str(err.value)


@pytest.mark.parametrize("stem, text, missing", [
    ("rewrite_ed_prompt", "prompt = 'x'\n", "prompt_template"),
    ("rewrite_ed_prompt", 'prompt_template = "{context} only"\n', "fields ['context', 'response']"),
    ("quality_data_score", "def zero_shot_eval_model(d, m):\n    return [{'role': 'user', 'content': 'x'}]\n",
     '"role": "system"'),
    ("data_evaluation", judge_script().replace('["output"]', '["label"]'), 'only the fields'),
    ("data_evaluation", judge_script().replace("Grade fairly.", "Grade kindly.", 1), "one system prompt"),
])
def test_a_script_whose_structure_yields_no_text_is_named(tmp_path, monkeypatch, stem, text, missing):
    clone = write_clone(tmp_path / "clone", monkeypatch, **{stem: text})
    with pytest.raises(authors.AuthorsTextError) as err:
        authors.authors_texts(str(clone), tmp_path / "cache")
    assert "authors_source" in str(err.value) and f"{stem}.py" in str(err.value) and missing in str(err.value)
