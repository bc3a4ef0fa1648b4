# The two commands a new user runs: `make demo` and `make test`. Both install into .venv if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Use the shared MNIST copy when it sits beside the checkout; otherwise the loader searches
# ~/.cache/infinimodal, downloads where it can, or falls back to a packaged subset.
ifeq ($(INFINIMODAL_DATA),)
ifneq ($(wildcard ../shared/data/mnist),)
export INFINIMODAL_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: install chromium demo test test-slow lint docs bench bench-polymnist clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: the local CPU build. Anything installed later that accepts 2.13.0 keeps it.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m infinimodal.demo

# pyflakes and syntax errors ([tool.ruff] in pyproject.toml), then the package's types ([tool.mypy]);
# tests/test_structure.py runs both too
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks docs/hooks.py
	$(VENV)/bin/mypy

# The documentation site (MkDocs Material) from docs/ into site/: the command-line reference is generated from the
# parser at every build (docs/hooks.py), the API reference from the docstrings; --strict fails on a broken link.
docs: install
	$(PY) -m mkdocs build --strict -d site

# The report's browser test opens pages in headless Chromium (Debian package chromium): installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=""; if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y --no-install-recommends chromium >/dev/null \
	  || { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends chromium >/dev/null; }; }

# Two workers (pytest-xdist), each test file on one of them so that a file's trained fixtures are built once.
test: install chromium
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

test-slow: install
	$(PY) -m pytest -q -m slow

# Speed against MultiVae (installed into its own .venv-multivae on first use), against the number of modalities, the share of
# the matmul rate, IWAE throughput: JSON into runs/bench, then docs/benchmarks.md from it (about 20 minutes on 2 cores).
bench: install
	mkdir -p runs/bench
	$(PY) benchmarks/vs_multivae.py --out runs/bench/vs_multivae.json
	$(PY) benchmarks/vs_multivae.py --data mfeat --aggregators mopoe --out runs/bench/vs_multivae_mfeat.json
	$(PY) benchmarks/vs_multivae.py --data mfeat --aggregators mopoe --mopoe-kl sticks-sampled --out runs/bench/vs_multivae_mfeat_sticks.json
	$(PY) benchmarks/vs_multivae.py --data mfeat --aggregators mopoe --mopoe-kl sampled --out runs/bench/vs_multivae_mfeat_sampled.json
	$(PY) benchmarks/scaling.py --out runs/bench/scaling.json
	$(PY) benchmarks/throughput.py > runs/bench/throughput.json
	$(PY) benchmarks/compile.py > runs/bench/compile.json
	$(PY) benchmarks/benchmarks_md.py runs/bench > docs/benchmarks.md
	$(PY) benchmarks/kumaraswamy_kl_accuracy.py
	$(PY) benchmarks/kumaraswamy_product_error.py
	$(PY) benchmarks/fusion_memory.py

# PolyMNIST-5 with the MoPoE paper's protocol: about 8 minutes of training per model on one modern GPU
# (ACCELERATOR=cpu with ARGS=--toy for a few minutes' toy run on the CPU).
ACCELERATOR ?= auto
bench-polymnist: install
	$(PY) benchmarks/polymnist.py --accelerator $(ACCELERATOR) --out runs/polymnist $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache site
