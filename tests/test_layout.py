"""The house rules of the package, checked: the library sits below the stages, a stage never imports another,
a notebook calls only its own stage module, the store and the plots (the last one also the tools: chat,
rating kit, release); the config's declared reads are what the
runner fingerprints and what a stage may read; the wheel ships the prompt file."""

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from synthempathy import runner
from synthempathy.config import Config, ConfigError, StageConfig, keys_read_by, load_config, readers
from synthempathy.store import STAGES

PACKAGE = Path(runner.__file__).parent
REPO = PACKAGE.parents[1]
STAGE_MODULES = {s: s.split("_", 1)[1] for s in STAGES}  # "02_quality" -> "quality"
FOUNDATION = {"config", "store"}


def imported_modules(path: Path) -> set[str]:
    """The synthempathy modules a file imports, as dotted names below the package ("lib.sft", "store")."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(PACKAGE).parent.parts if path.is_relative_to(PACKAGE) else ()
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(here[: len(here) - node.level + 1])
            elif (node.module or "").startswith("synthempathy"):
                base = []
                node_module = node.module.removeprefix("synthempathy").lstrip(".")
                out |= {".".join(filter(None, [node_module, a.name])) if not node_module else node_module
                        for a in node.names}
                continue
            else:
                continue
            module = ".".join(base + ([node.module] if node.module else []))
            out |= {module} if node.module else {".".join(base + [a.name]) for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("synthempathy.") for a in node.names if a.name.startswith("synthempathy.")}
    return {m for m in out if m}


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", sorted((PACKAGE / "lib").glob("*.py")), ids=lambda p: p.stem)
def test_the_library_builds_only_on_itself_the_config_and_the_store(path):
    bad = {m for m in imported_modules(path) if top(m) not in {"lib", *FOUNDATION}}
    assert not bad, f"{path.name} imports {bad}: the library must not reach above itself"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_library_and_the_store(stage):
    path = PACKAGE / f"{STAGE_MODULES[stage]}.py"
    bad = {m for m in imported_modules(path) if top(m) not in {"lib", "store"}}
    assert not bad, f"{path.name} imports {bad}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    run_stages = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_stage"]
    assert len(run_stages) == 1, f"{path.name} holds exactly one run_stage"
    assert f'STAGE = Stage("{stage}")' in path.read_text(), f"{path.name} names its stage"


def test_nothing_imports_a_stage_module_but_the_notebooks_and_the_tests():
    stage_names = set(STAGE_MODULES.values())
    for path in PACKAGE.rglob("*.py"):
        hit = {m for m in imported_modules(path) if top(m) in stage_names}
        assert not hit, f"{path.relative_to(PACKAGE)} imports the stage module(s) {hit}"


def test_the_import_graph_has_no_cycle():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in imported_modules(path) if m != name}
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            pytest.fail("import cycle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2 or node not in graph:
            return
        state[node] = 1
        for nxt in graph[node]:
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        visit(node, [])


@pytest.mark.parametrize("stage", STAGES)
def test_a_notebook_calls_only_its_stage_the_store_the_plots_and_the_tools(stage):
    nb = json.loads((REPO / "notebooks" / f"{stage}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    imports = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synthempathy"):
            sub = node.module.removeprefix("synthempathy").lstrip(".")
            imports |= {sub} if sub else {a.name for a in node.names}
    # the tools a person uses on a finished run (chat, rating kit, release) may close the last notebook
    tools = {"chat", "annotate", "export"} if stage == STAGES[-1] else set()
    assert imports <= {STAGE_MODULES[stage], "store", "plots", *tools}, f"{stage} imports {imports}"


def test_no_module_is_over_300_lines_without_saying_why():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 300:
            assert "over 300 lines" in (ast.get_docstring(ast.parse(text)) or "").lower(), (
                f"{path.relative_to(PACKAGE)} has {text.count(chr(10))} lines and no reason in its docstring")


def test_every_key_declares_its_readers_and_the_fingerprint_follows_them():
    for key in Config.model_fields:
        assert readers(key) and set(readers(key)) <= set(STAGES), key
    cfg = load_config("tiny")
    assert "threshold" in runner.stage_config(cfg, "02_quality")
    assert "threshold" not in runner.stage_config(cfg, "03_diversity")
    # in-process answers depend on the batch (its sampling seed): every stage that batches reads the batch size
    assert all("gen_batch_size" in keys_read_by(s) for s in ("01_generate", "02_quality", "05_evaluate"))


def test_a_stage_that_reads_an_undeclared_key_fails_naming_it():
    view = StageConfig(load_config("tiny"), "03_diversity")
    assert view.kcenter_ratio == 0.9 and view.seed == 0
    with pytest.raises(ConfigError, match="stage 03_diversity reads config key 'threshold'.*02_quality"):
        _ = view.threshold
    with pytest.raises(AttributeError):
        view.threshold = 10


def test_the_wheel_ships_the_prompt_file(tmp_path):
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name if src.exists() else (src.mkdir() or src / name))
    shutil.copytree(PACKAGE, src / "helpers" / "synthempathy", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("synthempathy-*.whl"))
    assert "synthempathy/lib/prompts.yaml" in zipfile.ZipFile(wheel).namelist()
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import sys; sys.path.insert(0, sys.argv[1])\n"
             "import synthempathy.lib.dialogue as d\n"
             "assert d.__file__.startswith(sys.argv[1]), d.__file__\n"
             "print(d.prompts()['system'])")
    out = subprocess.run([sys.executable, "-c", probe, str(unpacked)], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "You are a helpful assistant."
