# ddbook: `make book` builds the HTML book, `make test` runs the test suite.
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
STAMP := $(VENV)/.installed

.PHONY: book test bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

bench: $(STAMP)
	$(PY) -m ddlib bench

clean:
	rm -rf _build results
