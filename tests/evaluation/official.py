"""The official BraTS scorers, for the cross-checks that compare against them.

``panoptica`` and ``brats-evaluation`` pin numpy < 2.3, so they live in their own
environment (``make test-official``, run by ``.ci/run``), not in the project's
venv. There, ``BRAINSEG_D2_REQUIRE_OFFICIAL=1`` makes a missing package a
failure instead of a skip, so CI cannot pass without running the cross-checks.
"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRE_ENV = "BRAINSEG_D2_REQUIRE_OFFICIAL"


def import_official(name: str):
    """Import ``name``; skip the test if it is missing, fail if it is required."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{name} is required ({REQUIRE_ENV}=1) but cannot be imported: {e}")
        pytest.skip(f"{name} is not installed (make test-official runs this check)")
