# Entry points. Each installs what it needs into a project-local virtual environment (.venv).
#   make run    - the default workflow (config/config.yaml) on all cores
#   make test   - the whole test suite
#   make test-fast - tests/unit: the tests that run no workflow (about a minute)
#   make lint   - ruff and snakemake --lint
#   make bench  - featurization and scoring benchmarks
#   make gpu-smoke - train/featurize the paper-scale models on a GPU (skipped without CUDA)
#   make report - the HTML report of the last run
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed
CORES ?= all
TORCH_INDEX ?=
ARGS ?=

.PHONY: run test test-fast lint bench gpu-smoke report install

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned (TORCH_INDEX: e.g. the CPU wheels' index, see the README)
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	# kronfluence (ekfac) without its declared torchvision, which it never imports: a registry
	# torchvision built for another torch build breaks transformers' imports
	$(BIN)/python -m pip install --quiet -c constraints.txt accelerate einconv einops opt_einsum
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt kronfluence
	touch $(STAMP)

# preflight: a missing --configfile or a YAML error is one line naming the file (and line)
run: $(STAMP)
	@$(BIN)/python -m diffattr.preflight $(ARGS)
	snakemake --cores $(CORES) $(ARGS)

report: $(STAMP)
	@$(BIN)/python -m diffattr.preflight $(ARGS)
	snakemake --report report.html $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs --durations=12 $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m "not slow" tests/unit $(ARGS)

lint: $(STAMP)
	ruff check workflow tests benchmarks scripts
	ruff format --check workflow tests benchmarks scripts
	snakemake --lint
	snakemake --lint --configfile config/test.yaml

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/featurize.py $(ARGS)
	$(BIN)/python benchmarks/scoring.py

gpu-smoke: $(STAMP)
	$(BIN)/python benchmarks/gpu_smoke.py $(ARGS)
