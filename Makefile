# isoguard — the two commands of the README, and a few helpers.
#   make demo   install dependencies, build, and serve the demo on http://127.0.0.1:8080
#   make tour   the engine on the shipped examples, from the command line
#   make test   install dependencies, build (release and ASan+UBSan), run every test
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD := build/release
BUILD_SAN := build/sanitize
BUILD_TSAN := build/tsan
# Seconds each fuzz target runs in `make test` (`make fuzz FUZZ_SECONDS=600` for a long run).
FUZZ_SECONDS ?= 60
ISOGUARD := $(BUILD)/isoguard

.PHONY: all bootstrap build build-san build-tsan demo tour test test-san test-tsan fuzz bench bench-micro bench-http format clean

all: build

# Directories with an npm package-lock.json, installed exactly by scripts/npm-deps.
NPM_DIRS := web tests/e2e tests/fhir

bootstrap:
	@scripts/bootstrap
	@$(if $(strip $(NPM_DIRS)),scripts/npm-deps $(NPM_DIRS))

build: bootstrap
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@node web/build.mjs >/dev/null  # the web app's files (web/dist), served by isoguard serve

# The sanitizer build compiles the test targets only (and the libraries they need).
build-san: bootstrap
	@cmake -S . -B $(BUILD_SAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DISOGUARD_SANITIZE=ON \
	  -DISOGUARD_BENCH=OFF >/dev/null
	@cmake --build $(BUILD_SAN) -j $(JOBS) --target isoguard_tests

# demo.db (SQLite): a synthetic cohort through the real import path, an account per role with
# its token printed, and `isoguard serve` on 127.0.0.1:8080; an existing demo.db is reused.
demo: build
	@scripts/demo $(ISOGUARD) demo.db 127.0.0.1:8080

tour: build
	@echo "== isoguard programs"
	@$(ISOGUARD) programs
	@echo
	@echo "== isoguard evaluate --at 2026-09-14T10:00:00-04:00 examples/us-2026-first-prescription.json"
	@$(ISOGUARD) evaluate --at 2026-09-14T10:00:00-04:00 examples/us-2026-first-prescription.json
	@echo
	@echo "== the same record three days later: the test window has closed"
	@$(ISOGUARD) evaluate --at 2026-09-17T10:00:00-04:00 examples/us-2026-first-prescription.json
	@echo
	@echo "== isoguard dose --weight-kg 58.5 --mg-per-kg 0.5"
	@$(ISOGUARD) dose --weight-kg 58.5 --mg-per-kg 0.5
	@echo
	@echo "== isoguard interactions 'Doxycycline 100 mg' 'St. John's Wort' prednisone"
	@$(ISOGUARD) interactions "Doxycycline 100 mg" "St. John's Wort" prednisone
	@echo
	@echo "== a synthetic cohort of 100,000 patients, evaluated in batch on every core"
	@$(ISOGUARD) synth --patients 100000 --seed 1 > $(BUILD)/demo-cohort.ndjson
	@time -p $(ISOGUARD) evaluate --batch $(BUILD)/demo-cohort.ndjson --at 2026-11-01T12:00:00Z \
	  > $(BUILD)/demo-results.ndjson
	@echo "results: $(BUILD)/demo-results.ndjson ($$(grep -c '"decision":"authorized"' $(BUILD)/demo-results.ndjson) authorized, $$(grep -c '"decision":"denied"' $(BUILD)/demo-results.ndjson) denied)"

test-san: build-san
	@cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer on the concurrent parts (SQLite; the PostgreSQL suites need their cluster):
# the stores' writers and readers and group commit, crash safety, projections beside writers,
# the HTTP server, the API under concurrent requests with its audit writer and background work.
TSAN_FILTER := HttpServerTest.*:MetricsTest.*:Sqlite/EventStoreConformance.*:Sqlite/ServiceStoreConformance.*:SqliteCrashSafety.*:SqliteProjections.*:SqliteBulkImport.*:Sqlite/ApiTest.*:Sqlite/SecurityTest.*
build-tsan: bootstrap
	@cmake -S . -B $(BUILD_TSAN) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DISOGUARD_TSAN=ON \
	  -DISOGUARD_BENCH=OFF >/dev/null
	@cmake --build $(BUILD_TSAN) -j $(JOBS) --target isoguard_tests

test-tsan: build-tsan
	@cd $(BUILD_TSAN) && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  tests/isoguard_tests --gtest_filter='$(TSAN_FILTER)' --gtest_brief=1

# libFuzzer targets (clang-16; fuzz/fuzz_targets.h), each for FUZZ_SECONDS.
fuzz: bootstrap
	@scripts/fuzz $(FUZZ_SECONDS)

# Sanitizer suites first, release suite last, so the run ends with ctest's summary line.
test: build test-san test-tsan fuzz
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The renewal-day load test (docs/performance.md): 1,000,000 patients, open-loop, rate search.
bench: build
	@scripts/bench-renewal $(BUILD) $(BUILD)/bench-renewal

# Google Benchmark microbenchmarks of the engine and the store.
bench-micro: build
	@$(BUILD)/isoguard_bench

# The service under wrk on a 100,000-patient SQLite store (docs/performance.md, "The service").
bench-http: build
	@scripts/bench-http $(ISOGUARD) $(BUILD)/bench-http

# The fault tests' long versions (docs/reliability.md): 100 SIGKILL rounds, longer load around
# the PostgreSQL failover, the disk filling up, connection floods.
.PHONY: soak
soak: build
	@cd $(BUILD) && ISOGUARD_SOAK=1 tests/isoguard_tests --gtest_filter='Fault*' \
	  && ISOGUARD_SOAK=1 ctest --output-on-failure -R postgres_failover

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf build
