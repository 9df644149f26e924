# Postern: `make run` opens the console on a local sandbox relay; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench reliability clean image image-test

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-test-packages
	scripts/install-test-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	scripts/run-sandbox

# Two pytest runs side by side (scripts/run-tests): the console's tests and all the others.
# One file or test alone: .venv/bin/pytest tests/relay/test_bdat.py
test: setup
	$(BIN)/lint-imports
	scripts/run-tests

# Benchmarks (figures in docs/performance.md): the relay against Postfix (throughput of five
# workloads in three interleaved rounds, end-of-DATA latency, restart on 100,000 queued messages,
# memory at 500 open sessions; about 15 minutes), then a 100,000-message queue through the control
# API and in the console. Bigger: make bench BENCH_ARGS="--messages 10000 --repeat 5".
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m bench.relay $(BENCH_ARGS)
	$(BIN)/python -m bench.queue_list
	$(BIN)/python -m bench.console

# Faults and attacks at full size (about 10 minutes); figures in .run/reliability/, docs/reliability.md.
reliability: setup
	$(BIN)/python -m reliability

# The VM image (root; several minutes, not part of `make test`): build/image/, docs/image.md.
image: setup
	image-build/build

image-test: setup
	$(BIN)/python image-build/boot-test

clean:
	rm -rf $(VENV) .run
