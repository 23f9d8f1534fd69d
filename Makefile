# xailib: one command to reproduce, one to test. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROFILE ?= default
DEVICE ?= auto
ONLY ?= *
# make models: TIER=all|shallow|deep, MODELS=a glob over zoo names (e.g. 'vgg-*-conceptworld-hard' or one name)
TIER ?= all
MODELS ?= *
FMNIST_DIR := /usr/share/datasets/fashion-mnist
export PYTHONHASHSEED := 0

.PHONY: help install data reproduce test test-unit test-slow test-notebooks lab models bench clean

help:
	@echo "make reproduce   create .venv, then run every paper notebook with papermill (figures/ and tables)"
	@echo "make test        unit tests, then every notebook under nbval on the smoke profile"
	@echo "make test-slow   the slow tests: real-scale stand-ins through the runner, reproducibility (CI runs both)"
	@echo "make lab         JupyterLab on notebooks/"
	@echo "make models      retrain the model zoo from scratch (deterministic); one tier: make models TIER=deep"
	@echo "                 (or TIER=shallow), some models: make models MODELS='vgg-*-conceptworld-hard'"
	@echo "make bench       run benchmarks/ (results under benchmarks/results/)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch/torchvision pinned: served from local disk on x86_64 (see README).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed data

# Fashion-MNIST from Debian's package where apt is available; nothing fails if it is not
# (xailib then looks at $$XAILIB_DATA, then tries torchvision's download, then explains).
data:
	@if [ ! -d $(FMNIST_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
		echo "note: could not install dataset-fashion-mnist with apt; set XAILIB_DATA (see README)"; \
	fi

reproduce: install
	$(PY) -m xailib.reproduce --profile $(PROFILE) --device $(DEVICE) --only '$(ONLY)'

test: install test-unit test-notebooks

# the fast suite; the tests marked slow (real-scale stand-ins through the runner, the reproducibility check) are
# `make test-slow`, which CI (.ci/run) runs after `make test`
test-unit: install
	$(PY) -m pytest -q -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

test-notebooks: install
	$(PY) -m xailib.reproduce --prepare-smoke build/nbval
	$(PY) -m pytest -q --nbval-lax -p no:cacheprovider build/nbval

lab: install
	$(VENV)/bin/jupyter lab notebooks/

models: install
	$(PY) -m xailib.models.train --tier $(TIER) --only '$(MODELS)'

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache
