#!/usr/bin/env python
"""Score any tool's label maps (NIfTI, MHA, NRRD) against references, as ``brainseg-evaluate``.

Needs the package importable (``pip install -e .``); see ``--help``.
"""

from brainseg_d2.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
