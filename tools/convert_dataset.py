#!/usr/bin/env python
"""Convert MRI volumes into a COCO slice dataset; same as ``brainseg-convert``.

Needs the package importable (``pip install -e .``); see ``--help``.
"""

from brainseg_d2.cli.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
