# Two commands for a fresh machine: `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.transferkit-installed

.PHONY: setup browser demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# One torch thread per process (2 worker processes) and CPU kernels capped at AVX2: the README's
# table does not depend on the CPU's native kernels (docs/scale.md, "Same numbers on another machine").
demo: setup
	OMP_NUM_THREADS=1 $(BIN)/transferkit demo --workers 2 --portable-kernels

# Headless Chromium for the report test; the test is skipped (with a message) when it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium could not be installed: the browser test will be skipped"; }

# Two pytest processes (pytest-xdist) of one torch thread each: on 2 cores the suite takes about
# 4 to 10 minutes this way (by machine), 18 in one process of 2 threads (its tiny networks gain little from a second thread).
test: setup browser
	$(BIN)/ruff check transferkit tests
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff check transferkit tests

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
