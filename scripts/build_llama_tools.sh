#!/usr/bin/env bash
# Builds llama.cpp's own tools (CPU) from the llama-cpp-python sdist of the installed version.
#
# The tests compare qvl-label's engine with llama-mtmd-cli, and scripts/bench.py with
# llama-mtmd-cli and llama-server; both come from the llama.cpp that the installed
# llama-cpp-python vendors, built once into a cache folder outside the repository.
#
# usage: scripts/build_llama_tools.sh [TARGET...]      (default: llama-mtmd-cli)
# env:   PYTHON (default .venv/bin/python), QVL_TOOLS_BUILD (default ~/.cache/qvl-label-bench/build)
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
BUILD=${QVL_TOOLS_BUILD:-$HOME/.cache/qvl-label-bench/build}
TARGETS=${*:-llama-mtmd-cli}

missing=""
for target in $TARGETS; do
    [ -x "$BUILD/bin/$target" ] || missing="$missing $target"
done
[ -z "$missing" ] && exit 0

version=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$src"
tar xzf "$src"/llama_cpp_python-*.tar.gz -C "$src"
# a build folder configured from sources that are gone (an earlier run's temporary copy) starts afresh
home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
[ -n "$home" ] && [ ! -d "$home" ] && rm -rf "$BUILD"
cmake -S "$src/llama_cpp_python-$version/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target $missing >/dev/null
echo "built$missing into $BUILD/bin" >&2
