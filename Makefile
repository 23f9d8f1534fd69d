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

.PHONY: help install data browsers reproduce test test-unit test-slow test-notebooks lab demo models performers bench binder-check clean

help:
	@echo "make reproduce   create .venv, then run every paper notebook with papermill (figures/ and tables)"
	@echo "make test        unit tests, then every notebook under nbval on the smoke profile"
	@echo "make test-slow   the slow tests: real-scale stand-ins through the runner, reproducibility (CI runs both)"
	@echo "make lab         JupyterLab on notebooks/"
	@echo "make demo        the explorer notebooks (gap/03, mace/05, explainer/03) as a Voila app on http://127.0.0.1:$(DEMO_PORT)/"
	@echo "make models      retrain the model zoo from scratch (deterministic); one tier: make models TIER=deep"
	@echo "                 (or TIER=shallow), some models: make models MODELS='vgg-*-conceptworld-hard'"
	@echo "make performers  retrain the additive explainer's performers (deterministic); some: make performers ONLY='vgg-m-*'"
	@echo "make bench       run benchmarks/ (results under benchmarks/results/)"
	@echo "make binder-check  build Binder's environment from binder/ alone in a fresh venv, run the smoke notebooks"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch/torchvision pinned: served from local disk on x86_64 (see README).
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed data browsers

# Headless Chromium and its driver from Debian's packages (for tests/test_demo_browser.py, which skips without
# them) where apt is available and we are root; nothing fails if not, a note says what to do.
browsers:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
			(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1) || \
			echo "note: could not install chromium and chromium-driver with apt; tests/test_demo_browser.py will skip"; \
		else \
			echo "note: no chromium/chromedriver and no apt-get as root; install them (Debian: apt-get install" \
			     "chromium chromium-driver) or tests/test_demo_browser.py will skip"; \
		fi; \
	fi

# Fashion-MNIST from Debian's package where apt is available; nothing fails if it is not
# (xailib then looks at $$XAILIB_DATA, then tries torchvision's download, then explains).
data:
	@if [ ! -d $(FMNIST_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
		echo "note: could not install dataset-fashion-mnist with apt; set XAILIB_DATA (see README)"; \
	fi

# Two notebooks at a time, one torch thread each: on 2 cores two single-threaded kernels run side by side at
# about the speed of one alone (a forward+backward of vgg-conceptworld-hard on 64 images: 0.154 s alone, 0.151 and
# 0.155 s side by side; two threads alone 0.136 s; measured on 2026-12-04 on a 2-core machine of this project),
# so the run takes about half as long as a serial one.
# WORKERS=0 runs them serially, in one process; THREADS sets each kernel's torch (OpenMP/MKL) threads.
WORKERS ?= 2
THREADS ?= 1
reproduce: install
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(PY) -m xailib.reproduce --profile $(PROFILE) \
		--device $(DEVICE) --only '$(ONLY)' $(if $(filter-out 0,$(WORKERS)),--workers $(WORKERS))

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

# The explorers as a Voila app: smoke-profile copies (fast to start) of the two explorer notebooks under build/demo,
# served on 127.0.0.1 only; open http://127.0.0.1:$(DEMO_PORT)/ (or .../voila/render/gap/03_explorer.ipynb). Each
# page view runs its own kernel; Voila 0.5 fails to stop it when the tab closes (voila#1458), so kernels without a
# page are culled after 5 idle minutes. tests/test_demo_browser.py starts the same server.
DEMO_DIR := build/demo
DEMO_PORT ?= 8866
demo: install
	$(PY) -m xailib.reproduce --prepare-smoke $(DEMO_DIR) --only 'gap/03_explorer,mace/05_explore,explainer/03_explore'
	$(VENV)/bin/voila $(DEMO_DIR) --no-browser --port=$(DEMO_PORT) --Voila.ip=127.0.0.1 \
		--MappingKernelManager.cull_idle_timeout=300 --MappingKernelManager.cull_interval=60

models: install
	$(PY) -m xailib.models.train --tier $(TIER) --only '$(MODELS)'

# The additive explainer's performers (xailib/explainer/checkpoints): ONLY= a glob over their names,
# e.g. make performers ONLY='vgg-m-*-icnn'
performers: install
	$(PY) -m xailib.explainer.performers --only '$(ONLY)'

bench: install
	$(PY) benchmarks/run_all.py

# Binder's install, checked here: a fresh venv from binder/'s files alone (requirements.txt, then postBuild, as
# repo2docker runs them; apt.txt is Binder's apt), then the smoke notebooks under nbval in it. PIP_RETRIES=0: the
# CPU-torch index named in requirements.txt is out of reach here, and pip would retry it for every package.
BINDER_VENV := build/binder-venv
binder-check:
	rm -rf $(BINDER_VENV) build/binder-nbval
	$(PYTHON) -m venv $(BINDER_VENV)
	PIP_RETRIES=0 $(BINDER_VENV)/bin/pip install -q --upgrade pip
	PIP_RETRIES=0 $(BINDER_VENV)/bin/pip install -q -r binder/requirements.txt
	PATH="$(CURDIR)/$(BINDER_VENV)/bin:$$PATH" bash binder/postBuild
	$(BINDER_VENV)/bin/python -m xailib.reproduce --prepare-smoke build/binder-nbval
	$(BINDER_VENV)/bin/python -m pytest -q --nbval-lax -p no:cacheprovider build/binder-nbval
	@echo "binder-check: binder/requirements.txt + postBuild build an environment that runs every smoke notebook"

clean:
	rm -rf build .pytest_cache
