#!/usr/bin/env bash
# Builds llama.cpp's own tools (CPU) from the llama-cpp-python sdist of the installed version.
#
# The tests compare qvl-label's engine with llama-mtmd-cli, and scripts/bench.py with
# llama-mtmd-cli and llama-server; both come from the llama.cpp that the installed
# llama-cpp-python vendors, built once into a cache folder outside the repository.
#
# usage: scripts/build_llama_tools.sh [TARGET...]      (default: llama-mtmd-cli)
# env:   PYTHON (default .venv/bin/python), PIP (default $PYTHON -m pip), QVL_TOOLS_CACHE (default ~/.cache/qvl-label-bench)
#
# The build is cached by the sdist's sha256: QVL_TOOLS_CACHE/build-<first 16 hex of it>, and
# QVL_TOOLS_CACHE/build is a symbolic link to the one for the installed version (where the tests and
# scripts/bench.py look). A second run with the same llama-cpp-python sdist builds nothing (seconds);
# another version builds once into its own folder.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
PIP=${PIP:-"$PYTHON -m pip"}  # an interpreter with pip (a uv-made venv has none): PIP="python3 -m pip"
CACHE=${QVL_TOOLS_CACHE:-$HOME/.cache/qvl-label-bench}
TARGETS=${*:-llama-mtmd-cli}

version=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
$PIP download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$src"
sdist=$(ls "$src"/llama_cpp_python-*.tar.gz)
key=$(sha256sum "$sdist" | cut -c1-16)
BUILD="$CACHE/build-$key"
mkdir -p "$CACHE"
[ -L "$CACHE/build" ] || [ ! -e "$CACHE/build" ] || mv "$CACHE/build" "$CACHE/build-unkeyed-$$"
ln -sfn "build-$key" "$CACHE/build"

missing=""
for target in $TARGETS; do
    [ -x "$BUILD/bin/$target" ] || missing="$missing $target"
done
if [ -z "$missing" ]; then
    echo "llama.cpp tools for sdist $key already built in $BUILD/bin" >&2
    exit 0
fi

tar xzf "$sdist" -C "$src"
# a build folder configured from sources that are gone (an earlier run's temporary copy) starts afresh
home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
[ -n "$home" ] && [ ! -d "$home" ] && rm -rf "$BUILD"
cmake -S "$src/llama_cpp_python-$version/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target $missing >/dev/null
echo "built$missing into $BUILD/bin" >&2
