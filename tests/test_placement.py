"""The runner puts the chain's own models on the profile's in_process_gpu: CUDA_VISIBLE_DEVICES names that GPU
while the stages run, the notebooks' kernels inherit it, and it is restored afterwards. (What each GPU holds and
the launch lines: test_plan.py.)"""

import os

import pytest

from synthempathy.chain import runner


@pytest.fixture
def no_visible(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_visible_gpu_names_the_gpu_then_restores_what_was_there(no_visible, monkeypatch):
    said: list[str] = []
    with runner.visible_gpu(3, said.append):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert said == ["in-process models on GPU 3 (in_process_gpu: the notebooks see CUDA_VISIBLE_DEVICES=3)"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    with pytest.raises(RuntimeError), runner.visible_gpu(0, said.append):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        raise RuntimeError("a stage failed")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2" and said[-1].endswith("replacing CUDA_VISIBLE_DEVICES=1,2)")


def test_no_in_process_gpu_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    said: list[str] = []
    with runner.visible_gpu(None, said.append):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert said == [] and os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_the_runner_runs_its_stages_with_the_profiles_gpu(no_visible, monkeypatch, run_overrides):
    seen: dict[str, str | None] = {}
    monkeypatch.setattr(runner, "execute", lambda stage, out, parameters, progress=None:
                        seen.setdefault(stage, os.environ.get("CUDA_VISIBLE_DEVICES")))
    monkeypatch.setattr(runner.report, "render", lambda store, figures: "report")
    lines: list[str] = []
    runner.run("tiny", {**run_overrides, "in_process_gpu": 2}, start=0, stop=1, echo=lines.append)
    assert seen == {"00_data": "2", "01_generate": "2"}
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert any("in-process models on GPU 2" in line for line in lines)


@pytest.mark.slow
def test_a_notebook_kernel_inherits_the_gpu(no_visible, tmp_path):
    """What the runner relies on: papermill's kernel starts with this process's environment."""
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import os\nopen({str(tmp_path / 'seen')!r}, 'w').write("
                                          "os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))")]
    nbformat.write(nb, tmp_path / "probe.ipynb")
    with runner.visible_gpu(7, lambda line: None):
        pm.execute_notebook(str(tmp_path / "probe.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                            progress_bar=False)
    assert (tmp_path / "seen").read_text() == "7"
