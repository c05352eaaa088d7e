# The two README commands: `make demo` (main job, end to end) and `make test`.
# Both run scripts/setup.sh first, which is a no-op once the venv is complete.
# VENV picks the venv (CI: `make test VENV=.venv-src` with BRAINSEG_D2_DETECTRON2_SOURCE
# set tests a source build of Detectron2 beside the default fallback in .venv).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-official lint env clean-venv

setup:
	@BRAINSEG_D2_VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(PY) tools/run_demo.py $(DEMO_ARGS)

# TEST_WORKERS: pytest-xdist processes (0 runs the suite in this one process). Each
# test file stays on one worker (--dist loadfile) so its module fixtures are built once.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Cross-checks against the official BraTS scorers (panoptica, brats-evaluation),
# which pin numpy < 2.3: their own venv, the project's code on PYTHONPATH, and a
# missing package is a failure there, not a skip.
OFFICIAL_VENV ?= .venv-official
OFFICIAL_TESTS := tests/evaluation/test_lesion_metrics.py tests/evaluation/test_nifti_evaluation.py
test-official:
	@test -x $(OFFICIAL_VENV)/bin/python || python3 -m venv $(OFFICIAL_VENV)
	$(OFFICIAL_VENV)/bin/python -m pip install -q -r tests/requirements-official.txt
	BRAINSEG_D2_REQUIRE_OFFICIAL=1 PYTHONPATH=$(CURDIR) $(OFFICIAL_VENV)/bin/python -m pytest -q \
		-p no:cacheprovider $(OFFICIAL_TESTS) -k "panoptica or brats_evaluation"

lint: setup
	$(PY) -m ruff check .

env: setup
	$(PY) -m brainseg_d2.cli.env

clean-venv:
	rm -rf $(VENV)
