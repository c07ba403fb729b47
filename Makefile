# The two commands: `make run` and `make test`. Both set up everything first
# (virtualenv, dependencies, database, demo users) and are safe to repeat.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APP_ADDR ?= 127.0.0.1:8000
API_ADDR ?= 127.0.0.1:8001
# pytest-xdist, three workers per core (`-n auto`: tests/conftest.py), one file per worker
# at a time so a module's servers start once, handed out longest first
# (--no-loadscope-reorder keeps that order instead of xdist's "most tests first").
# PYTEST_ARGS="-k login" picks tests and runs them in one process. 289 s for 2,032
# tests on the quiet 2-core VM, from a fresh clone (docs/testing.md).
PYTEST_ARGS ?= -n auto --dist loadfile --no-loadscope-reorder

.PHONY: run test setup lint clean soak bench mutate mutate-clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py seed_demo_users --quiet

# Ctrl-C, or either server exiting, stops both (see scripts/run_dev.py).
run: setup
	@echo
	@echo "  Web app:           http://$(APP_ADDR)/"
	@echo "  Reference auth API: http://$(API_ADDR)/  (POST /auth/login, /auth/refresh, /auth/logout; GET /users/me)"
	@echo
	@$(PY) manage.py seed_demo_users
	@echo
	@echo "  Ctrl-C stops both."
	@echo
	@$(PY) scripts/run_dev.py $(APP_ADDR) $(API_ADDR)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Soak with faults and the benchmark (bench/README.md); SOAK_ARGS / BENCH_ARGS to tune.
# Both run in each AUTH_TOKEN_STORAGE mode (cookies, then session) and print both;
# --token-storage cookies|session runs one. --seconds is each soak mode's length.
SOAK_ARGS ?= --users 30 --seconds 120
BENCH_ARGS ?=
soak: setup
	$(PY) bench/soak.py $(SOAK_ARGS)

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

# Mutation testing: mutmut on the modules and in-process tests named in
# pyproject.toml [tool.mutmut], then the killed share per module and every
# survivor (bench/mutation_report.py). It runs in sittings: mutants/ keeps each
# mutant's result, and a run tests only mutants without one (new, or in a
# function whose source changed). MUTATE_ARGS="accounts.throttle.*" tests those
# mutants again (after adding tests, say) and reports only them;
# MUTATE_FAIL_UNDER=90 fails if any reported module kills less. MUTATE_FRESH=1
# (or `make mutate-clean`) starts from an empty mutants/.
MUTATE_ARGS ?=
MUTATE_CHILDREN ?= $(shell nproc)
MUTATE_FAIL_UNDER ?=
mutate: $(STAMP)
	$(if $(MUTATE_FRESH),rm -rf mutants)
	mkdir -p mutants/.originals && cp accounts/*.py mutants/.originals/  # line numbers for the report
	$(VENV)/bin/mutmut run --max-children $(MUTATE_CHILDREN) $(MUTATE_ARGS)
	$(PY) bench/mutation_report.py $(if $(MUTATE_FAIL_UNDER),--fail-under $(MUTATE_FAIL_UNDER)) $(MUTATE_ARGS)

mutate-clean:
	rm -rf mutants

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) db.sqlite3* staticfiles .pytest_cache .ruff_cache mutants
