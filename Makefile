# uns-bridge developer commands. `make install` once, then `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: install run test soak bench bench-quick lint format proto clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)  ## create .venv and install the project with its development extras
	$(PY) -m pip install --quiet -e '.[dev]'

run: install  ## the bridge on embedded defaults (embedded broker and database) with the demo plant
	$(BIN)/uns-bridge run --demo

test:  ## the test suite (real local PostgreSQL/Mosquitto when up, embedded ones otherwise)
	$(PY) -m pytest -q

soak:  ## the long-running fault and fuzz variants
	$(PY) -m pytest -q -m soak

bench:  ## the full benchmark suite; figures next to ceilings measured in the same run
	$(PY) -m tests.benchmarks

bench-quick:  ## the benchmark suite in quick mode (a few minutes)
	$(PY) -m tests.benchmarks --quick

lint:  ## ruff and mypy --strict
	$(BIN)/ruff check uns_bridge tests
	$(BIN)/ruff format --check uns_bridge tests
	$(BIN)/mypy

format:
	$(BIN)/ruff format uns_bridge tests
	$(BIN)/ruff check --fix uns_bridge tests

proto:  ## regenerate uns_bridge/sparkplug/sparkplug_b_pb2.py from schemas/sparkplug_b.proto
	$(PY) -m uns_bridge.sparkplug.protogen

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis bench-results
