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

test: install-test  # everything but the GPU check script's CPU dry run (make test-all runs that too)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not device_script"

test-all: install-test
	HF_HUB_OFFLINE=1 $(PY) -m pytest

test-quick: install-test  # skips the tests marked slow (end-to-end suites, large transformers)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) demo_out *.egg-info
