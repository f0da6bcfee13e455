#!/usr/bin/env bash
# Builds and checks Elastic on the GPU machine (bare: nvcc, cmake, ninja, python; no network, none
# of our Debian dependencies). Run from the repository root after scripts/pack-device.sh filled
# .carry/debs here and .carry travelled along:
#   bash scripts/device-check.sh            # deps, build, nvidia-smi, tests, sanitizer, kernel
#                                           # benchmarks and peers (same run), model checks, the
#                                           # 8B-shaped end-to-end prefill; the comparison table last
#   STEPS="deps build test" bash scripts/device-check.sh    # a subset
# Environment: OUT (logs and results go there when set), DEPS (default /tmp/deps), JOBS (default
# all cores), ELASTIC_MODEL (a model for the model tests and benchmarks; default models/*.gguf),
# PRESET / BUILD (default cuda-release / build-cuda; PRESET=cpu-release BUILD=/tmp/x tries the
# dependency handling on a machine without a GPU).
# Dependencies are unpacked with `dpkg -x` under $DEPS, never into /.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=${DEPS:-/tmp/deps}
JOBS=${JOBS:-$(nproc)}
STEPS=${STEPS:-"deps build smi test kernels peers model e2e table sanitize"}
PRESET=${PRESET:-cuda-release}
BUILD=${BUILD:-build-cuda}
LOGS=${OUT:-$BUILD/device-logs}
mkdir -p "$LOGS"
ARCH=x86_64-linux-gnu
GEN=Ninja
command -v ninja >/dev/null || GEN="Unix Makefiles"
SUMMARY=()
FAILED=0

say() { printf '\n=== device-check: %s\n' "$*" >&2; }
die() { printf 'device-check: error: %s\n' "$*" >&2; exit 1; }
summary() {
  printf '\n| step | result | seconds |\n|---|---|---|\n'
  for row in "${SUMMARY[@]}"; do printf '%s\n' "$row"; done
  printf '%s\n' "${SUMMARY[@]}" > "$LOGS/summary.md"
}
# step NAME CMD...: runs CMD with its output in $LOGS/NAME.log (and on the terminal), records the result.
step() {
  local name=$1; shift
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  say "$name (log: $LOGS/$name.log)"
  local t0=$SECONDS rc
  # A subshell with -e of its own: errexit would be ignored in a function called from `cmd || ...`.
  set +e
  ( set -e; "$@" ) 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || FAILED=1
  SUMMARY+=("| $name | $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") | $((SECONDS - t0)) |")
  return "$rc"
}

# --- dependencies: unpack the debs and point every search path at them -------------------------
deps_unpack() {
  ls .carry/debs/*.deb >/dev/null 2>&1 || die "no .carry/debs/*.deb: run scripts/pack-device.sh on the build machine and carry .carry"
  rm -rf "$DEPS" && mkdir -p "$DEPS/fallback-lib"
  for d in .carry/debs/*.deb; do
    case $(basename "$d") in
      # gcc runtimes and zlib: the system's own are newer and must win; ours only fill a gap.
      libgomp1_*|libgfortran5_*|libquadmath0_*|zlib1g_*) dpkg -x "$d" "$DEPS/runtime" ;;
      *) dpkg -x "$d" "$DEPS" ;;
    esac
  done
  local ldconfig; ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  for lib in libgomp.so.1 libgfortran.so.5 libquadmath.so.0 libz.so.1; do
    if "$ldconfig" -p | grep -q "$lib "; then
      echo "$lib: the system's"
    else
      echo "$lib: ours (the system has none)"
      ln -sf "$(find "$DEPS/runtime" -name "$lib" | head -1)" "$DEPS/fallback-lib/$lib"
    fi
  done
  # Absolute symlinks (zlib1g-dev's libz.so -> /lib/.../libz.so.1.2.13) must point into $DEPS.
  find "$DEPS/usr" -type l -lname '/*' | while read -r l; do
    t=$(readlink "$l")
    if [ -e "$DEPS$t" ]; then ln -sfn "$DEPS$t" "$l"; elif [ -e "$DEPS/runtime$t" ]; then ln -sfn "$DEPS/runtime$t" "$l"; fi
  done
  # pkg-config files say prefix=/usr: rewrite them to the unpacked tree.
  find "$DEPS/usr" -name '*.pc' -exec sed -i "s#^\([A-Za-z_]*\)=/usr#\1=$DEPS/usr#" {} +
  # GoogleTest from the packaged sources with this machine's compiler (the packaged .a files were
  # built by Debian's gcc 12 and may not link against another libstdc++).
  cmake -S "$DEPS/usr/src/googletest" -B "$DEPS/gtest-build" -G "$GEN" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$DEPS/gtest" >/dev/null
  cmake --build "$DEPS/gtest-build" -j "$JOBS" >/dev/null
  cmake --install "$DEPS/gtest-build" >/dev/null
  echo "unpacked $(ls .carry/debs/*.deb | wc -l) packages into $DEPS"
}

deps_env() {  # the paths the configure, the build and the test run need
  export PKG_CONFIG_LIBDIR="$DEPS/usr/lib/$ARCH/pkgconfig:$DEPS/usr/share/pkgconfig"
  unset PKG_CONFIG_PATH
  if ! command -v pkg-config >/dev/null; then
    export PKG_CONFIG="$DEPS/usr/bin/pkgconf"
  fi
  export LD_LIBRARY_PATH="$DEPS/usr/lib/$ARCH:$DEPS/usr/lib/$ARCH/openblas-pthread:$DEPS/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LIBRARY_PATH="$LD_LIBRARY_PATH"
  export CUDACXX=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  CMAKE_DEPS=(
    -G "$GEN"
    -DCMAKE_PREFIX_PATH="$DEPS/gtest;$DEPS/usr"
    -DCMAKE_LIBRARY_PATH="$DEPS/usr/lib/$ARCH;$DEPS/usr/lib/$ARCH/openblas-pthread"
    -DCMAKE_INCLUDE_PATH="$DEPS/usr/include;$DEPS/usr/include/$ARCH/openblas-pthread"
    -DPKG_CONFIG_EXECUTABLE="${PKG_CONFIG:-$(command -v pkg-config)}"
  )
}

configure_and_build() {
  deps_env
  # A build tree made with another generator cannot be reused; otherwise keep it (incremental).
  if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qx "CMAKE_GENERATOR:INTERNAL=$GEN" "$BUILD/CMakeCache.txt"; then
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
  fi
  # CUDA_ARCHS (default 90, the H100/H200 here) keeps the build on that machine short; the
  # preset itself builds sm_80 and sm_90. No -Werror with that machine's other compiler (GCC 13).
  bash scripts/get-cutlass.sh  # CuTe headers of the Hopper kernel, from the carried wheel
  cmake --preset "$PRESET" -B "$BUILD" "${CMAKE_DEPS[@]}" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
    -DELASTIC_WERROR="${WERROR:-OFF}"
  # Every dependency must come from $DEPS, not from a system copy that happens to exist.
  local found bad
  found=$(grep -E '^(pkgcfg_lib_PCRE2_pcre2-8|PCRE2_INCLUDEDIR|BLAS_openblas_LIBRARY|CBLAS_INCLUDE_DIR|PNG_LIBRARY_RELEASE|PNG_PNG_INCLUDE_DIR|nlohmann_json_DIR|CLI11_DIR|GTest_DIR)[:=]' \
    "$BUILD/CMakeCache.txt")
  echo "$found"
  bad=$(echo "$found" | grep -vF "$DEPS" || true)
  if [ -n "$bad" ]; then echo "dependencies found outside $DEPS:"; echo "$bad"; return 1; fi
  # BUILD_TARGET (e.g. elastic): only that target, for a short run.
  cmake --build "$BUILD" -j "$JOBS" ${BUILD_TARGET:+--target "$BUILD_TARGET"} || return 1  # explicit: errexit is off inside `step ... || stop`
  echo "libraries of the elastic binary from $DEPS:"
  ldd "$BUILD/bin/elastic" | grep -F "$DEPS" || echo "  (none)"
}

smi() { nvidia-smi -L && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; }

run_tests() {
  deps_env
  local xml=""
  [ -n "${OUT:-}" ] && xml="--gtest_output=xml:$OUT/tests.xml"
  local m; m=$(model_path)
  if [ -n "$m" ]; then export ELASTIC_MODEL=$m; else echo "no model: model tests use the tiny test model or skip"; fi
  OMP_WAIT_POLICY=PASSIVE "$BUILD/bin/elastic_tests" $xml
}

model_path() {
  if [ -n "${ELASTIC_MODEL:-}" ]; then echo "$ELASTIC_MODEL"; return; fi
  ls models/*.gguf 2>/dev/null | head -1 || true
}

run_benchmarks() {
  deps_env
  local m; m=$(model_path)
  if [ -z "$m" ]; then echo "no model (set ELASTIC_MODEL or carry models/): benchmarks skipped"; return 0; fi
  # Model throughput, CPU then CUDA (llama-bench style table; JSON with --json).
  "$BUILD/bin/elastic" bench model -m "$m" --backend cpu -r 1 -p 512,2048
  "$BUILD/bin/elastic" bench model -m "$m" --backend cuda -r 3 -p 512,2048,8192
}

# The fused hybrid kernel and decode through the backend, 32/8 heads, d 128, bf16, sink 128 / local
# 2048: Ω sweep at 8K/32K/128K and decode at 32K/128K (JSON in $LOGS), then the same as a table.
run_kernel_bench() {
  deps_env
  local args="--backend cuda --precision bf16 --config fa-ssa --seq 8192,32768,131072 --msr 0,0.25,0.5,0.75,1 --decode-ctx 32768,131072 -r 10"
  "$BUILD/bin/elastic" bench attention $args --json > "$LOGS/bench-cuda.json"
  "$BUILD/bin/elastic" bench attention --backend cuda --precision bf16 --seq 32768 --msr 0,0.75 -r 5 --check
}

# Peers in the same run on the same machine: SDPA flash / cuDNN, FlexAttention, serial dispatch.
run_peers() { python3 bench/peers/peers.py --json "$LOGS/peers.json"; }

# Our kernel against the peers, one table (printed last, kept as $LOGS/table.md).
run_table() { python3 bench/peers/compare.py "$LOGS/bench-cuda.json" "$LOGS/peers.json" --markdown "$LOGS/table.md"; }

# SmolLM2 on the GPU: log-probs vs the CPU per precision, demo answer, throughput, router cost.
run_model_checks() {
  local m; m=$(model_path)
  if [ -z "$m" ]; then echo "no model (set ELASTIC_MODEL or carry models/): model checks skipped"; return 0; fi
  DEPS=$DEPS BUILD=$BUILD OUT=$LOGS MODEL=$m bash scripts/device-model-checks.sh
}

# End to end: a Qwen3-8B-shaped model with random weights written here by our safetensors writer,
# prefill of 32768 tokens, full vs fa-ssa at Ω_MSR 0.75 (router-init routers, --attention msr:0.75).
run_e2e() {
  deps_env
  local dir=${E2E_DIR:-/tmp/qwen3-8b-random}
  local tok=${E2E_TOKENIZER:-.carry/fixtures/tokenizers/qwen3/tokenizer.json}
  [ -f "$tok" ] || { echo "no tokenizer at $tok (carry .carry/fixtures: a copy of ../shared/fixtures): e2e skipped"; return 0; }
  local t0=$SECONDS
  [ -f "$dir/config.json" ] || "$BUILD/bin/elastic" random-model --arch qwen3-8b --tokenizer "$tok" -o "$dir" --force
  echo "random-model: $((SECONDS - t0)) s"
  [ -f "$dir/router.safetensors" ] || "$BUILD/bin/elastic" router-init -m "$dir" -o "$dir/router.safetensors"
  # -r 3: the first prefill also uploads the weights; the median of 3 is a warm one.
  for a in "full" "msr:0.75 --router $dir/router.safetensors --sink 128 --local 2048"; do
    "$BUILD/bin/elastic" bench model -m "$dir" --backend cuda -p 32768 -n 8 -r 3 --attention $a
  done
}

# compute-sanitizer memcheck on the hybrid kernel and decode tests.
run_sanitizer() {
  deps_env
  compute-sanitizer --tool memcheck --error-exitcode 9 "$BUILD/bin/elastic_tests" \
    --gtest_filter='CudaAttention.PrefillVarlenBatchNative:CudaAttention.PrefillStridedQKV:CudaAttention.DecodeMatchesNaive'
}

stop() { printf 'device-check: %s\n' "$*" >&2; summary; exit 1; }
step deps deps_unpack || stop "unpacking the dependencies failed (see $LOGS/deps.log)"
step build configure_and_build || stop "the build failed (see $LOGS/build.log)"
step smi smi || stop "nvidia-smi failed: no GPU visible"
step test run_tests || true
step kernels run_kernel_bench || true
step bench run_benchmarks || true
step peers run_peers || true
step model run_model_checks || true
step e2e run_e2e || true
step table run_table || true
step sanitize run_sanitizer || true
summary
exit "$FAILED"
