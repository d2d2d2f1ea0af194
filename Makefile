# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# torch/torchvision pair that is satisfiable offline on the project's machines (see README).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install install-test demo lint test test-all test-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PIP) install -q $(TORCH_PINS)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/sclft train --backbone efficientnet_lite0 --data digits --strategy scl_ft --layer auto --image-size 64 --epochs 10 --overwrite --out demo_out

lint: install-test  # ruff: the [tool.ruff] section of pyproject.toml
	$(VENV)/bin/ruff check sclft tests benchmarks scripts

# pytest-xdist: TEST_WORKERS processes, each test file in one of them (its module fixtures built once), one
# thread each (OMP_NUM_THREADS=1; more threads per worker oversubscribe the cores): on 2 cores ~3.5 min, not ~5
TEST_WORKERS ?= 2
PYTEST := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test: install-test  # everything but the GPU check script's CPU dry run (make test-all runs that too)
	$(PYTEST) -m "not device_script"

test-all: install-test
	$(PYTEST)

test-quick: install-test  # skips the tests marked slow (end-to-end suites, large transformers)
	$(PYTEST) -m "not slow"

clean:
	rm -rf $(VENV) demo_out *.egg-info
