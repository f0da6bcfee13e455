# Thin wrapper over CMake presets. Quick start: `make demo`, `make test`.
MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc)
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
BIN := build/bin/elastic
# nvcc for the cuda-release preset when it is not on PATH (the toolkit's usual place).
export CUDACXX ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)

.PHONY: all setup build cuda model demo test test-sanitize test-tsan test-long fuzz bench clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake --preset cpu-release >/dev/null
	@cmake --build build -j $(JOBS)

# The CUDA backend build (build-cuda/). Compiles without a GPU; its tests skip when none is present.
cuda: setup
	@cmake --preset cuda-release >/dev/null
	@cmake --build build-cuda -j $(JOBS)

model: $(MODEL)
$(MODEL):
	@bash scripts/get-model.sh

demo: build model
	@bash scripts/demo.sh

# The CPU ctest is the test run; the CUDA build must also compile (CI has nvcc but no GPU). On a
# machine without nvcc the CUDA build is skipped with a one-line notice.
test: build model
	@if command -v "$(CUDACXX)" >/dev/null 2>&1; then $(MAKE) cuda; \
	 else echo "make test: no nvcc ($(CUDACXX)): the CUDA build is skipped"; fi
	@cd build && ctest --output-on-failure -j $(JOBS)

# The whole unit and CLI suite under ASan + UBSan (leak detection on), in build-cpu-sanitize/.
test-sanitize: setup model
	@cmake --preset cpu-sanitize >/dev/null
	@cmake --build build-cpu-sanitize -j $(JOBS)
	@cd build-cpu-sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp ctest --output-on-failure -j $(JOBS)

# The multi-threaded CPU paths (OpenMP: attention prefill/decode, XAttention, GEMMs, the training
# backward and trainer, the model forward) under ThreadSanitizer, in build-cpu-tsan/. clang with
# LLVM's libomp and its Archer tool (OMP_TOOL_LIBRARIES), which tells TSan about the runtime's
# barriers and tasks; without it every OpenMP region reports false races.
ARCHER ?= $(firstword $(wildcard /usr/lib/llvm-*/lib/libarcher.so))
TSAN_TESTS := HybridAttention.*:XAttention.*:KVCache.*:CpuAttention.*:Ops.*:Backward*:Trainer*:Model.*:ModelGolden.*:Elastic.*:Tokenizer.*
test-tsan: setup model
	@test -n "$(ARCHER)" || { echo "test-tsan: libarcher.so not found (apt install libomp-dev)"; exit 1; }
	@cmake --preset cpu-tsan >/dev/null
	@cmake --build build-cpu-tsan -j $(JOBS)
	@cd build-cpu-tsan && OMP_TOOL_LIBRARIES=$(ARCHER) OMP_NUM_THREADS=2 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ./bin/elastic_tests --gtest_filter='$(TSAN_TESTS)'

# Long mode: the tests, the sanitized suite (too long for CI on 2 cores: its build alone takes
# ~20 min) and a minute of fuzzing per parser.
test-long: test test-sanitize fuzz
	@bash scripts/run-fuzzers.sh 60
	@python3 tests/serve/load_test.py --elastic $(BIN) --clients 32 --seconds 60 --json build/serve-load-60s.json

fuzz: setup
	@cmake --preset fuzz >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

clean:
	rm -rf build build-*
