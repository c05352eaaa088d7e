"""Guards for commands that write, replace or delete: the user's input is never touched.

Two rules, shared by the converter, the predictor, the phantom generator, the
demo and the report:

* an output must not be, contain, or lie inside an input
  (:func:`check_not_input`); paths are compared both as written (absolute) and
  with symbolic links resolved;
* a folder is replaced or deleted only if the tool wrote it, which it records
  with a marker file inside (:func:`check_replaceable`, :func:`write_marker`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class OutputError(ValueError):
    """An output path would replace or delete something the tool did not write."""


def _forms(path: str | os.PathLike) -> set[Path]:
    absolute = Path(os.path.abspath(path))
    return {absolute, Path(os.path.realpath(absolute))}


def input_overlap(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]
) -> tuple[str, Path] | None:
    """How ``output`` overlaps the first input it overlaps.

    Args:
        output: a file or folder the command writes, replaces or deletes.
        inputs: files and folders the command reads (None entries are skipped).

    Returns:
        ``("is", input)``, ``("contains", input)`` or ``("lies inside", input)``,
        or None when ``output`` is clear of every input.
    """
    outs = _forms(output)
    for item in inputs:
        if item is None or str(item) == "":
            continue
        for inp in _forms(item):
            for out in outs:
                if out == inp:
                    return "is", Path(item)
                if out in inp.parents:
                    return "contains", Path(item)
                if inp in out.parents:
                    return "lies inside", Path(item)
    return None


def check_not_input(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None],
    what: str = "output",
) -> None:
    """Raise unless ``output`` is clear of every input (see :func:`input_overlap`).

    Args:
        output: a path the command writes, replaces or deletes.
        inputs: paths the command reads.
        what: how the output is named in the message (e.g. ``--out``).

    Raises:
        OutputError: one line naming both paths.
    """
    found = input_overlap(output, inputs)
    if found is not None:
        how, inp = found
        raise OutputError(
            f"{what} {os.path.abspath(output)} {how} the input {os.path.abspath(inp)}; "
            "nothing was written: choose an output outside the input"
        )


def write_marker(folder: str | os.PathLike, marker: str, tool: str) -> None:
    """Write the marker file that lets ``tool`` replace ``folder`` later."""
    (Path(folder) / marker).write_text(
        f"written by {tool}; it replaces this folder only while this file is here\n",
        encoding="utf-8",
    )


def has_marker(folder: str | os.PathLike, marker: str) -> bool:
    """Whether ``folder`` is a folder holding ``marker`` (a regular file, not a link)."""
    path = Path(folder) / marker
    return Path(folder).is_dir() and path.is_file() and not path.is_symlink()


def check_replaceable(folder: str | os.PathLike, marker: str, tool: str, what: str) -> None:
    """Raise unless ``folder`` is missing or holds ``marker`` (``tool`` wrote it).

    Raises:
        OutputError: naming the folder and the marker.
    """
    folder = Path(folder)
    if not os.path.lexists(folder):
        return
    if not folder.is_dir() or folder.is_symlink():
        raise OutputError(f"{what} {os.path.abspath(folder)} exists and is not a folder {tool} "
                          "wrote; nothing was replaced: choose another path")
    if not has_marker(folder, marker):
        raise OutputError(
            f"{what} {os.path.abspath(folder)} exists and was not written by {tool} (no {marker} "
            "file in it); nothing was replaced: choose another path or remove it yourself"
        )
