#!/usr/bin/env python
"""Score NIfTI label maps from any tool against references; same as ``brainseg-evaluate``.

Needs the package importable (``pip install -e .``); see ``--help``.
"""

from brainseg_d2.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
