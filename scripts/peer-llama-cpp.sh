#!/usr/bin/env bash
# The CPU peer of bench/peers/cpu.sh: llama.cpp's llama-bench, built CPU-only (GGML_NATIVE=ON) from
# the llama.cpp source vendored in the llama-cpp-python sdist on PyPI, into build-peers/ (ignored).
#   scripts/peer-llama-cpp.sh            # version 0.3.36 (its vendored llama.cpp)
#   LLAMA_CPP_PYTHON=0.3.36 JOBS=2 scripts/peer-llama-cpp.sh
# Prints the path of llama-bench; writes build-peers/llama.cpp/VERSION (the sdist version and the
# llama.cpp build number and commit that llama-bench reports). Rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=${LLAMA_CPP_PYTHON:-0.3.36}
root=build-peers/llama.cpp
src=$root/src-$ver
bld=$root/build-$ver
mkdir -p "$root"
if [ ! -f "$src/CMakeLists.txt" ]; then
  sdist=$root/llama_cpp_python-$ver.tar.gz
  if [ ! -f "$sdist" ]; then
    echo "peer-llama-cpp: downloading llama-cpp-python==$ver (sdist, ~76 MB) from PyPI" >&2
    python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$root"
  fi
  echo "peer-llama-cpp: unpacking its vendored llama.cpp" >&2
  rm -rf "$src.tmp" && mkdir -p "$src.tmp"
  tar xzf "$sdist" -C "$src.tmp" --strip-components=3 "llama_cpp_python-$ver/vendor/llama.cpp"
  mv "$src.tmp" "$src"
fi
if [ ! -x "$bld/bin/llama-bench" ]; then
  echo "peer-llama-cpp: building llama-bench (CPU only, GGML_NATIVE=ON; a few minutes on 2 cores)" >&2
  cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF \
    -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DBUILD_SHARED_LIBS=OFF > "$root/cmake-$ver.log" 2>&1 || { tail -20 "$root/cmake-$ver.log" >&2; exit 1; }
  cmake --build "$bld" --target llama-bench -j "${JOBS:-$(nproc)}" > "$root/build-$ver.log" 2>&1 ||
    { tail -30 "$root/build-$ver.log" >&2; exit 1; }
fi
# The build number and commit llama.cpp's CMake baked in (the sdist has no .git: often "unknown").
info=$(grep -hoE 'LLAMA_(BUILD_NUMBER|COMMIT) *= *[^;]+' "$bld"/common/build-info.cpp 2>/dev/null | tr '\n' ' ' || true)
echo "llama-cpp-python $ver (its vendored llama.cpp) $info" > "$root/VERSION"
echo "$bld/bin/llama-bench"
