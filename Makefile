# The two README commands: `make demo` (main job, end to end) and `make test`.
# Both run scripts/setup.sh first, which is a no-op once the .venv is complete.
PY := .venv/bin/python

.PHONY: setup demo test lint env clean-venv

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) tools/run_demo.py $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

env: setup
	$(PY) -m brainseg_d2.env

clean-venv:
	rm -rf .venv
