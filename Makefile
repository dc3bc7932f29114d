# Everything the project needs is installed here, into .venv, from the package registry.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

LOCK := requirements.lock
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2

.PHONY: demo test lint bench bench-service clean lock

# Exact versions with hashes from the lock file (pip, setuptools and wheel included), then the
# project itself, built by those pinned setuptools (no build isolation, nothing resolved anew).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)  ## the main job: margin a realistic strategy book under every model
	$(BIN)/margin-engine demo

# Browser tests drive Debian's chromium (no browser is downloaded at run time).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get install -y --no-install-recommends chromium || \
		(apt-get update && apt-get install -y --no-install-recommends chromium)

test: $(STAMP) $(CHROMIUM)  ## the whole test suite: lint, strict typing, tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

bench: $(STAMP)  ## the acceptance benchmark (not part of the test suite)
	$(BIN)/margin-engine bench --accounts 1000000 --positions 10

# The service load test drives Debian's wrk (C, loopback only; the script falls back to its own
# asyncio client without it, which takes CPU from the server on this 2-core machine).
WRK := /usr/bin/wrk

$(WRK):
	apt-get install -y --no-install-recommends wrk || \
		(apt-get update && apt-get install -y --no-install-recommends wrk)

bench-service: $(STAMP) $(WRK)  ## bounded loopback load test of the what-if endpoint
	$(BIN)/python benchmarks/service_load.py --seconds 10 --connections 4 --workers 2

lock:  ## regenerate the lock file from pyproject.toml's ranges (PyPI only, with hashes)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(PIP_TOOLS)
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(LOCK_VENV)/bin/pip-compile --quiet \
		--generate-hashes --allow-unsafe --strip-extras --extra test \
		--index-url https://pypi.org/simple --no-emit-index-url \
		--output-file $(LOCK) pyproject.toml requirements-build.in

clean:
	rm -rf $(VENV) $(LOCK_VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
