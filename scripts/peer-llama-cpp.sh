#!/usr/bin/env bash
# The llama.cpp peers: llama-bench built from the llama.cpp source vendored in the llama-cpp-python
# sdist on PyPI, into build-peers/ (ignored).
#   scripts/peer-llama-cpp.sh            # CPU peer of bench/peers/cpu.sh: CPU only, GGML_NATIVE=ON
#   LLAMA_CPP_PYTHON=0.3.36 JOBS=2 scripts/peer-llama-cpp.sh
#   CUDA=1 JOBS=2 nice -n 19 scripts/peer-llama-cpp.sh   # CUDA peer for the GPU machine (below)
# Prints the path of llama-bench; writes build-peers/llama.cpp/VERSION (CUDA: VERSION-cuda) with the
# sdist version and the llama.cpp build number and commit that llama-bench reports. Rebuilds only
# what changed.
#
# CUDA=1: the same source, built here (the GPU machine's time is scarce) in
# build-peers/llama.cpp/build-cuda-$ver for an H200/H100 (sm_90, SASS only: CUDA_ARCH=90-real;
# ggml has no sm_90a-specific code, so 90a would gain nothing), then packed for the GPU machine as
# .carry/llama-cuda/llama-bench.xz (stripped, xz -9) + VERSION; scripts/device-llama-peer.sh unpacks
# and runs it there. Options: GGML_NATIVE=OFF with SSE4.2/AVX/AVX2/BMI2/FMA/F16C on (the GPU
# machine's CPU differs), static llama/ggml libraries, FlashAttention kernels on (ggml's default),
# no tests/examples/server/curl/OpenSSL, NCCL off (one GPU; the GPU machine may not have libnccl),
# libstdc++ and libgcc linked statically (STATIC_CXX=1, the default; the GPU machine's GCC 13
# runtime would do as well). cudart and cuBLAS stay dynamic, from the GPU machine's CUDA 13
# toolkit (RUNPATH /usr/local/cuda/lib, as our own build), and ggml links the driver (libcuda.so.1)
# directly for its VMM pool. What the binary needs (readelf -d / -V; CUDA 13.0.88, gcc 12.2, glibc 2.36):
#   libcuda.so.1 (driver >= 580 for CUDA 13)  libcudart.so.13  libcublas.so.13  (libcublasLt.so.13
#   through libcublas)  libgomp.so.1 (GOMP_4.5, OMP_1.0; scripts/device-lib.sh's LD_LIBRARY_PATH has
#   a fallback)  libm.so.6 libc.so.6 ld-linux-x86-64.so.2: glibc >= 2.36 (arc4random, pulled in by
#   the static libstdc++'s std::random_device). STATIC_CXX=0 (libstdc++ dynamic) lowers that to
#   glibc >= 2.34 plus GLIBCXX_3.4.30 (libstdc++ of gcc >= 12), for an Ubuntu 22.04-like machine.
# The exact list is written into .carry/llama-cuda/VERSION at packing time. Without a driver
# (this machine) it stops at once: "error while loading shared libraries: libcuda.so.1"; with the
# toolkit's stub as libcuda.so.1 it says "ggml_cuda_init: failed to initialize CUDA: CUDA driver
# is a stub library" and runs on the CPU. CUDA 13.0 compiles this source as is (no fix needed).
# 28 minutes on 2 cores under nice (244 steps, most of it nvcc on the FlashAttention and MMQ
# template instances); the log is build-peers/llama.cpp/build-cuda-$ver.log. Packed: ~21 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=${LLAMA_CPP_PYTHON:-0.3.36}
cuda=${CUDA:-0}
root=build-peers/llama.cpp
src=$root/src-$ver
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

common=(-DCMAKE_BUILD_TYPE=Release -DGGML_METAL=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF
        -DLLAMA_OPENSSL=OFF  # else llama-bench links libssl.so.3/libcrypto.so.3 (https downloads, unused)
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF)
if [ "$cuda" = 1 ]; then
  bld=$root/build-cuda-$ver
  tag=cuda-$ver
  arch=${CUDA_ARCH:-90-real}
  gen=(); command -v ninja >/dev/null && [ ! -f "$bld/Makefile" ] && gen=(-G Ninja)  # [n/N] progress in the log
  opts=("${gen[@]}" "${common[@]}" -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON
        -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGGML_CUDA_FA=ON -DGGML_CUDA_NCCL=OFF
        -DCMAKE_CUDA_COMPILER="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
        "-DCMAKE_EXE_LINKER_FLAGS=$([ "${STATIC_CXX:-1}" = 1 ] && echo '-static-libstdc++ -static-libgcc')")
  what="CUDA (sm $arch, GGML_NATIVE=OFF; 1.5-2 hours on 2 cores)"
else
  bld=$root/build-$ver
  tag=$ver
  opts=("${common[@]}" -DGGML_NATIVE=ON -DGGML_CUDA=OFF)
  what="CPU only, GGML_NATIVE=ON; a few minutes on 2 cores"
fi
if [ ! -x "$bld/bin/llama-bench" ] || [ "${REBUILD:-0}" = 1 ]; then
  echo "peer-llama-cpp: building llama-bench ($what); log $root/build-$tag.log" >&2
  cmake -S "$src" -B "$bld" "${opts[@]}" > "$root/cmake-$tag.log" 2>&1 || { tail -20 "$root/cmake-$tag.log" >&2; exit 1; }
  t0=$SECONDS
  cmake --build "$bld" --target llama-bench -j "${JOBS:-$(nproc)}" > "$root/build-$tag.log" 2>&1 ||
    { tail -30 "$root/build-$tag.log" >&2; exit 1; }
  echo "peer-llama-cpp: built in $((SECONDS - t0)) s" | tee -a "$root/build-$tag.log" >&2
fi
# The build number and commit llama.cpp's CMake baked in (the sdist has no .git: often "unknown").
info=$(grep -hoE 'LLAMA_(BUILD_NUMBER|COMMIT) *= *[^;]+' "$bld"/common/build-info.cpp 2>/dev/null | tr '\n' ' ' || true)
if [ "$cuda" != 1 ]; then
  echo "llama-cpp-python $ver (its vendored llama.cpp) $info" > "$root/VERSION"
  echo "$bld/bin/llama-bench"
  exit 0
fi

# --- CUDA: pack for the GPU machine ---------------------------------------------------------------
echo "llama-cpp-python $ver (its vendored llama.cpp) $info CUDA sm $arch" > "$root/VERSION-cuda"
pack=.carry/llama-cuda
bin=$bld/bin/llama-bench
if [ ! -f "$pack/llama-bench.xz" ] || [ "$bin" -nt "$pack/llama-bench.xz" ]; then
  mkdir -p "$pack"
  strip -o "$root/llama-bench-cuda.stripped" "$bin"
  xz -9 -T1 -c "$root/llama-bench-cuda.stripped" > "$pack/llama-bench.xz.tmp"
  mv "$pack/llama-bench.xz.tmp" "$pack/llama-bench.xz"
  {
    echo "llama-bench from llama-cpp-python $ver's vendored llama.cpp ($info)"
    echo "built $(date -u +%FT%TZ) by scripts/peer-llama-cpp.sh (CUDA=1) with $(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*'), $(${CXX:-c++} --version | head -1)"
    echo "cmake options: ${opts[*]}"
    echo "sha256 (stripped, unpacked): $(sha256sum < "$root/llama-bench-cuda.stripped" | cut -d' ' -f1)"
    echo "size: $(stat -c %s "$root/llama-bench-cuda.stripped") bytes unpacked, $(stat -c %s "$pack/llama-bench.xz") packed"
    echo "needed shared libraries (readelf -d): $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
    echo "RUNPATH: $(readelf -d "$bin" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')"
    echo "highest symbol version needed per library (readelf -V): $(readelf -V "$bin" | awk '
      /File:/ { for (i = 1; i <= NF; i++) if ($i == "File:") f = $(i + 1) }
      /Name:/ { for (i = 1; i <= NF; i++) if ($i == "Name:") print f, $(i + 1) }' |
      sort -k1,1 -k2,2V | awk '{ last[$1] = $2 } END { for (f in last) printf "%s %s; ", f, last[f] }')"
  } > "$pack/VERSION"
  rm -f "$root/llama-bench-cuda.stripped"
fi
cat "$pack/VERSION" >&2
echo "$bin"
