# conveyor: `make demo` and `make test` are all a newcomer needs; both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the server the test suite uses: the same default as tests/conftest.py
PG_URL := $(or $(CONVEYOR_TEST_DATABASE_URL),postgresql://postgres@127.0.0.1:5432/postgres)

.DEFAULT_GOAL := help
.PHONY: help venv demo test bench chaos lint clean
.PHONY: soak screenshot

help:
	@echo "make demo    create .venv if needed, then a worker, example jobs and the dashboard on SQLite (Ctrl-C stops)"
	@echo "make test    create .venv if needed, then run the whole suite on SQLite and PostgreSQL"
	@echo "make bench   enqueue/drain/wake-up numbers on each store"
	@echo "make chaos   20,000 jobs on each store while workers are SIGKILLed: lost and dead must be 0"
	@echo "make soak    mixed jobs for SOAK_MINUTES (10) on each store under kills: violations must be 0"
	@echo "make lint    ruff, mypy (strict) and the import layers (import-linter)"
	@echo "make clean   remove .venv, caches and demo files"

venv: $(STAMP)

# re-installed only when pyproject.toml changes
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "conveyor needs Python 3.11 or newer; try: make PYTHON=python3.12 ...")'
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# the README's picture of the dashboard, taken by the browser tests' own run
screenshot: venv
	CONVEYOR_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/browser -k "overview_draws and sqlite"

demo: venv
	$(BIN)/conveyor demo --keep-running

define PG_CHECK
import os, re, sys
url = sys.argv[1]
shown = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
try:
    import psycopg
    psycopg.connect(url, connect_timeout=3).close()
except Exception as e:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    fate = "FAIL (CI is set)" if os.environ.get("CI") else "be SKIPPED"
    print(f"make test: PostgreSQL does not answer at {shown}: {reason}", file=sys.stderr)
    print(f"  The SQLite half of the suite runs; the PostgreSQL tests will {fate}.", file=sys.stderr)
    print("  To run them, start PostgreSQL on 127.0.0.1:5432 with a 'postgres' user (trust auth),", file=sys.stderr)
    print("  e.g.  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16", file=sys.stderr)
    print("  or set CONVEYOR_TEST_DATABASE_URL to a server where you may CREATE DATABASE.", file=sys.stderr)
else:
    print(f"make test: PostgreSQL answers at {shown}; the suite runs on SQLite and PostgreSQL")
endef
export PG_CHECK

test: venv
	@$(BIN)/python -c "$$PG_CHECK" "$(PG_URL)"
	$(BIN)/pytest -q

# The benchmark has a virtualenv of its own, so the peers (Celery, RQ, ...) never enter conveyor's
# dependencies: conveyor from this checkout (with the dashboard, timed by --only dashboard) plus
# bench/requirements.txt; re-installed when either changes.
# BENCH_ARGS passes options through, e.g.  make bench BENCH_ARGS="--quick --only conveyor,celery"
BENCH_VENV := bench/.venv
BENCH_STAMP := $(BENCH_VENV)/.installed
.PHONY: bench-venv

bench-venv: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "conveyor needs Python 3.11 or newer; try: make PYTHON=python3.12 ...")'
	@test -x $(BENCH_VENV)/bin/python || { echo "creating $(BENCH_VENV) with $(PYTHON)"; $(PYTHON) -m venv $(BENCH_VENV); }
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[postgres,dashboard]' -r bench/requirements.txt
	@touch $(BENCH_STAMP)

bench: bench-venv
	$(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)

chaos: venv
	$(BIN)/python -m bench.chaos --store sqlite --jobs 20000
	$(BIN)/python -m bench.chaos --store postgres --jobs 20000

# SOAK_MINUTES=1 for a quick try; each store also drains (long jobs: a minute or two more)
SOAK_MINUTES ?= 10

soak: venv
	$(BIN)/python -m bench.soak --store sqlite --minutes $(SOAK_MINUTES)
	$(BIN)/python -m bench.soak --store postgres --minutes $(SOAK_MINUTES)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy conveyor
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	rm -f conveyor-demo.db conveyor-demo.db-wal conveyor-demo.db-shm
	find conveyor tests -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf bench/__pycache__
