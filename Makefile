# Two commands for a newcomer: `make setup` (everything, once) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup install models test test-fast bench clean-venv

setup: install models  ## venv + pinned install + SmolLM2/MiniLM converted into ~/.cache/hypergen

install: $(BIN)/hypergen

$(BIN)/hypergen: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[app,test]'
	touch $@

models: install
	$(BIN)/hypergen setup --bigbench

test: install  ## the whole suite, real-model integration tests included
	HYPERGEN_REQUIRE_REAL=1 $(BIN)/python -m pytest -q

test-fast: install  ## tiny models only
	$(BIN)/python -m pytest -q -m "not integration"

bench: install
	$(BIN)/python bench/swap.py
