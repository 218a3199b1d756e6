#!/usr/bin/env bash
# GPU benchmarks on a machine with no registry: CUDA build, random 8b/2b models, scripts/bench.py.
#
# Builds the llama.cpp vendored in the llama-cpp-python sdist with CUDA (shared libraries for
# llama-cpp-python's own Python bindings from the same sdist, plus llama-server, llama-mtmd-cli
# and llama-quantize), writes random-weight Qwen3-VL models with the real Qwen vocabulary
# (qvl_label.tinymodel; the 8b shape quantized to Q4_K_M like the default download), then runs
# scripts/bench.py's labels workload. Everything the machine lacks comes with the repository:
#
#   SDIST   llama-cpp-python 0.3.36 sdist repacked without vendor/llama.cpp/{models,docs,media}
#           and without its .git folder (llama.cpp's git objects, 39 MB unpacked): 12.5 MB, where
#           the full sdist (76 MB) is over the device tool's 64 MiB carry limit. Without .git,
#           cmake still configures and writes llama.cpp's build info with commit "unknown" (seen
#           on the CPU machine; the measured H200 build of 2026-11-25 had .git, at 51 MB):
#             tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36 &&
#             rm -rf .git vendor/llama.cpp/{models,docs,media} && cd .. &&
#             tar czf slim.tar.gz llama_cpp_python-0.3.36
#   WHEELS  cp312 wheels for the packages that machine lacks: orjson, llguidance, diskcache, gguf,
#           rapidfuzz, pydantic, pydantic_core, annotated_types, typing_inspection (one folder;
#           the device tool's notes give the `pip download --platform ...` command)
#
# usage: scripts/gpu_bench.sh SDIST WHEELS RESULTS [PHASE...]
# phases, in the default order: setup bench8b bench2b cli2b spec2b
# Progress goes to RESULTS/progress.log; it ends with "ALL DONE".
set -uo pipefail

SDIST=$(realpath "$1") WHEELS=$(realpath "$2") RESULTS=$3
shift 3
PHASES=${*:-setup bench8b bench2b cli2b spec2b}
WORK=${QVL_GPU_WORK:-/tmp/qvl-gpu}
SRC=$WORK/llama_cpp_python-0.3.36
TOOLS=$WORK/build/bin
MODELS=$WORK/models
PY=${PYTHON:-python3}
mkdir -p "$WORK/site" "$RESULTS" "$MODELS"
export PYTHONPATH="$WORK/site:$PWD" PYTHONUNBUFFERED=1

log() { echo "[$(date -u +%T)] $*" | tee -a "$RESULTS/progress.log" >&2; }

make_model() {  # shape -> writes $MODELS/qwen3vl-<shape>-qwenvocab-random-model.gguf and its mmproj
    $PY -c "from pathlib import Path; from qvl_label import tinymodel; \
print(tinymodel.generate(Path('$MODELS'), '$1', vocabulary='qwen'))"
}

setup() {
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl || return 1
    # The measured run (2026-11-25) predates qvl_label/__init__.py loading llama.cpp before numpy;
    # it loaded llama.cpp first this way, without which a CUDA model load segfaulted there.
    printf 'import llama_cpp\nllama_cpp.llama_backend_init()\n' >"$WORK/site/sitecustomize.py"
    tar xzf "$SDIST" -C "$WORK" || return 1
    local started=$SECONDS
    # the models are numpy work on one core each; llama.cpp compiles on the others meanwhile
    make_model 8b >"$RESULTS/make-8b.log" 2>&1 &
    local make8=$!
    make_model 2b >"$RESULTS/make-2b.log" 2>&1 &
    local make2=$!
    cmake -S "$SRC/vendor/llama.cpp" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >"$RESULTS/build.log" 2>&1 || return 1
    cmake --build "$WORK/build" -j "$(nproc)" --target llama-server llama-mtmd-cli llama-quantize \
        >>"$RESULTS/build.log" 2>&1 || return 1
    log "CUDA build (sm_90, llama-server + llama-mtmd-cli + llama-quantize + shared libraries): $((SECONDS - started)) s"
    # llama-cpp-python's bindings from the same sdist over the libraries just built: what
    # CMAKE_ARGS="-DGGML_CUDA=on" pip install builds, without compiling the kernels twice
    cp -r "$SRC/llama_cpp" "$WORK/site/" && mkdir -p "$WORK/site/llama_cpp/lib"
    find "$WORK/build" -name 'lib*.so*' -exec cp -P {} "$WORK/site/llama_cpp/lib/" \;
    $PY -m qvl_label doctor >"$RESULTS/doctor.txt" 2>&1
    log "qvl-label doctor: exit $?"
    wait "$make8" "$make2" || return 1
    log "models written: $((SECONDS - started)) s since the build began"
    "$TOOLS/llama-quantize" "$MODELS/qwen3vl-8b-qwenvocab-random-model.gguf" \
        "$MODELS/qwen3vl-8b-qwenvocab-random-model-Q4_K_M.gguf" Q4_K_M "$(nproc)" >"$RESULTS/quantize.log" 2>&1 || return 1
    rm -f "$MODELS/qwen3vl-8b-qwenvocab-random-model.gguf"
    log "8b quantized to Q4_K_M: $(du -h "$MODELS/qwen3vl-8b-qwenvocab-random-model-Q4_K_M.gguf" | cut -f1)"
    nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1
}

bench() {  # name shape-model mmproj bench.py-options...
    local name=$1 model=$2 mmproj=$3
    shift 3
    $PY scripts/bench.py --workload labels --model "$model" --mmproj "$mmproj" --tools "$TOOLS" \
        --out "$RESULTS/$name.md" "$@" >"$RESULTS/$name.log" 2>&1
    log "$name: exit $?"
}

M8=$MODELS/qwen3vl-8b-qwenvocab-random-model-Q4_K_M.gguf P8=$MODELS/qwen3vl-8b-random-mmproj.gguf
M2=$MODELS/qwen3vl-2b-qwenvocab-random-model.gguf P2=$MODELS/qwen3vl-2b-random-mmproj.gguf
for phase in $PHASES; do
    log "phase $phase"
    case $phase in
    setup) setup || { log "setup failed"; break; } ;;
    bench8b) bench bench-8b "$M8" "$P8" --count 32 --systems qvl1,qvl,server --server-np 1,8 ;;
    bench2b) bench bench-2b "$M2" "$P2" --count 64 --systems qvl1,qvl,qvl-nojf,server --server-np 1,2,4,8 ;;
    cli2b) bench cli-2b "$M2" "$P2" --count 64 --cli-count 16 --systems cli ;;
    spec2b) bench spec-2b "$M2" "$P2" --count 64 --systems server --server-np 1,2,4,8 \
        --server-spec "--spec-type ngram-simple" --server-spec-only ;;
    *) log "unknown phase $phase" ;;
    esac
done
log "ALL DONE"
