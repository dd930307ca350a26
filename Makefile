# HPO workshop — the two commands of the README, plus helpers.
#   make demo    set up .venv (first time, ~3 min) and run all four methods on the laptop tier (~8 min on 2 cores)
#   make test    set up .venv and run the test suite (SLURM tests need root; they skip otherwise)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: venv demo test test-fast reference answer-key slurm-up slurm-down slurm-status bench clean-logs help

help:
	@sed -n '1,4p' Makefile

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first and pinned: on a CPU-only machine this is the CPU wheel; nothing may pull a CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

demo: venv
	@source $(VENV)/bin/activate && bash scripts/demo.sh

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slurm and not slow and not deepspeed"

# the committed reference results (logs/reference/laptop) + the answer key filled from them (~9 min)
reference: venv
	@source $(VENV)/bin/activate && bash scripts/reference.sh
answer-key: venv
	$(PY) scripts/answer_key.py

slurm-up:
	bash practice/local_slurm.sh up
slurm-down:
	bash practice/local_slurm.sh down
slurm-status:
	bash practice/local_slurm.sh status

bench: venv
	$(PY) bench/bench_trial.py

# your runs' logs go; the committed reference results (logs/reference/) stay
clean-logs:
	find logs -mindepth 2 -not -path 'logs/reference*' ! -name .gitkeep ! -name README.md -delete
