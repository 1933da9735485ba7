# crpbot developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Quiet, local-only Ray for every command run from here.
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test bench lint clean bundle check-bundle docs-check

setup: $(STAMP)

# TORCH_INDEX: optional wheel index for torch alone, e.g. https://download.pytorch.org/whl/cpu
# on a laptop without a local wheel cache (PyPI's Linux torch is the multi-GB CUDA build).
TORCH_INDEX ?=

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0 --index-url $(TORCH_INDEX))
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,freqtrade]'
	touch $(STAMP)

demo: setup
	$(BIN)/crpbot pipeline --budget smoke

# Two runs: the multi-node test and crpbot doctor start their own Ray, which must not share the
# host with the session's local Ray instance (it breaks Ray Train's clean-up).
test: setup
	$(BIN)/python -m pytest -m "not multinode and not own_ray"
	$(BIN)/python -m pytest -m "multinode or own_ray" tests/test_multinode.py tests/test_doctor.py

bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_search.py

# The offline install for CUDA nodes without a package index (docs/scale-out.md):
# dist/crpbot-offline-py<X.Y>-x86_64.tar.xz; BUNDLE_PYTHON=3.12 builds for another Python.
BUNDLE_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
bundle: setup
	$(BIN)/python scripts/build_offline_bundle.py --python $(BUNDLE_PYTHON)

# Build, install into a fresh venv holding only the assumed packages, doctor, one training epoch.
# Starts Ray: run it as `flock /tmp/crpbot-ray.lock make check-bundle`.
check-bundle: setup
	PYTHON=$(PYTHON) bash scripts/check_offline_bundle.sh

# ruff, then the stage layering contract in pyproject.toml (import-linter)
lint: setup
	$(BIN)/ruff check crpbot tests benchmarks studies scripts
	$(BIN)/ruff format --check crpbot tests benchmarks studies scripts
	$(BIN)/lint-imports --no-cache

# Every command the README and docs/ show, run on the bundled sample in scratch directories
# (scripts/docs_check.py). Starts Ray: on a shared host run it under /tmp/crpbot-ray.lock.
docs-check: setup
	$(BIN)/python scripts/docs_check.py

clean:
	rm -rf runs reports data/features .pytest_cache
