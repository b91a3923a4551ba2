# Two commands for a newcomer: `make setup` (everything, once) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup install models browser demo test test-fast bench rebuild rebuild-zoo rebuild-generators rebuild-zoo-generators rebuild-sft-generators rebuild-results

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

demo: models  ## the main job once: a description -> an adapter from the shipped default generator, active in SmolLM2, answering one input
	$(BIN)/hypergen generate "Say whether a sentence about sports is plausible." --input "Lionel Messi scored a touchdown."

test: install  ## the whole suite, real-model integration tests included
	HYPERGEN_REQUIRE_REAL=1 $(BIN)/python -m pytest -q

test-fast: install  ## tiny models only, and nothing slow (wheel build, app server, browser)
	$(BIN)/python -m pytest -q -m "not integration and not slow"

bench: install
	$(BIN)/python bench/swap.py --runs 200 --gguf

# ---- everything that ships, from scratch (each step resumes after a stop: rerun the same target) ----
# On this 2-core CPU: experts 1-16 min each (median ~4; 60 + 31 oracle; the 18 generation oracle experts: 95 min in all, 2026-12-01), the multi-task LoRA ~30 min, t2l and
# mtlora ~35 min each (400 steps, after 7 min preparing the tasks once), the evaluations ~1.5 h: the better part of a day. Minutes of it on a GPU.
CACHE ?= $(or $(HYPERGEN_HOME),$(HOME)/.cache/hypergen)
ZOO_BUILD ?= $(CACHE)/zoo/bigbench
H := $(BIN)/hypergen
ORACLE_TITLE := The oracle zoo: experts trained on the held-out tasks (the evaluation's upper reference; not shipped)
# the 4 zoo experts held out of the zoo-trained generators to measure them (docs/generators.md)
ZOO_TRAIN := --lr 0.001 --zoo $(ZOO_BUILD) --val-experts tense --val-experts disambiguation_qa --val-experts unit_conversion/different_systems --val-experts operators
# t2l and its fair baseline mtlora (same rows, prompts, steps and schedule) on the described tasks of BIG-bench
# (data/descriptions/bigbench.json) and of the OpenAI evals (data/descriptions/openai_evals.json): the learning rate
# decays to a tenth by step 400, where the run stops, and --export-last writes that last step; every training prompt
# also holds the row's description, the mode the default serves (shipped 2026-12-02; docs/experiments.md, "A decayed
# learning rate" and "The description in every training prompt"). A stopped run continues with the same command.
SFT_RUN := --objective sft --tasks descriptions --extra-suite openai_evals --steps 400 --lr-decay 380 --batch-size 8 --sft-examples 1 --lr 3e-4 --warmup 20 --val-every 100 --logger csv --ckpt-every 50 --sft-prompt-description 1.0

rebuild: rebuild-zoo rebuild-generators rebuild-results  ## every shipped artifact and published number, in order

rebuild-zoo: install  ## 60 experts + the multi-task LoRA, packed int8 into zoo/ (docs/zoo.md); the oracle zoo (docs/oracle.md)
	$(H) zoo build --limit 60 --steps 100
	$(H) zoo multitask
	rm -rf zoo && $(H) zoo pack $(ZOO_BUILD) zoo
	$(H) zoo report --zoo zoo --out docs/zoo.md
	$(H) zoo build --oracle
	$(H) zoo report --zoo $(CACHE)/zoo/oracle --out docs/oracle.md --title "$(ORACLE_TITLE)" --command "hypergen zoo build --oracle"

rebuild-generators: rebuild-zoo-generators rebuild-sft-generators  ## both below

rebuild-zoo-generators: install  ## sg, icm, abmll from the zoo in the cache (after rebuild-zoo)
	$(H) train sg --objective recon --steps 800 --batch-size 16 $(ZOO_TRAIN) --out generators/sg
	$(H) train icm --objective recon --steps 600 --batch-size 16 $(ZOO_TRAIN) --out generators/icm
	$(H) train abmll --objective recon --steps 600 --batch-size 16 $(ZOO_TRAIN) --out $(CACHE)/generators/abmll-recon
	$(H) train abmll --objective sft --steps 80 --batch-size 4 $(ZOO_TRAIN) --init $(CACHE)/generators/abmll-recon --out generators/abmll

rebuild-sft-generators: install  ## t2l and its fair baseline mtlora through the base on the described training tasks, packed into generators/; no zoo needed
	$(H) data fetch openai_evals
	# trained and exported beside, not under the family's own name: a checkpoint at $(CACHE)/generators/t2l would
	# shadow the shipped one (api.checkpoint_path), and the eval must score what ships. --out is not part of a run.
	$(H) train t2l $(SFT_RUN) --out $(CACHE)/generators/t2l.fp32
	$(H) train t2l $(SFT_RUN) --export --export-last --out $(CACHE)/generators/t2l.fp32
	rm -rf generators/t2l && $(H) generator-pack $(CACHE)/generators/t2l.fp32 generators/t2l
	$(H) train mtlora $(SFT_RUN) --out $(CACHE)/generators/mtlora.fp32
	$(H) train mtlora $(SFT_RUN) --export --export-last --out $(CACHE)/generators/mtlora.fp32
	rm -rf generators/mtlora && $(H) generator-pack $(CACHE)/generators/mtlora.fp32 generators/mtlora

rebuild-results: install  ## the held-out and seen evaluations behind the README's tables
	$(H) eval --split heldout --out docs/results/heldout
	$(H) eval --split heldout --out docs/results/heldout --long-budget 32 --prune  # adds ROUGE-L at 32 new tokens (seed 0), reusing the rows above; drops rows of older generators
	$(H) eval --split seen --limit 8 --out docs/results/seen --prune
