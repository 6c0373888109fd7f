# The two commands that matter: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-unit bench lab-up lab-down clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/xdpkit demo
	$(VENV)/bin/xdpkit lb demo
	$(VENV)/bin/xdpkit forward demo
	$(VENV)/bin/xdpkit agent --demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/run.py

test-unit: setup
	$(PY) -m pytest -q tests/unit

lab-up: setup
	$(VENV)/bin/xdpkit lab up

lab-down: setup
	$(VENV)/bin/xdpkit lab down

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
