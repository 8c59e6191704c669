"""The house rules of the package, checked: the method first (at the top only the six stage modules, the plots
and three folders: lib/, chain/, tools/); every module imports only the layers below it (the foundation, the
library, the stages, the machinery, the tools), a stage never imports another, and there is no import cycle; a
notebook calls only its own stage module, the store and the plots (the last one also the tools: chat, rating kit,
release); no function is over 80 lines, and a module over 300 says why it is one concept; the config's declared
reads are what the runner fingerprints and what a stage may read; the wheel ships the prompt file and every
subpackage."""

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from synthempathy.chain import runner
from synthempathy.chain.config import Config, ConfigError, StageConfig, keys_read_by, load_config, readers
from synthempathy.chain.store import STAGES

PACKAGE = runner.PACKAGE_DIR
REPO = PACKAGE.parents[1]
STAGE_MODULES = {s: s.split("_", 1)[1] for s in STAGES}  # "02_quality" -> "quality"

# What sits at the top of the package: the method first, everything else in a folder.
TOP_FILES = {"__init__", "__main__", *STAGE_MODULES.values(), "plots"}
TOP_FOLDERS = {"lib", "chain", "tools"}

# The layers, each module in exactly one; a layer imports only the layers it names (itself only where named).
FOUNDATION = {"chain.config", "chain.store"}
MACHINERY = {"chain.runner", "chain.progress", "chain.report", "chain.plan", "chain.gpus"}
TOOLS = {"tools.chat", "tools.annotate", "tools.export"}
INITS = {"__init__", "lib", "chain", "tools"}  # package docstrings; they import nothing
ALLOWED = {
    "foundation": {"foundation"},  # config reads the stage list from the store; the store imports nothing
    "lib": {"lib", "foundation"},
    "stage": {"lib", "chain.store"},
    "plots": {"foundation"},
    "tools": {"lib", "foundation"},
    "machinery": {"machinery", "lib", "foundation", "plots"},  # the report draws the pipeline figure
    "cli": {"machinery", "tools", "lib", "foundation"},
    "__main__": {"cli"},
    "init": set(),
}


def module_name(path: Path) -> str:
    """ "chain/store.py" -> "chain.store", "lib/__init__.py" -> "lib", "__init__.py" -> "__init__"."""
    name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return name.removesuffix(".__init__") if name != "__init__" else name


def layer(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module in INITS:
        return "init"
    if module.startswith("lib."):
        return "lib"
    if module in STAGE_MODULES.values():
        return "stage"
    if module in MACHINERY:
        return "machinery"
    if module in TOOLS:
        return "tools"
    if module == "chain.cli":
        return "cli"
    if module in ("plots", "__main__"):
        return module
    pytest.fail(f"{module}: in no layer; name its layer in tests/test_layout.py")


def resolve(base: str, name: str) -> str:
    """`from <base> import <name>` as a module: base.name where that is a module or package, else base."""
    dotted = ".".join(filter(None, [base, name]))
    is_module = (PACKAGE / dotted.replace(".", "/")).with_suffix(".py").exists() or (
        PACKAGE / dotted.replace(".", "/") / "__init__.py").exists()
    return dotted if is_module else base


def imported_modules(source: str, here: tuple[str, ...] = ()) -> set[str]:
    """The synthempathy modules some source imports, as dotted names below the package ("lib.sft",
    "chain.store"); `here` is the package the source sits in, for its relative imports."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])])
            elif (node.module or "").split(".")[0] == "synthempathy":
                base = node.module.removeprefix("synthempathy").lstrip(".")
            else:
                continue
            out |= {resolve(base, a.name) for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("synthempathy.") for a in node.names if a.name.startswith("synthempathy.")}
    return {m for m in out if m}


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE).parent.parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_top_level_holds_the_method_first():
    files = {p.stem for p in PACKAGE.glob("*.py")}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert files == TOP_FILES, f"at the top: {sorted(files)}; expected {sorted(TOP_FILES)}"
    assert len(files) <= 10, f"{len(files)} Python files at the top of the package: {sorted(files)}"
    assert folders == TOP_FOLDERS, f"folders at the top: {sorted(folders)}"
    assert all((PACKAGE / f / "__init__.py").exists() for f in folders), "every folder is a package"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_imports_only_the_layers_below_it(path):
    mine = layer(module_name(path))
    allowed = ALLOWED[mine]
    bad = {m for m in imports_of(path) if layer(m) not in allowed and m not in allowed}
    assert not bad, f"{module_name(path)} ({mine}) imports {bad}; a {mine} module imports only {sorted(allowed)}"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_holds_one_run_stage_and_names_its_stage(stage):
    path = PACKAGE / f"{STAGE_MODULES[stage]}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    run_stages = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_stage"]
    assert len(run_stages) == 1, f"{path.name} holds exactly one run_stage"
    assert f'STAGE = Stage("{stage}")' in path.read_text(), f"{path.name} names its stage"


def test_nothing_imports_a_stage_module_but_the_notebooks_and_the_tests():
    stage_names = set(STAGE_MODULES.values())
    for path in MODULES:
        hit = imports_of(path) & stage_names
        assert not hit, f"{module_name(path)} imports the stage module(s) {hit}"


def test_the_import_graph_has_no_cycle():
    graph = {module_name(p): imports_of(p) - {module_name(p)} for p in MODULES}
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


def test_the_import_rules_see_every_kind_of_import():
    """The checks above are only as good as imported_modules: every form the package uses resolves."""
    here = ("chain",)
    assert imported_modules("from .store import RunStore", here) == {"chain.store"}
    assert imported_modules("from . import report", here) == {"chain.report"}
    assert imported_modules("from ..lib import arms, sft", here) == {"lib.arms", "lib.sft"}
    assert imported_modules("from ..lib.ed import load_ed", here) == {"lib.ed"}
    assert imported_modules("from ..tools import annotate", here) == {"tools.annotate"}
    assert imported_modules("from .chain.store import STAGES", ()) == {"chain.store"}
    assert imported_modules("from synthempathy import quality, plots") == {"quality", "plots"}
    assert imported_modules("from synthempathy.chain import store") == {"chain.store"}
    assert imported_modules("import synthempathy.lib.stage as stage") == {"lib.stage"}


@pytest.mark.parametrize("stage", STAGES)
def test_a_notebook_calls_only_its_stage_the_store_the_plots_and_the_tools(stage):
    nb = json.loads((REPO / "notebooks" / f"{stage}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    imports = imported_modules(code)
    # the tools a person uses on a finished run (chat, rating kit, release) may close the last notebook
    tools = TOOLS if stage == STAGES[-1] else set()
    assert imports <= {STAGE_MODULES[stage], "chain.store", "plots", *tools}, f"{stage} imports {imports}"


def test_no_module_is_over_300_lines_without_saying_why():
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 300:
            assert "over 300 lines" in (ast.get_docstring(ast.parse(text)) or "").lower(), (
                f"{path.relative_to(PACKAGE)} has {text.count(chr(10))} lines and no reason in its docstring")


def test_no_function_is_over_80_lines():
    """A function is read in one view; a longer one is split into parts named for what they compute."""
    long = [f"{module_name(path)}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in MODULES for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, f"over 80 lines: {long}"


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


def test_the_wheel_ships_the_prompt_file_and_every_subpackage(tmp_path):
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name if src.exists() else (src.mkdir() or src / name))
    shutil.copytree(PACKAGE, src / "helpers" / "synthempathy", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("synthempathy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "synthempathy/lib/prompts.yaml" in names
    shipped = {n.removeprefix("synthempathy/") for n in names if n.startswith("synthempathy/")}
    assert {p.relative_to(PACKAGE).as_posix() for p in MODULES} <= shipped, "a module is missing from the wheel"
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "synthempathy = synthempathy.chain.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = ("import sys; sys.path.insert(0, sys.argv[1])\n"
             "import synthempathy.lib.dialogue as d\n"
             "assert d.__file__.startswith(sys.argv[1]), d.__file__\n"
             "import synthempathy.chain.cli as cli\n"
             "assert cli.__file__.startswith(sys.argv[1]), cli.__file__\n"
             "print(d.prompts()['system'])")
    out = subprocess.run([sys.executable, "-c", probe, str(unpacked)], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "You are a helpful assistant."
