# ccproxy developer loop. `make run` starts the server, `make test` runs the whole suite (setting up first).
VENV ?= .venv
PY := $(VENV)/bin/python
CLIENTS := .clients
CLAUDE_CODE_VERSION := 2.1.331
CODEX_VERSION := 0.169.0
ARGS ?=

.PHONY: setup clients compat-venvs test test-unit test-e2e lint format typecheck pre-commit ci run mock bench bench-tools bench-check clean

# Debian's chromium drives the dashboard's browser tests (tests/dashboard); they skip where it is missing.
setup: $(VENV)/.installed
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium not installed (needs root and apt-get): the dashboard browser tests will skip"

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[all,dev]'
	touch $@

# The real Claude Code and Codex CLIs, for the end-to-end tests (npm registry only; nothing global).
clients: $(CLIENTS)/.installed

$(CLIENTS)/.installed: Makefile
	npm install --no-audit --no-fund --prefix $(CLIENTS)/npm \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) @openai/codex@$(CODEX_VERSION)
	touch $@

# The client libraries of the compatibility suite (tests/compat), in venvs of their own (conflicting pins);
# the suite also builds them on first use.
compat-venvs: setup
	$(PY) -c "import sys; sys.path.insert(0, 'tests/compat'); import conftest; [conftest.compat_python(n) for n in conftest.VENVS]"

test: setup clients compat-venvs
	$(PY) -m pytest -q $(ARGS)

test-unit: setup
	$(PY) -m pytest -q -m "not e2e" $(ARGS)

test-e2e: setup clients compat-venvs
	$(PY) -m pytest -q -m e2e $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: setup
	$(VENV)/bin/mypy

# The hooks of .pre-commit-config.yaml (ruff check, ruff format, mypy) on every file.
pre-commit: setup
	$(VENV)/bin/pre-commit run --all-files

ci: lint typecheck test

run: setup
	$(VENV)/bin/ccproxy serve $(ARGS)

mock: setup
	$(VENV)/bin/ccproxy serve --mock $(ARGS)

# The references and the load generator the benchmark compares against: nginx, wrk and valgrind from
# Debian's packages, installed where missing (root and apt-get); without them the report says what it skipped.
bench-tools:
	@missing=""; for tool in nginx:nginx-light wrk:wrk valgrind:valgrind; do \
		command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	[ -z "$$missing" ] || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && apt-get install -y -qq $$missing; } \
		|| echo "not installed:$$missing (needs root and apt-get): the benchmark skips what needs them"

bench: setup bench-tools
	$(PY) -m bench $(ARGS)
	$(PY) -m bench.sdk

bench-check: setup bench-tools
	$(PY) -m bench --quick --check bench/baseline.json $(ARGS)

clean:
	rm -rf $(VENV) $(CLIENTS) .mypy_cache .ruff_cache .pytest_cache
