# crpbot developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Quiet, local-only Ray for every command run from here.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/crpbot pipeline --budget smoke

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_search.py

lint: setup
	$(BIN)/ruff check crpbot tests benchmarks scripts
	$(BIN)/ruff format --check crpbot tests benchmarks scripts

clean:
	rm -rf runs reports data/features .pytest_cache
