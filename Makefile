# The two commands that matter (README): `make demo` and `make test`. Both install what they
# need (scripts/install-deps, Debian packages only) and work as root on a fresh Debian 12.
.PHONY: deps demo test build build-asan test-asan format format-check layers bench clean

JOBS ?= $(shell nproc)

deps:
	@scripts/install-deps

build: deps
	cmake --preset dev >/dev/null
	cmake --build --preset dev -j $(JOBS)

build-asan: deps
	cmake --preset asan-ubsan >/dev/null
	cmake --build --preset asan-ubsan -j $(JOBS)

# The local demo: builds, runs the agent with the synthetic generator, prints buffer stats.
demo: build
	scripts/demo

# Every test: formatting, the layering check, the dev build's full suite, the unit tests (and label `sanitized`)
# under ASan + UBSan, the ARM builds' unit tests under qemu, and each libFuzzer target for
# FUZZ_SECONDS (clang, ASan + UBSan; scripts/fuzz).
FUZZ_SECONDS ?= 30
test: deps
	$(MAKE) format-check
	$(MAKE) build
	$(MAKE) layers
	tests/kafka/broker fetch
	ctest --preset dev
	$(MAKE) test-asan
	cross/build arm64 --test
	cross/build armhf --test
	scripts/fuzz $(FUZZ_SECONDS)

test-asan: build-asan
	ctest --preset asan-ubsan

# The layering rule (docs/architecture.md): no include and no library link points up.
layers: deps
	mkdir -p build/dev/graph
	cmake --preset dev --graphviz=build/dev/graph/targets.dot >/dev/null
	scripts/check-layers build/dev/graph/targets.dot

format:
	scripts/format

format-check: deps
	scripts/format --check

bench: build
	build/dev/bench/buffer_bench
	build/dev/bench/forward_bench
	build/dev/bench/forward_bench --payloads json --contracts ab
	build/dev/bench/validator_bench
	build/dev/bench/pixel_bench
	build/dev/bench/mqtt_bench
	build/dev/bench/spool_bench
	build/dev/bench/relay_bench
	tests/kafka/broker fetch
	build/dev/bench/kafka_bench

clean:
	rm -rf build
