"""``csv``: a manifest with columns ``image`` or ``image_<channel>`` (one or more
channels), optional ``mask``, ``case_id``, ``patient_id`` and
``label_convention``; other columns are ignored; relative paths are relative to
the CSV's folder; an empty ``mask`` cell means unlabelled."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from brainseg_d2.data.sources.common import SourceError, patient_of, sorted_unique
from brainseg_d2.data.sources.registry import Layout, SourceQuery
from brainseg_d2.data.sources.volume import Case
from brainseg_d2.labels import get_convention


def read_manifest(
    path: str | os.PathLike,
    *,
    label_convention: str = "binary",
    patient_pattern: str | None = None,
) -> list[Case]:
    """Read cases from a CSV manifest (see the module docstring for the columns).

    Args:
        path: CSV file with a header row.
        label_convention: default for rows without a ``label_convention`` cell.
        patient_pattern: regex on the case id giving the patient id, when
            ``patient_id`` is empty.

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: missing/empty file, no image column, duplicate case ids.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise SourceError(f"manifest {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    image_cols = {
        c: ("image" if c == "image" else c[len("image_") :])
        for c in columns
        if c == "image" or (c.startswith("image_") and len(c) > len("image_"))
    }
    if not rows:
        raise SourceError(f"manifest {path} has no rows")
    if not image_cols:
        raise SourceError(f"manifest {path} has no 'image' or 'image_<channel>' column")
    cases = []
    for line, row in enumerate(rows, start=2):
        channels, expected = {}, {}
        for col, name in image_cols.items():
            cell = (row.get(col) or "").strip()
            if cell:
                channels[name] = str((path.parent / cell).resolve())
            else:
                expected[name] = f"empty cell in column '{col}' of {path} line {line}"
        first = next(iter(channels.values()), None)
        case_id = (row.get("case_id") or "").strip()
        if not case_id:
            if first is None:
                raise SourceError(f"{path} line {line}: no case_id and no image")
            case_id = Path(first).name.split(".")[0]
        parts = case_id.replace("\\", "/").split("/")
        if case_id.startswith(("/", "\\")) or any(part in ("", ".", "..") for part in parts):
            raise SourceError(f"{path} line {line}: case_id {case_id!r} is not a plain name "
                              "(outputs are named after it; no '..', '/' at the start or empty "
                              "parts)")  # fmt: skip
        mask = (row.get("mask") or "").strip()
        convention = (row.get("label_convention") or "").strip() or label_convention
        get_convention(convention)
        patient = (row.get("patient_id") or "").strip() or patient_of(case_id, patient_pattern)
        mask_path = str((path.parent / mask).resolve()) if mask else None
        cases.append(Case(case_id, patient, channels, mask_path, convention, expected))
    return sorted_unique(cases)


def _find(input_path: str | os.PathLike, query: SourceQuery) -> list[Case]:
    return read_manifest(
        query.manifest or input_path,
        label_convention=query.label_convention or "binary",
        patient_pattern=query.patient_pattern,
    )


#: This layout, registered by the package.
LAYOUT = Layout("csv", _find)
