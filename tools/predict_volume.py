#!/usr/bin/env python
"""Predict whole-volume label maps; same as ``brainseg-predict``.

Needs the package importable (``pip install -e .``); see ``--help``.
"""

from brainseg_d2.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
