"""The package as a user meets it: install files agree, notebooks are clean and parameterized."""

import json
import re

import pytest
import yaml

from synthempathy.config import load_config
from synthempathy.runner import NOTEBOOK_DIR

REPO = NOTEBOOK_DIR.parent


def lock_pins(text):
    return {line.split("==")[0].lower(): line.split("==")[1] for line in text.splitlines()
            if line.strip() and not line.startswith("#") and "==" in line}


def test_environment_yml_and_lock_pin_the_same_packages():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    from_env = lock_pins("\n".join(p for p in pip_section if "==" in p))
    from_lock = lock_pins((REPO / "requirements.lock").read_text())
    assert from_env == from_lock
    assert from_lock["torch"] == "2.13.0"
    for name in ("transformers", "bitsandbytes", "peft", "trl", "sentence-transformers", "umap-learn",
                 "papermill", "nbval", "jupyterlab", "seaborn", "matplotlib"):
        assert name in from_lock, f"{name} is not pinned"


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
