# The two set-up commands of the README: `make demo` and `make test`. Both create .venv and install first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=
# `make test` runs the tests in parallel processes (pytest-xdist): one per CPU, at most 4; a process that runs out
# of tests takes over another's queued ones (worksteal). Most tests wait on subprocesses, servers and sockets, so two
# processes on 2 cores take about half the time of one. PYTEST_WORKERS=0 runs them all in this process.
PYTEST_WORKERS ?= auto
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# torch's OpenMP threads stall one another on a CPU shared with other work when they spin while waiting
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install system-deps nltk-data demo lint test test-fast clean

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r requirements.lock
	$(PIP) install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

# Debian packages the tests use (PostgreSQL, WordNet, Chromium, docker-compose, Node.js); installs only what is missing.
system-deps:
	bash .ci/system-deps.sh

# WordNet (copied from Debian's wordnet-base/wordnet-sense-index) and the POS tagger, into AUGLOOP_NLTK_DATA or
# $(VENV)/nltk_data; offline, idempotent (copies only what is missing).
nltk-data: install
	$(PY) -m workers.augment.wordnet_data install

demo: install
	bash .ci/system-deps.sh wordnet
	$(MAKE) nltk-data
	$(PY) -m augloop demo

# Static checks, first in `make test` so that they cannot rot: ruff's lint rules, ruff's formatting, and mypy
# --strict over core/, db/, services/ and trainer/ (configured in pyproject.toml).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The 15 slowest tests are printed last: CI must stay under 30 minutes on 2 cores.
test: lint system-deps nltk-data
	@set +e; $(PY) -m pytest -n $(PYTEST_WORKERS) --maxprocesses=4 --dist worksteal --durations=15 $(PYTEST_ARGS); \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test-fast: install
	$(PY) -m pytest -m "not postgres and not browser and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
