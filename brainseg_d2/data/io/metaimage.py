"""MetaImage (``.mhd``) headers: the data file a header names, checked before ITK reads it.

ITK prints its own "Cannot open data file" line to stderr and then fails with a
stale errno, which reads as a truncated file; naming the missing file is clearer.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["missing_data_file"]

#: The header's last field; LOCAL (data follows, as in .mha) and LIST / patterns
#: (several files) are left to ITK.
_DATA_FILE = re.compile(rb"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.M)


def missing_data_file(path: Path) -> Path | None:
    """The data file a ``.mhd`` header names, if it does not exist; else None.

    Other files, and headers whose data lie inline or in several files, give None.
    """
    if path.suffix.lower() != ".mhd" or not path.is_file():
        return None
    with path.open("rb") as f:
        head = f.read(16384)
    m = _DATA_FILE.search(head)
    if m is None:
        return None
    name = m.group(1).decode("utf-8", "replace")
    if name.upper() == "LOCAL" or name.upper().startswith("LIST") or "%" in name:
        return None
    data = path.parent / name
    return None if data.exists() else data
