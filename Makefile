# Two commands matter: `make demo` and `make test`. Everything else is what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py ledger/_merkle_accel.c | sha256sum | cut -c1-12)

.PHONY: demo test lint setup venv engine image bench audit clean images compose compose-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,acro]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

# Docker engine (Debian's docker.io, started in the background when none answers),
# PostgreSQL 15 for the test suite, and the offline-built runner image.
engine:
	bash scripts/ensure-system.sh

image: venv engine
	$(PY) -m containers.image ensure

setup: engine venv image

demo: setup
	$(PY) -m sandbox.demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_layering.py

# Two processes: the engine's suites on one, one after another (tests/conftest.py), the
# rest spread over both.
test: setup lint
	$(VENV)/bin/pytest -q -n 2 --dist loadgroup

bench: setup
	for b in bench/*.py; do m=$$(basename $$b .py); echo "== bench.$$m"; $(PY) -m bench.$$m || exit 1; done

# Needs the network (PyPI, the Debian mirror), so never part of `test`: known
# vulnerabilities, pending Debian security updates in the images, SBOMs in build/audit/.
# STRICT=1: fail (exit 2) when a source could not be checked. See docs/operations.md.
audit: venv
	PY=$(PY) bash scripts/audit.sh

# The controller, agent and PostgreSQL images, built offline like the runner image
# (docs/deployment.md).
images: venv engine image
	$(PY) -m containers.service_images ensure

# Debian's docker-compose, pinned.
compose:
	bash scripts/ensure-compose.sh

# Scenario 1 against PostgreSQL, a witness, the controller and three agents, each in a
# container of its own (scripts/deploy/compose.yaml); the stack is removed at the end.
compose-demo: images compose
	$(PY) -m sandbox.compose_demo

clean:
	rm -rf $(VENV) .venv-audit .pytest_cache .mypy_cache .ruff_cache
