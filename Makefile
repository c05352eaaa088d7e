# The two README commands: `make demo` (main job, end to end) and `make test`.
# Both run scripts/setup.sh first, which is a no-op once the venv is complete.
# VENV picks the venv (CI: `make test VENV=.venv-src` with BRAINSEG_D2_DETECTRON2_SOURCE
# set tests a source build of Detectron2 beside the default fallback in .venv).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint env clean-venv

setup:
	@BRAINSEG_D2_VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(PY) tools/run_demo.py $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

env: setup
	$(PY) -m brainseg_d2.env

clean-venv:
	rm -rf $(VENV)
