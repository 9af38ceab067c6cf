# The two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make demo` needs only the package: the test tools (mypy, ruff, hypothesis, ...) would
# double its first run. Installing them also counts as the package's install.
DEMO_STAMP := $(VENV)/.installed-package
LINT_PATHS := thespian_cluster tests examples $(wildcard bench)

.PHONY: demo test lint unit integration wheel-check bench bench-quick clean

define install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '$(1)'
endef

$(STAMP): setup.cfg pyproject.toml
	$(call install,.[test])
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): setup.cfg pyproject.toml
	$(call install,.)
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/thespian-cluster demo

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -p no:cacheprovider -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

# The package as users get it: a wheel of this checkout in a fresh venv, and the demo
# from it (part of `make test`; tests/packaging/wheel.py says how it stays fast).
wheel-check: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q tests/packaging tests/cluster/test_demo.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
