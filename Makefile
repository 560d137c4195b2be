# Every target creates .venv on first use; only Python 3.10+, make and pip are needed.
# `make demo` installs the package alone (quick); test, lint and bench add the dev tools.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN     = $(VENV)/.installed-run
DEV     = $(VENV)/.installed
BENCHES = $(VENV)/.installed-bench

.PHONY: all install test demo bench lint format clean

all: lint test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN)

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV) $(RUN)

# The benchmarks measure the anchors (ProxyStore 1.1, NVFlare 2.9) in the same run.
$(BENCHES): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCHES) $(DEV) $(RUN)

install: $(DEV)

# Workers (pytest-xdist), each with its own redis-server and local cluster: the tests
# mostly wait (on Redis, timeouts, child processes), so 4 share 2 cores well. 0: one process.
TEST_WORKERS ?= 4

test: $(DEV)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The Redis: FRAMEWORK_REDIS_URL, or DEMO_ARGS="--url redis://...", else an embedded one.
# Not echoed: DEMO_ARGS may hold a password (the demo prints the URL masked itself).
demo: $(RUN)
	@$(BIN)/framework demo $(DEMO_ARGS)

bench: $(BENCHES)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: $(DEV)
	$(BIN)/ruff check framework plugins tests benchmarks
	$(BIN)/ruff format --check framework plugins tests benchmarks
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff check --fix framework plugins tests benchmarks
	$(BIN)/ruff format framework plugins tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
