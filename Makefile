# Thin wrapper over CMake presets. Quick start: `make demo`, `make test`.
MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc)
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
BIN := build/bin/elastic
# nvcc for the cuda-release preset when it is not on PATH (the toolkit's usual place).
export CUDACXX ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)

.PHONY: all setup build cuda model demo test test-sanitize test-long fuzz bench clean

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

# Long mode: the tests, the sanitized suite (too long for CI on 2 cores: its build alone takes
# ~20 min) and a minute of fuzzing per parser.
test-long: test test-sanitize fuzz
	@bash scripts/run-fuzzers.sh 60

fuzz: setup
	@cmake --preset fuzz >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

clean:
	rm -rf build build-*
