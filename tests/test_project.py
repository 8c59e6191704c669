"""The package as a user meets it: install files agree, notebooks are clean and parameterized."""

import json
import re

import pytest
import yaml

from synthempathy.chain.config import load_config
from synthempathy.chain.runner import NOTEBOOK_DIR

REPO = NOTEBOOK_DIR.parent


def lock_pins(text):
    return {line.split("==")[0].lower(): line.split("==")[1] for line in text.splitlines()
            if line.strip() and not line.startswith("#") and "==" in line}


def test_environment_yml_pins_the_run_lock_and_the_test_lock_and_they_do_not_overlap():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    from_env = lock_pins("\n".join(p for p in pip_section if "==" in p))
    run = lock_pins((REPO / "requirements.lock").read_text())
    test = lock_pins((REPO / "requirements-test.lock").read_text())
    assert not set(run) & set(test)
    assert from_env == run | test
    assert run["torch"] == "2.13.0"
    for name in ("transformers", "bitsandbytes", "peft", "trl", "sentence-transformers", "umap-learn",
                 "papermill", "jupyterlab", "seaborn", "matplotlib", "gradio", "datasets"):
        assert name in run, f"{name} is not pinned for make run"
    # make run's setup installs nothing only the tests need (llama-cpp-python alone compiles for minutes)
    for name in ("pytest", "nbval", "ruff", "playwright", "llama_cpp_python"):
        assert name in test and name not in run, name


def _imported_top_level(folder) -> set[str]:
    import ast

    out = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                out.add(node.module.split(".")[0])
    return out


def test_every_third_party_package_the_code_imports_is_declared():
    import sys
    from importlib.metadata import packages_distributions

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    declared_test = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["test"]}
    owners = packages_distributions()

    def undeclared(folder, allowed):
        third_party = _imported_top_level(folder) - set(sys.stdlib_module_names) - {"synthempathy", "__future__"}
        return {m: owners.get(m) for m in third_party
                if not any(canonicalize_name(d) in allowed for d in owners.get(m, []))}

    package = REPO / "helpers" / "synthempathy"
    assert not undeclared(package, declared), "imported by the package but not in [project] dependencies"
    local = {p.stem for p in (REPO / "tests").glob("*.py")} | {"offline_guard"}
    assert not {m: d for m, d in undeclared(REPO / "tests", declared | declared_test).items() if m not in local}, (
        "imported by the tests but not declared")


NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stripped_and_parameterized_with_tiny(path):
    nb = json.loads(path.read_text())
    assert re.fullmatch(r"0\d_[a-z]+", path.stem)
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "commit notebooks stripped"
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    scope: dict = {}
    exec("".join(params[0]["source"]), scope)
    assert scope["profile"] == "tiny" and scope["overrides"] == {}
    load_config(scope["profile"], scope["overrides"])
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    module = path.stem.split("_", 1)[1]
    assert f"{module}.STAGE.open(profile, overrides)" in code, "the notebook opens its own stage"
