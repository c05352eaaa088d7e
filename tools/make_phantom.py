#!/usr/bin/env python
"""Write built-in MRI phantom cases; same as ``brainseg-phantom``.

Needs the package importable (``pip install -e .``); see ``--help``.
"""

from brainseg_d2.cli.phantom import main

if __name__ == "__main__":
    raise SystemExit(main())
