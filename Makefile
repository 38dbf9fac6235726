# The two commands of the README: `make demo` and `make test`. Both set up what is missing first.
VENV := .venv
INPUT ?=

.PHONY: setup demo test test-slow bench

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/prefect-modify-video demo $(INPUT)

test: setup
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadgroup -m "not slow"

test-slow:
	@SETUP_BROWSER=1 bash scripts/setup.sh
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadgroup -m slow

bench: setup
	$(VENV)/bin/python bench/overhead.py
