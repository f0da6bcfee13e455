# Thin wrapper over CMake presets. Quick start: `make demo`, `make test`.
MAKEFLAGS += --no-print-directory
JOBS ?= $(shell nproc)
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
BIN := build/bin/elastic

.PHONY: all setup build model demo test test-long fuzz bench clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake --preset cpu-release >/dev/null
	@cmake --build build -j $(JOBS)

model: $(MODEL)
$(MODEL):
	@bash scripts/get-model.sh

demo: build model
	@bash scripts/demo.sh

test: build model
	@cd build && ctest --output-on-failure -j $(JOBS)

# Long mode: the tests plus a minute of fuzzing per parser.
test-long: test fuzz
	@bash scripts/run-fuzzers.sh 60

fuzz: setup
	@cmake --preset fuzz >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

clean:
	rm -rf build build-*
