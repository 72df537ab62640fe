# Short verbs over the CMake build. `make run` and `make test` set up a fresh machine first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
# CI builds with -Werror; a developer's build only warns.
WERROR     := $(if $(CI),ON,OFF)
CMAKE_ARGS ?=

.PHONY: all setup build asan tsan run test test-unit test-gpu test-e2e bench clean fuzz format \
        format-check

all: build

setup:
	@scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSPYC_WERROR=$(WERROR) $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: setup
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDSPYC_ASAN=ON -DDSPYC_BENCH=OFF -DDSPYC_WERROR=$(WERROR) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

tsan: setup
	@cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDSPYC_TSAN=ON -DDSPYC_BENCH=OFF -DDSPYC_WERROR=$(WERROR) >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS)

# The main job: run the bundled example program over its dataset against the simulator.
run: build
	@scripts/run-main.sh $(BUILD)

# The format check comes first, so unformatted C fails fast.
# Every test: threaded unit tests under TSan, unit and fuzz-smoke tests under ASan+UBSan,
# then the whole suite (unit, fuzz-smoke, end-to-end, compatibility with real DSPy) on the
# normal build.
test: format-check build asan tsan
	@echo "== threaded unit tests under TSan"
	@TSAN_OPTIONS=halt_on_error=1 scripts/ctest-strict.sh $(TSAN_BUILD) --output-on-failure -j $(JOBS) -L threads
	@echo "== unit + fuzz-smoke tests under ASan+UBSan"
	@ASAN_OPTIONS=detect_leaks=1 scripts/ctest-strict.sh $(ASAN_BUILD) --output-on-failure -j $(JOBS) -L 'unit|fuzz-smoke'
	@echo "== unit + fuzz-smoke tests, normal build"
	@scripts/ctest-strict.sh $(BUILD) --output-on-failure -j $(JOBS) -L 'unit|fuzz-smoke'
	@echo "== end-to-end and compatibility tests"
	@DSPYC_STRICT_SKIPS=1 PYTHONPATH=tests DSPYC_BIN=$(CURDIR)/$(BUILD)/dspyc DSPYC_BUILD=$(CURDIR)/$(BUILD) .venv/bin/python -m pytest -q -p strict_skips tests/e2e tests/compat
	@echo "== compatibility tests against DSPy 3.4.1"
	@DSPYC_STRICT_SKIPS=1 PYTHONPATH=tests DSPYC_BIN=$(CURDIR)/$(BUILD)/dspyc DSPYC_BUILD=$(CURDIR)/$(BUILD) .venv-dspy34/bin/python -m pytest -q -p strict_skips tests/compat

test-unit: asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

# The tests that need a GPU (tests/gpu/, label "gpu"); `make test` never runs them.
test-gpu: build
	@cd $(BUILD) && ctest --output-on-failure -L gpu

test-e2e: build
	@DSPYC_BIN=$(CURDIR)/$(BUILD)/dspyc DSPYC_BUILD=$(CURDIR)/$(BUILD) .venv/bin/python -m pytest -q tests/e2e tests/compat

bench: build
	@scripts/run-main.sh $(BUILD)

# Fuzz each target for FUZZ_SECONDS (default 60) and keep what it found, minimized, in its
# corpus (FUZZ_TARGETS="fuzz_sse fuzz_signature" for some only).
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: setup
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -G Ninja -DDSPYC_FUZZ=ON -DDSPYC_BENCH=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)
# Rewrite the C sources to .clang-format; `format-check` only lists those that differ.
format: setup
	@scripts/format.sh

format-check: setup
	@echo "== format check (.clang-format)"
	@scripts/format.sh --check

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
