"""The notebooks as their first user runs them (issue #24): stepped through in JupyterLab, several open at once.

Every test works on a copy of the reference run (conftest.py), whose caches make a notebook's steps quick:
- the reference's executed notebooks show the method and its results, not library logs (no stderr output), and
  no widget (a slider is for a live reader; the runner's notebook shows the figure at the profile's value);
- in a kernel, tqdm draws text bars (to the terminal) though ipywidgets is installed;
- nbval (`pytest --nbval-lax`) runs all six notebooks, their parameters set to the copy, and the data they write
  is byte for byte the runner's: a reader and the runner execute one path;
- two live kernels open notebooks 02 and 03 side by side, a `run` goes ahead beside them, and while one kernel's
  step writes, the other's step is refused with an error naming it, and nothing is lost or half-written;
- JupyterLab in headless Chromium opens two notebooks, runs all cells of each with both kernels alive, and their
  figures render with no cell in error; moving each notebook's slider (T in 02, the ratio in 03) redraws its figure.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from chain import COMPARED

from synthempathy.chain import runner
from synthempathy.chain.store import LOCK_FILE, STAGES, RunStore, hash_tree, read_json

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def data_outputs(store: RunStore, stage: str) -> dict[str, str]:
    """{file: sha256} of a stage's own data files (its top level, figures and model cards aside)."""
    return {k: v for k, v in hash_tree(store.root / stage).items() if "/" not in k and not k.endswith((".png", ".md"))}


@pytest.fixture
def run_copy(reference, tmp_path):
    """(overrides, store) of a copy of the reference run, its figures kept in the test's folder."""
    import shutil

    overrides, ref_store, _, _ = reference
    root = tmp_path / "runs"
    shutil.copytree(ref_store.root, root / ref_store.root.name, ignore=shutil.ignore_patterns(LOCK_FILE))
    return {**overrides, "run_root": str(root), "figures_dir": str(tmp_path / "figures")}, RunStore(root / "tiny")


def notebook_copies(folder: Path, overrides: dict, stages=STAGES) -> list[Path]:
    """The committed notebooks, their parameters cell set to `overrides`, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for stage in stages:
        nb = nbformat.read(runner.NOTEBOOK_DIR / f"{stage}.ipynb", as_version=4)
        (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        params.source = f'profile = "tiny"\noverrides = {overrides!r}'
        nbformat.write(nb, folder / f"{stage}.ipynb")
        out.append(folder / f"{stage}.ipynb")
    return out


def test_the_executed_notebooks_show_results_not_logs(reference):
    _, store, _, _ = reference
    for stage in STAGES:
        nb = nbformat.read(store.root / "notebooks" / f"{stage}.ipynb", as_version=4)
        logs = [(i, "".join(o.get("text", ""))[:200]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
                for o in c.get("outputs", []) if o.output_type == "stream" and o.name == "stderr"]
        assert not logs, f"{stage}: stderr in cells {logs}"
        widgets = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])
                   if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert not widgets, f"{stage}: the runner's notebook keeps a widget (shown as nothing) in cells {widgets}"


def shown_sources(nb) -> list[tuple[str, str]]:
    """(the `plots.source(...)` call, the code it showed) of every cell of an executed notebook that shows code."""
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("plots.source("):
            shown = [o for o in cell.get("outputs", []) if "text/plain" in o.get("data", {})]
            out.append((cell.source, shown[0]["data"]["text/plain"] if shown else ""))
    return out


def test_each_method_step_is_shown_as_the_package_runs_it(reference):
    """The code a notebook shows where it teaches a step is the package's own, the code the runner executed; every
    notebook of the method shows some, and 02, 03 and 05 show the steps the paper defines by an equation."""
    import importlib

    from synthempathy import plots

    _, store, _, _ = reference
    for stage in STAGES[1:]:
        module = importlib.import_module(f"synthempathy.{stage.split('_', 1)[1]}")
        nb = nbformat.read(store.root / "notebooks" / f"{stage}.ipynb", as_version=4)
        calls = shown_sources(nb)
        assert calls, f"{stage} shows no step's code"
        for call, text in calls:
            scope = {module.__name__.rsplit(".", 1)[1]: module, "plots": plots}
            expected = eval(call, scope).data  # noqa: S307 - the notebook's own one-line call
            assert text == expected, f"{stage}: {call} showed other code than the package's"
    taught = {"02_quality": ["def similarity(", "def select_quality(", "def scores_from_logits("],
              "03_diversity": ["def naive_kcenter_greedy(", "def kept_by_kcenter("],
              "01_generate": ["def sample_example("], "04_finetune": ["def loss_on_labels("],
              "05_evaluate": ["def corpus_metrics(", "def seeded_ci("]}
    for stage, names in taught.items():
        text = "".join(t for _, t in shown_sources(nbformat.read(store.root / "notebooks" / f"{stage}.ipynb", as_version=4)))
        assert all(n in text for n in names), f"{stage} does not show {[n for n in names if n not in text]}"


def test_nbval_runs_every_notebook_and_writes_what_the_runner_wrote(run_copy, tmp_path):
    overrides, store = run_copy
    before = {stage: data_outputs(store, stage) for stage in STAGES}
    copies = notebook_copies(tmp_path / "notebooks", overrides)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), *map(str, copies)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "passed" in done.stdout, done.stdout[-2000:]  # nbval counts cells, not notebooks
    for stage in STAGES:
        assert data_outputs(store, stage) == before[stage], f"{stage}: the notebook wrote other bytes than the runner"
    for name in COMPARED:
        assert (store.root / name).exists()


# -- two kernels ---------------------------------------------------------------------------------------------------

def run_in(client, code: str, timeout: float = 300) -> dict:
    """Execute `code` in a kernel; (status, ename, evalue, stdout) of its reply."""
    out = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook)["content"]
    return {"status": reply["status"], "ename": reply.get("ename"), "evalue": reply.get("evalue", ""),
            "stdout": "".join(out)}


def lock_holder(store: RunStore) -> dict:
    text = (store.root / LOCK_FILE).read_text() if (store.root / LOCK_FILE).exists() else ""
    return json.loads(text) if text.strip() else {}


def test_two_kernels_side_by_side_one_writer_at_a_time(run_copy):
    from jupyter_client.manager import start_new_kernel

    overrides, store = run_copy
    opened = f"cfg, store = stage.STAGE.open('tiny', {overrides!r})\nimport os"
    kernels = [start_new_kernel(kernel_name="python3", cwd=str(runner.NOTEBOOK_DIR)) for _ in range(2)]
    (_, a), (_, b) = kernels
    try:
        assert run_in(a, "from synthempathy import quality as stage\n" + opened)["status"] == "ok"
        opened_b = run_in(b, "from synthempathy import diversity as stage\n" + opened)
        assert opened_b["status"] == "ok", opened_b
        pid_a = int(run_in(a, "print(os.getpid())")["stdout"])
        assert lock_holder(store) == {}, "an open notebook holds nothing"

        # a run beside both open notebooks
        with open(os.devnull, "w") as quiet:
            runner.run("tiny", overrides, start=3, stop=3, force=True, echo=lambda _: None, progress=quiet)

        # A writes for a while; B's step is refused at once, naming A, and B's stage is left as it was
        step_b = ("kept = store.read('02_quality', 'selected.jsonl')\n"
                  "stage.write_selection(store, stage.stored_order(store), kept, [])")
        before = hash_tree(store.root / "03_diversity")
        msg_id = a.execute("stage.STAGE.step(lambda store: __import__('time').sleep(8))(store)")
        deadline = time.time() + 30
        while lock_holder(store).get("pid") != pid_a:
            assert time.time() < deadline, "kernel A never took the lock"
            time.sleep(0.1)
        refused = run_in(b, step_b)
        assert refused["status"] == "error" and refused["ename"] == "RunLocked", refused
        assert f"pid {pid_a}" in refused["evalue"] and "02_quality" in refused["evalue"], refused["evalue"]
        assert hash_tree(store.root / "03_diversity") == before, "a refused step wrote nothing"
        reply = a.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = a.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok"
        assert lock_holder(store) == {}, "the step returned: the folder is free"
        assert run_in(b, step_b)["status"] == "ok", "once A's step is done, B's goes ahead"

        # B's selection (every quality-kept example) is not the profile's: the runner notices and reruns stage 03
        assert hash_tree(store.root / "03_diversity") != before
        lines = []
        with open(os.devnull, "w") as quiet:
            runner.run("tiny", overrides, start=3, stop=3, echo=lines.append, progress=quiet)
        assert any("03_diversity: done in" in ln for ln in lines), lines
        assert hash_tree(store.root / "03_diversity") == before, "the profile's selection is back"
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_a_kernel_keeps_text_bars_though_ipywidgets_is_installed():
    """ipywidgets is there for the sliders; tqdm.auto, imported after the package in a kernel, still draws the
    text bar a step sends to the terminal. Without the package first, it would draw widgets into the cell."""
    from jupyter_client.manager import start_new_kernel

    asked = "import tqdm.auto, tqdm.notebook\nprint(issubclass(tqdm.auto.tqdm, tqdm.notebook.tqdm))"
    seen = {}
    for first in ("import synthempathy", "import ipywidgets"):
        km, kc = start_new_kernel(kernel_name="python3")
        try:
            seen[first] = run_in(kc, f"{first}\n{asked}")["stdout"].strip()
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    assert seen == {"import synthempathy": "False", "import ipywidgets": "True"}, seen


# -- JupyterLab in a browser ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_settings(folder: Path) -> Path:
    """JupyterLab user settings for the test: every cell in the page (no windowing), no news or update checks."""
    for name, value in (("notebook-extension/tracker", {"windowingMode": "none"}),
                        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})):
        path = folder / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return folder


def kernel_idle(base: str, token: str, name: str) -> bool:
    sessions = json.loads(urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10).read())
    return any(Path(s["path"]).name == name and s["kernel"]["execution_state"] == "idle" for s in sessions)


def run_all_cells(page, base: str, token: str, name: str, timeout_s: float = 600) -> dict:
    """Open notebook `name` in JupyterLab (the notebooks already open stay open, their kernels alive), Run > Run All
    Cells, wait until every code cell has run; return what the notebook shows: outputs on stderr (errors included),
    images loaded, code cells."""
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell", timeout=120_000)
    deadline = time.time() + 120
    while not kernel_idle(base, token, name):
        assert time.time() < deadline, f"the kernel of {name} never became idle"
        time.sleep(0.5)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    visible = "[...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'))"
    done = f"""() => {{
        const nb = {visible};
        const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim());
        return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
    }}"""
    page.wait_for_function(done, timeout=timeout_s * 1000)
    shown = f"""() => {{
        const nb = {visible};
        const stderr = [...nb.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
        return {{stderr: stderr.length, texts: stderr.map(o => o.textContent.slice(0, 300)),
                images: [...nb.querySelectorAll('.jp-RenderedImage img')].filter(i => i.complete && i.naturalWidth > 0).length,
                cells: nb.querySelectorAll('.jp-CodeCell').length}};
    }}"""
    return page.evaluate(shown)


def move_slider(page) -> dict:
    """Move the visible notebook's slider (explore) one step with the keyboard, as a reader would, and wait until
    the figure above it is redrawn: {slider's value before and after, whether the image changed}."""
    visible = "[...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'))"
    figure = f"""() => {{
        const area = {visible}.querySelector('.widget-slider').closest('.jp-OutputArea');
        const imgs = [...area.querySelectorAll('.jp-RenderedImage img')];
        return imgs.length ? imgs[imgs.length - 1].src : null;
    }}"""
    readout = f"() => {visible}.querySelector('.widget-slider .widget-readout').textContent.trim()"
    before, value = page.evaluate(figure), page.evaluate(readout)
    handle = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press("ArrowLeft")
    try:
        page.wait_for_function(f"() => ({figure})() !== {json.dumps(before)}", timeout=30_000)
    except Exception:  # reported below, with what the page shows
        pass
    return {"value": [value, page.evaluate(readout)], "redrawn": page.evaluate(figure) not in (None, before)}


def test_jupyterlab_runs_two_notebooks_with_both_kernels_alive(run_copy, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: JupyterLab cannot be tried in a browser here")
    from playwright.sync_api import sync_playwright

    overrides, store = run_copy
    folder = tmp_path / "lab"
    notebook_copies(folder, overrides, ("02_quality", "03_diversity"))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(lab_settings(tmp_path / "settings")),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "lab.log", "w")
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--allow-root"],
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert lab.poll() is None and time.time() < deadline, (tmp_path / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                first = run_all_cells(page, base, token, "02_quality.ipynb")
                first["slider"] = move_slider(page)
                second = run_all_cells(page, base, token, "03_diversity.ipynb")
                second["slider"] = move_slider(page)
            finally:
                browser.close()
        for name, shown, figures in (("02", first, 2), ("03", second, 2)):
            assert shown["stderr"] == 0, f"notebook {name}: output(s) in error or on stderr: {shown['texts']}"
            assert shown["images"] >= figures, f"notebook {name}: {shown}"
            value = shown["slider"]["value"]
            assert value[0] != value[1] and shown["slider"]["redrawn"], f"notebook {name}'s slider: {shown['slider']}"
        sessions = json.loads(urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10).read())
        assert sorted(Path(s["path"]).name for s in sessions) == ["02_quality.ipynb", "03_diversity.ipynb"]
        assert all(s["kernel"]["execution_state"] != "dead" for s in sessions), sessions
        assert read_json(store.root / "03_diversity" / "metrics.json")["kept"] > 0
    finally:
        lab.terminate()
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()


def test_make_lab_starts_as_this_user(tmp_path):
    """`make lab` as a container's usual user (root) starts JupyterLab on 127.0.0.1 and serves the notebooks."""
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    log = open(tmp_path / "lab.log", "w")
    lab = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS=--no-browser --port={port} --IdentityProvider.token={token}"],
                           cwd=runner.REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                listing = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}",
                                                            timeout=2).read())
                break
            except OSError:
                assert lab.poll() is None and time.time() < deadline, (tmp_path / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        assert {f"{s}.ipynb" for s in STAGES} <= {item["name"] for item in listing["content"]}
    finally:
        os.killpg(lab.pid, 15)
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, 9)
        log.close()
