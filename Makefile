# Two commands for a newcomer: `make setup` (everything, once) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup install models browser demo test test-fast bench

setup: install models browser demo  ## venv + pinned install + models and BIG-bench into ~/.cache/hypergen + Chromium, then a first adapter

install: $(BIN)/hypergen

$(BIN)/hypergen: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) pip==26.3
	$(PIP) torch==2.13.0
	$(PIP) -e '.[app,test]'
	touch $@

browser:  ## Debian's Chromium + chromedriver for the app's browser test (skipped without them)
	command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || echo "warning: could not install chromium (not root?); the browser test will be skipped"

models: install
	$(BIN)/hypergen setup --bigbench

demo: models  ## the main job once: a description -> an adapter from the shipped zoo, active in SmolLM2, answering one input
	$(BIN)/hypergen generate "Say whether a sentence about sports is plausible." --input "Lionel Messi scored a touchdown."

test: install  ## the whole suite, real-model integration tests included
	HYPERGEN_REQUIRE_REAL=1 $(BIN)/python -m pytest -q

test-fast: install  ## tiny models only, and nothing slow (wheel build, app server, browser)
	$(BIN)/python -m pytest -q -m "not integration and not slow"

bench: install
	$(BIN)/python bench/swap.py
