"""Guards for commands that write, replace or delete: the user's input is never touched.

Two rules, shared by the converter, the predictor, the phantom generator, the
demo and the report:

* an output must not be, contain, or lie inside an input
  (:func:`check_not_input`); paths are compared both as written (absolute) and
  with symbolic links resolved;
* a folder is replaced or deleted only if the tool wrote it, which it records
  with a marker file inside (:func:`check_replaceable`, :func:`write_marker`).
  A finished folder's marker lists every file and folder the tool wrote, so a
  file the user added later (notes, a result of another tool) stops the
  replacement instead of being deleted with it. An unfinished one (a work
  folder, an interrupted run) is the tool's as a whole.
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


def is_empty_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder (not a link) holding nothing: taking its place loses nothing."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


_UNFINISHED = "unfinished"


def _entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (folders end in ``/``), links not followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in dirs:
            path = (rel / name).as_posix()
            # A link to a folder is an entry of its own; os.walk does not enter it.
            found.append(path if (Path(root) / name).is_symlink() else path + "/")
        found.extend((rel / name).as_posix() for name in files)
    return sorted(found)


def write_marker(
    folder: str | os.PathLike, marker: str, tool: str, *, finished: bool = True
) -> None:
    """Write the marker file that lets ``tool`` replace ``folder`` later.

    Args:
        folder: a folder ``tool`` wrote.
        marker: the marker's file name.
        tool: the command, named in the marker and in later errors.
        finished: list everything now in ``folder`` as the tool's (call it once
            the folder is complete); False marks a folder still being written,
            which the tool may replace as a whole.
    """
    folder = Path(folder)
    if not finished:
        text = (f"written by {tool} ({_UNFINISHED}); it replaces this folder only while this "
                "file is here\n")
    else:
        text = _listing(
            f"written by {tool}; it replaces this folder only while this file is here and the "
            "folder holds nothing but the entries below",
            [e for e in _entries(folder) if e != marker],
        )
    (folder / marker).write_text(text, encoding="utf-8")


def _listing(header: str, entries: Iterable[str]) -> str:
    """A marker's text: the header line, then one entry a line."""
    return header + "\n" + "".join(f"{e}\n" for e in entries)


def has_marker(folder: str | os.PathLike, marker: str) -> bool:
    """Whether ``folder`` is a folder holding ``marker`` (a regular file, not a link)."""
    path = Path(folder) / marker
    return Path(folder).is_dir() and path.is_file() and not path.is_symlink()


def foreign_entry(folder: str | os.PathLike, marker: str) -> str | None:
    """The first entry of ``folder`` that its marker does not list, or None.

    A marker of an unfinished folder lists nothing and claims the whole folder
    (None); a finished one claims only the entries it lists.
    """
    folder = Path(folder)
    lines = _marker_lines(folder, marker)
    if lines and f"({_UNFINISHED})" in lines[0]:
        return None
    ours = set(lines[1:]) | {marker}
    return next((e for e in _entries(folder) if e not in ours), None)


def check_replaceable(folder: str | os.PathLike, marker: str, tool: str, what: str) -> None:
    """Raise unless ``folder`` is missing, or holds ``marker`` and nothing ``tool`` did not write.

    Raises:
        OutputError: naming the folder, and the marker or the first entry that
            is not the tool's.
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
    extra = foreign_entry(folder, marker)
    if extra is not None:
        raise OutputError(
            f"{what} {os.path.abspath(folder)} holds {extra}, which {tool} did not write; "
            "nothing was replaced: move it out, or choose another path"
        )


def _marker_lines(folder: Path, marker: str) -> list[str]:
    """The marker's header, then the entries it lists; nothing without a marker."""
    if not has_marker(folder, marker):
        return []
    return (folder / marker).read_text(encoding="utf-8", errors="replace").splitlines()


def check_own_files(
    folder: str | os.PathLike, names: Iterable[str], marker: str, tool: str, what: str
) -> None:
    """Raise if ``tool`` writing ``names`` into ``folder`` would replace a file it did not write.

    For commands that write a few named files into a folder that may hold other
    things: a file of those names is replaced only if ``folder``'s marker lists
    it (:func:`record_own_files`). Other files in the folder are never touched.

    Raises:
        OutputError: ``folder`` is a file, or holds one of ``names`` not listed, or
            listed but now a link or a folder.
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{what} {os.path.abspath(folder)} exists and is not a folder; "
                          "nothing was written: choose another path")
    ours = set(_marker_lines(folder, marker)[1:])
    for name in names:
        path = folder / name
        if not os.path.lexists(path):
            continue
        if name not in ours:
            raise OutputError(
                f"{what} {os.path.abspath(folder)} holds {name}, which {tool} did not write; "
                "nothing was written: choose another folder, or move it out"
            )
        if path.is_symlink() or not path.is_file():  # writing would follow the link
            raise OutputError(
                f"{what} {os.path.abspath(folder)} holds {name}, which is now a link or a "
                f"folder, not the file {tool} wrote; nothing was written: move it out"
            )


def record_own_files(
    folder: str | os.PathLike, names: Iterable[str], marker: str, tool: str
) -> None:
    """List ``names`` (with those listed before) in ``folder``'s marker as ``tool``'s files."""
    folder = Path(folder)
    listed = sorted(set(_marker_lines(folder, marker)[1:]) | set(names))
    header = f"written by {tool}; it replaces only the entries below, while this file is here"
    (folder / marker).write_text(_listing(header, listed), encoding="utf-8")
