"""What every layout shares: the case protocol, the error type, the folder walk, case
and patient ids."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from brainseg_d2.data.preprocess import PreprocessedVolume
    from brainseg_d2.labels import Target
    from brainseg_d2.structures import PreprocessOptions


class SourceError(ValueError):
    """Input folder or manifest cannot be turned into a list of cases."""


def check_input_dir(root: Path) -> None:
    """Raise :class:`SourceError` unless ``root`` is an existing, non-empty folder."""
    if not root.exists():
        raise SourceError(f"input folder {root} does not exist")
    if not root.is_dir():
        raise SourceError(f"input {root} is not a folder")
    if not any(root.iterdir()):
        raise SourceError(f"input folder {root} is empty")


def walk(root: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` in sorted order, following folder links, each real folder once.

    Datasets often live in shared storage with case folders linked in; a link
    that points back up the tree (or twice to one folder) is visited once.

    Args:
        root: folder to walk.

    Yields:
        ``(dirpath, dirnames, filenames)`` as ``os.walk``, names sorted.
    """
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        yield dirpath, dirnames, sorted(filenames)


def patient_of(case_id: str, patient_pattern: str | None) -> str:
    """The patient id of a case: group 1 (or the whole match) of ``patient_pattern``.

    Raises:
        SourceError: the case id does not match.
    """
    if not patient_pattern:
        return case_id
    match = re.search(patient_pattern, case_id)
    if not match:
        raise SourceError(f"case id '{case_id}' does not match patient pattern {patient_pattern!r}")
    return match.group(1) if match.groups() else match.group(0)


def case_error(case, exc: BaseException) -> str:
    """One-line message for a bad case, starting with ``case <id>:``."""
    msg = " ".join(str(exc).split())
    prefix = f"case {case.case_id}"
    return msg if msg.startswith(prefix) else f"{prefix}: {msg}"


C = TypeVar("C")


def sorted_unique(cases: Sequence[C]) -> list[C]:
    """Cases sorted by ``case_id``.

    Raises:
        SourceError: two cases share an id (naming the first file of each).
    """
    seen: dict[str, C] = {}
    for case in cases:
        if case.case_id in seen:
            first = seen[case.case_id]
            raise SourceError(
                f"duplicate case id '{case.case_id}': {first.files()[0]} and {case.files()[0]}"
            )
        seen[case.case_id] = case
    return [seen[k] for k in sorted(seen)]


class CaseSource(Protocol):
    """What the converter needs of a case, 3D (:class:`~.volume.Case`) or 2D
    (:class:`~.slices.SliceCase`): ids, its files, a cheap check and a load."""

    case_id: str
    patient_id: str
    label_convention: str
    expected: Mapping[str, str]
    #: 3 for volumes (any slice axis), 2 for stacks of 2D slices (``axial`` only).
    dimensions: ClassVar[int]

    @property
    def labelled(self) -> bool: ...

    def channel_names(self) -> list[str]: ...

    def files(self) -> list[str]: ...

    def source_record(self) -> dict: ...

    def check(
        self, channels: Sequence[str], target: Target | None = None, *, all_files: bool = True
    ) -> None: ...

    def load(self, options: PreprocessOptions, target: Target) -> PreprocessedVolume: ...
