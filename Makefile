# ddbook: `make book` builds the HTML book, `make test` runs the test suite.
# Both create the virtual environment .venv on first use.
#
#   make book                          the `cpu` profile on the synthetic data (default)
#   make book PROFILE=smoke            seconds; what CI checks
#   make book PROFILE=paper DATASETS=cifar100,...   on a GPU
#   make test                          unit tests + nbval of every committed notebook
#   make test-fast                     the unit tests not marked slow (the edit-test loop)
#   make check-book                    smoke book + every page opened in headless Chromium
#   make sweep                         only the experiment runs (papermill, resumable)
#   make notebooks                     re-execute the committed notebooks in place (smoke)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
DATASETS ?= synthetic
RESULTS ?= results
SWEEP_FLAGS ?=
STAMP := $(VENV)/.installed
# Committed notebooks: the experiments and the book's own pages (not the executed runs).
NOTEBOOKS = $(wildcard notebooks/*.ipynb) $(filter-out book/runs/%,$(wildcard book/*.ipynb))
# nbval runs the cells; tests/notebook_check.py decides what a difference is (-p).
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p notebook_check
BUILD_ENV := DDBOOK_PROFILE=$(PROFILE) DDBOOK_DATASETS=$(DATASETS) TQDM_DISABLE=1

.PHONY: book test test-fast unit nbval check-book sweep notebooks bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The experiment notebooks through papermill into book/runs/ (one page per method; a job whose
# executed notebook and results are current is skipped, and runs resume inside ddlib).
sweep: $(STAMP)
	$(PY) -m ddlib sweep --profile $(PROFILE) --datasets $(DATASETS) \
	  --results-dir $(RESULTS) --out book/runs $(SWEEP_FLAGS)

# Sweep, drop the execution cache if results/ddlib/profile changed (it cannot see them), build.
# -W turns a failing notebook into a failed build; the execution reports say why. The log
# leaves out what tells its reader nothing: ipykernel's note, once per executed page, that
# its local sockets are unencrypted, and MyST's dump of its whole configuration.
BUILD_NOISE := -e 'Kernel is running over TCP without encryption' -e 'ParserConfig('
book: sweep
	$(PY) -m ddlib book-cache --profile $(PROFILE) --datasets $(DATASETS) --results-dir $(RESULTS)
	@mkdir -p _build
	{ $(BUILD_ENV) $(VENV)/bin/jupyter-book build . -W -n --keep-going 2>&1; \
	  echo $$? > _build/.build-status; } | grep --line-buffered -v -F $(BUILD_NOISE); \
	test "$$(cat _build/.build-status)" = 0 \
	  || { for f in _build/html/reports/*.log; do test -f "$$f" && { echo "== $$f"; cat "$$f"; }; done; exit 1; }
	@echo "open _build/html/index.html"

test: unit nbval

# The edit-test loop: everything but the end-to-end runs, papermill and subprocesses
# (tests marked `slow`), under a minute on one idle core.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" tests

unit: $(STAMP)
	$(PY) -m pytest tests

# nbval re-runs every committed notebook and compares its outputs by the rule of
# tests/notebook_check.py: trained numbers within their measured tolerance, the rest exact.
# The smoke sweep first fills the results store (side by side), so exhibit pages find their
# inputs; its executed copies go to _build/, leaving the book's run pages alone.
SMOKE_SWEEP := $(PY) -m ddlib sweep --profile smoke --datasets synthetic \
  --results-dir $(RESULTS) --out _build/test-runs

nbval: $(STAMP)
	$(SMOKE_SWEEP)
	DDBOOK_PROFILE=smoke DDBOOK_DATASETS=synthetic $(PY) -m pytest $(NBVAL) \
	  notebooks book --ignore=book/runs

check-book: $(STAMP)
	$(MAKE) book PROFILE=smoke DATASETS=synthetic
	$(PY) tests/check_book.py _build/html --toc _toc.yml

# Re-execute in place (on a filled smoke store, as nbval), then say per notebook what moved
# beyond the rule (and how many trained numbers moved within it): results, or float noise.
notebooks: $(STAMP)
	$(SMOKE_SWEEP)
	rm -rf _build/committed && mkdir -p _build/committed
	cp --parents $(NOTEBOOKS) _build/committed/
	$(PY) -m ddlib sweep --in-place $(NOTEBOOKS)
	$(PY) tests/notebook_check.py _build/committed .

# Step rates in fp32 and bf16, eager and compiled, then one cpu-profile iCaRL+DD run through
# our engine (eager, then compiled) and through a toolbox-style loop, and where the seconds
# go (benchmarks/cpu-bench.json).
# BENCH_FLAGS=--quick: 2 epochs per training stage; --threads 1: one core.
BENCH_FLAGS ?=
bench: $(STAMP)
	$(PY) -m ddlib bench --e2e --compile --json benchmarks/cpu-bench.json $(BENCH_FLAGS)

clean:
	rm -rf _build results book/runs
