"""The authors' own prompt texts, read at run time from their published scripts at a pinned commit.

The package never holds the authors' words. `authors_texts` takes three scripts of
github.com/Aurora-slz/Synth-Empathy at PINNED["commit"], either downloaded (and cached) or from a local
clone, checks each file's sha256, and lifts the texts out of the parsed scripts with `ast`: it never imports
or runs them. Where they come from is the config key `authors_source`: "github" or the path of a clone.

- rewrite_ed_prompt.py: the generation template, the module-level `prompt_template` ({context}, {response});
- quality_data_score.py: the discriminator's system prompt, in `zero_shot_eval_model`;
- data_evaluation.py: per criterion, `zero_shot_eval_<Criterion>` holds the rubric message (`prompt_i_`), the
  history/response message ending in the evaluation form (the second message of `prompt_i`) and the judge's
  system prompt (the system message of `input`).

Every problem is an AuthorsTextError naming `authors_source`, the file, and what to do.
"""

from __future__ import annotations

import ast
import os
import shutil
import string
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..chain.config import REPO_ROOT
from ..chain.store import atomic_path, hash_file

KEY = "authors_source"
GENERATION_FILE, DISCRIMINATOR_FILE, JUDGE_FILE = "rewrite_ed_prompt.py", "quality_data_score.py", "data_evaluation.py"
PINNED: dict = {
    "repo": "Aurora-slz/Synth-Empathy",
    "commit": "4fafb00735de8aaf4e9d4ac30c4c635595f2e6a7",
    "files": {
        GENERATION_FILE: "1955aaac71eb0a3d706cdd3b5f3c8fbc732869a452e30aae973d3fd8b569dd6d",
        DISCRIMINATOR_FILE: "800bb0e3ad1a0cc3a6d5888f67fd192a8c837e8e70a18e76790d707a2610884a",
        JUDGE_FILE: "a25d7164913f83c0154fe274429e426f50ee9af33c2410d958b709385cc4550f",
    },
}
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
CRITERIA = ("naturalness", "coherence", "empathy")
# The fields of the authors' form message -> the placeholders of ours.
FORM_FIELDS = {"instruction": "history", "output": "response"}


class AuthorsTextError(ValueError):
    """The authors' texts could not be had; the message names `authors_source`, the file and what to do."""


@dataclass(frozen=True)
class AuthorsTexts:
    generation: str  # template with {context} and {response}
    discriminator_system: str
    judge_system: str
    judge: dict[str, tuple[str, str]]  # criterion -> (rubric message, form template with {history}, {response})
    source: str  # URL@commit or the clone's path


_MEMO: dict[tuple[str, str], AuthorsTexts] = {}


def authors_texts(source: str, cache_dir: str | os.PathLike) -> AuthorsTexts:
    """The authors' texts from `source` ("github", or a clone's path: a relative one not found from here is
    taken from the repo root), checked against PINNED; memoized per (source, cache_dir)."""
    key = (str(source), str(Path(cache_dir).expanduser().resolve()))
    if key not in _MEMO:
        _MEMO[key] = _load(*key)
    return _MEMO[key]


def texts_for(cfg) -> AuthorsTexts:
    """The authors' texts for a profile: from `authors_source`, cached beside the converted models."""
    from .models import MODELS_DIR

    return authors_texts(cfg.authors_source, MODELS_DIR / "authors")


def _error(source: str, file: str | Path, problem: str, todo: str) -> AuthorsTextError:
    return AuthorsTextError(f"{KEY}={source!r}: {file}: {problem}; {todo}")


def _clone_advice() -> str:
    repo, commit = PINNED["repo"], PINNED["commit"]
    return (f"clone the repository (git clone https://github.com/{repo} <dir> && git -C <dir> checkout {commit}) "
            f"and set {KEY} to <dir>")


def _load(source: str, cache_dir: str) -> AuthorsTexts:
    names = (GENERATION_FILE, DISCRIMINATOR_FILE, JUDGE_FILE)
    if source == "github":
        paths = {name: _download(name, Path(cache_dir), source) for name in names}
        origin = f"https://github.com/{PINNED['repo']}@{PINNED['commit']}"
    else:
        clone = Path(source).expanduser()
        clone = clone if clone.is_absolute() or clone.exists() else REPO_ROOT / clone
        paths = {name: _from_clone(clone, name, source) for name in names}
        origin = str(clone)
    gen, disc, judge = (_parse(paths[name], name, source) for name in names)
    generation = _module_string(gen, "prompt_template", GENERATION_FILE, source)
    _check_fields(generation, {"context", "response"}, GENERATION_FILE, "`prompt_template`", source)
    discriminator_system = _system_prompt(_function(disc, "zero_shot_eval_model", DISCRIMINATOR_FILE, source),
                                          DISCRIMINATOR_FILE, source)
    rubrics, systems = {}, set()
    for criterion in CRITERIA:
        fn = _function(judge, f"zero_shot_eval_{criterion.capitalize()}", JUDGE_FILE, source)
        rubrics[criterion] = _judge_messages(fn, source)
        systems.add(_system_prompt(fn, JUDGE_FILE, source))
    if len(systems) != 1:
        raise _structure(source, JUDGE_FILE, "one system prompt shared by the three judge functions (they differ)")
    return AuthorsTexts(generation, discriminator_system, systems.pop(), rubrics, origin)


# -- getting the files --------------------------------------------------------------------------------------

def _download(name: str, cache_dir: Path, source: str) -> Path:
    """The pinned file from the cache, else from RAW_URL, verified and then written to the cache."""
    expected = PINNED["files"][name]
    dest = cache_dir / f"{PINNED['repo'].replace('/', '+')}@{PINNED['commit']}" / name
    if dest.is_file() and hash_file(dest) == expected:
        return dest
    url = RAW_URL.format(repo=PINNED["repo"], commit=PINNED["commit"], path=name)
    with atomic_path(dest) as tmp:  # any error below leaves nothing in the cache
        try:
            with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f)
        except (OSError, ValueError) as e:
            raise _error(source, name, f"cannot be fetched from {url} ({e}) and is not in the cache {dest.parent}",
                         f"without the network, {_clone_advice()}") from None
        got = hash_file(tmp)
        if got != expected:
            raise _error(source, name, f"the download from {url} has sha256 {got}, expected {expected}; "
                                       "it was deleted", f"try again, or {_clone_advice()}")
    return dest


def _from_clone(clone: Path, name: str, source: str) -> Path:
    commit = PINNED["commit"]
    if not clone.is_dir():
        raise _error(source, clone, "no such folder",
                     f"set {KEY} to 'github' (download) or to the folder of a clone; to make one, {_clone_advice()}")
    path = clone / name
    if not path.is_file():
        raise _error(source, path, "missing from the clone",
                     f"check out the pinned commit (git -C {clone} checkout {commit}) or set {KEY} to 'github'")
    got, expected = hash_file(path), PINNED["files"][name]
    if got != expected:
        raise _error(source, path, f"sha256 {got}, expected {expected}: the clone is not at the pinned commit {commit}",
                     f"run git -C {clone} checkout {commit}")
    return path


# -- reading the texts out of the parsed scripts -------------------------------------------------------------

def _structure(source: str, file: str, what: str) -> AuthorsTextError:
    return _error(source, file, f"not found: {what}",
                  "the script no longer has the layout this package reads; pin a commit whose scripts do "
                  "(PINNED in synthempathy/lib/authors.py)")


def _parse(path: Path, name: str, source: str) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=name)
    except (SyntaxError, UnicodeDecodeError) as e:
        raise _structure(source, name, f"a Python script that parses ({e})") from None


def _literal(node: ast.AST | None) -> str | None:
    """A string constant, or an f-string without fields, as its text; anything else -> None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and all(_literal(v) is not None for v in node.values):
        return "".join(v.value for v in node.values)
    return None


def _assigned(body: list[ast.stmt] | ast.AST, name: str) -> list[ast.expr]:
    """The values assigned to `name`: in a module's top-level statements (a list), or anywhere in a function."""
    nodes = body if isinstance(body, list) else ast.walk(body)
    return [n.value for n in nodes if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]


def _module_string(tree: ast.Module, name: str, file: str, source: str) -> str:
    texts = [t for t in map(_literal, _assigned(tree.body, name)) if t is not None]
    if not texts:
        raise _structure(source, file, f"a module-level string assignment `{name} = ...`")
    return texts[0]


def _function(tree: ast.Module, name: str, file: str, source: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise _structure(source, file, f"the function {name}()")


def _message(node: ast.AST) -> dict[str, ast.expr] | None:
    """A `{"role": ..., "content": ...}` dict literal as {key: value node}; anything else -> None."""
    if not isinstance(node, ast.Dict):
        return None
    items = {_literal(k): v for k, v in zip(node.keys, node.values, strict=True)}
    return items if {"role", "content"} <= items.keys() else None


def _system_prompt(fn: ast.FunctionDef, file: str, source: str) -> str:
    for node in ast.walk(fn):
        msg = _message(node)
        if msg and _literal(msg["role"]) == "system" and _literal(msg["content"]) is not None:
            return _literal(msg["content"])
    raise _structure(source, file, f'a {{"role": "system", "content": "..."}} message in {fn.name}()')


def _judge_messages(fn: ast.FunctionDef, source: str) -> tuple[str, str]:
    """(rubric message, form template) of one judge function."""
    rubrics = [t for t in map(_literal, _assigned(fn, "prompt_i_")) if t is not None]
    if not rubrics:
        raise _structure(source, JUDGE_FILE, f"a string `prompt_i_ = ...` (without fields) in {fn.name}()")
    lists = [v for v in _assigned(fn, "prompt_i") if isinstance(v, ast.List) and len(v.elts) == 2]
    msgs = [_message(e) for e in lists[0].elts] if lists else []
    if len(msgs) != 2 or None in msgs or not (isinstance(msgs[0]["content"], ast.Name)
                                             and msgs[0]["content"].id == "prompt_i_"):
        raise _structure(source, JUDGE_FILE, f"`prompt_i = [<prompt_i_ message>, <form message>]` in {fn.name}()")
    form = _form_template(msgs[1]["content"], f"the form message of `prompt_i` in {fn.name}()", source)
    return rubrics[0], form


def _form_template(node: ast.expr, where: str, source: str) -> str:
    """The f-string of the form message as a str.format template: test_data[i]["instruction"] -> {history},
    test_data[i]["output"] -> {response}, literal braces doubled."""
    parts = []
    for value in node.values if isinstance(node, ast.JoinedStr) else [node]:
        text = _literal(value)
        field = value.value if isinstance(value, ast.FormattedValue) else None
        key = field.slice if isinstance(field, ast.Subscript) else None
        if text is not None:
            parts.append(text.replace("{", "{{").replace("}", "}}"))
        elif _literal(key) in FORM_FIELDS and value.conversion == -1 and value.format_spec is None:
            parts.append("{" + FORM_FIELDS[_literal(key)] + "}")
        else:
            raise _structure(source, JUDGE_FILE, f"{where}: only the fields [\"instruction\"] and [\"output\"]")
    template = "".join(parts)
    _check_fields(template, set(FORM_FIELDS.values()), JUDGE_FILE, where, source)
    return template


def _check_fields(template: str, fields: set[str], file: str, where: str, source: str) -> None:
    try:
        found = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        found = {f"<unparsable: {e}>"}
    if found != fields:
        raise _structure(source, file, f"{where} with exactly the fields {sorted(fields)} (it has {sorted(found)})")
