"""The files an evaluation leaves behind: their names, columns, writing and reading.

Both evaluation entry points write one folder of the same three kinds of file:
a per-case table, a per-lesion table and a JSON summary.
:class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator` names them
:data:`EVALUATOR_FILES` (one row per volume x name x variant), ``brainseg-evaluate``
:data:`NIFTI_FILES` (one row per case x name). The HTML report
(:mod:`brainseg_d2.report`) reads either folder through :func:`find_result_files`
and :func:`load_cases`. NaN is an empty CSV cell and ``null`` in JSON (strict
JSON has no NaN). Free of Detectron2, so ``brainseg-evaluate`` and its report run
without it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from brainseg_d2.evaluation.case_scores import LESION_COLUMNS, SCORE_COLUMNS

__all__ = [
    "CONFIG_FILE",
    "EVALUATOR_CASES_COLUMNS",
    "EVALUATOR_FILES",
    "EVALUATOR_LESIONS_COLUMNS",
    "NIFTI_FILES",
    "NUMERIC_FIELDS",
    "REPORT_FILE",
    "FoundResults",
    "ResultFiles",
    "find_result_files",
    "json_safe",
    "load_cases",
    "load_lesion_volumes",
    "load_summary",
    "to_float",
    "write_summary",
    "write_table",
]


@dataclass(frozen=True)
class ResultFiles:
    """File names of one entry point's evaluation folder."""

    kind: str  # who writes them: "evaluator" or "brainseg-evaluate"
    cases: str
    summary: str
    lesions: str


#: Written by the Detectron2 evaluator.
EVALUATOR_FILES = ResultFiles(
    "evaluator", "brainseg_cases.csv", "brainseg_summary.json", "brainseg_lesions.csv"
)
#: Written by brainseg-evaluate.
NIFTI_FILES = ResultFiles("brainseg-evaluate", "cases.csv", "summary.json", "lesions.csv")
#: The config the evaluator was built from, beside its files.
CONFIG_FILE = "brainseg_config.yaml"
#: The HTML report brainseg-evaluate writes into its folder.
REPORT_FILE = "report.html"
#: Columns of the evaluator's per-case table.
EVALUATOR_CASES_COLUMNS = (
    "volume_id", "patient_id", "group", "name", "variant", "gt_source", *SCORE_COLUMNS
)  # fmt: skip
#: Columns of the evaluator's per-lesion table.
EVALUATOR_LESIONS_COLUMNS = ("volume_id", "patient_id", "variant", *LESION_COLUMNS)
#: Numeric per-case fields of both tables (absent ones read as NaN).
NUMERIC_FIELDS = (
    "dice", "iou", "sensitivity", "specificity", "precision", "hd95", "hd95_pooled",
    "lesion_dice", "lesion_hd95", "rq", "sq", "pq", "sq_hd95", "ref_voxels", "pred_voxels",
    "ref_ml", "pred_ml", "volume_diff_ml", "lesion_tp", "lesion_fn", "lesion_fp",
    "panoptic_tp", "panoptic_fp", "panoptic_fn",
)  # fmt: skip


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def json_safe(value):
    """``value`` with NaN and infinities (at any depth) as None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_table(
    path: str | os.PathLike, rows: Sequence[Mapping], columns: Sequence[str]
) -> None:
    """Write ``rows`` as CSV with ``columns`` (other keys ignored, NaN an empty cell).

    Creates the parent folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )


def write_summary(path: str | os.PathLike, summary: Mapping) -> None:
    """Write ``summary`` as indented strict JSON (:func:`json_safe`)."""
    Path(path).write_text(json.dumps(json_safe(summary), indent=2), encoding="utf-8")


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def to_float(value) -> float:
    """A table cell as float; empty, None or not a number: NaN."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _to_bool(value) -> bool:
    return value is True or str(value).strip().lower() == "true"


def load_cases(cases_csv: str | os.PathLike) -> list[dict]:
    """Rows of a per-case table of either entry point, normalised.

    Returns:
        dicts with ``case_id`` (``volume_id`` for the evaluator), ``patient_id``,
        ``group``, ``name``, ``variant`` (``""`` for brainseg-evaluate),
        ``both_empty`` and ``missing`` (bool), :data:`NUMERIC_FIELDS` as floats
        (empty or absent: NaN) and the other columns as text.

    Raises:
        ValueError: unreadable file, missing columns (naming them) or no rows.
    """
    path = Path(cases_csv)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError) as e:  # not text: a binary file named .csv
        raise ValueError(f"cannot read {path}: {e}") from None
    id_column = "volume_id" if "volume_id" in columns else "case_id"
    missing = [c for c in (id_column, "group", "name", "dice") if c not in columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (has {columns})")
    if not rows:
        raise ValueError(f"{path} has a header and no case rows")
    out = []
    for row in rows:
        item = dict(row)
        item["case_id"] = row[id_column]
        item["patient_id"] = row.get("patient_id") or row[id_column]
        item["variant"] = row.get("variant") or ""
        if "ref_voxels" not in columns and "gt_voxels" in columns:
            item["ref_voxels"] = row["gt_voxels"]  # older tables name it gt_voxels
        for key in NUMERIC_FIELDS:
            item[key] = to_float(item.get(key))
        item["both_empty"] = _to_bool(row.get("both_empty"))
        item["missing"] = _to_bool(row.get("missing"))
        out.append(item)
    return out


def load_summary(path: str | os.PathLike) -> dict:
    """The JSON summary of either entry point.

    Raises:
        ValueError: unreadable file, bad JSON, or not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_lesion_volumes(path: str | os.PathLike | None) -> dict[tuple, list[float]]:
    """(case, group, name, variant) -> reference lesion volumes in mL (BraTS 2023 lesions).

    A missing file (or None) gives an empty mapping.
    """
    out: dict[tuple, list[float]] = defaultdict(list)
    if path is None or not Path(path).is_file():
        return out
    with Path(path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("definition") != "2023":
                continue
            case = row.get("volume_id") or row.get("case_id")
            key = (case, row["group"], row["name"], row.get("variant") or "")
            out[key].append(to_float(row.get("volume_ml")))
    return out


@dataclass(frozen=True)
class FoundResults:
    """The files of one evaluation folder."""

    kind: str  # ResultFiles.kind
    cases: Path
    summary: Path
    lesions: Path


def find_result_files(
    source: str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike],
) -> FoundResults:
    """The files of an evaluation folder of either entry point.

    Args:
        source: the folder (the evaluator's names win where both are present),
            or a ``(cases table, summary)`` pair of paths.

    Raises:
        ValueError: ``source`` is not a folder (nor a pair).
    """
    if isinstance(source, (tuple, list)):
        cases, summary = (Path(p) for p in source)
        names = NIFTI_FILES if cases.name == NIFTI_FILES.cases else EVALUATOR_FILES
        return FoundResults(names.kind, cases, summary, cases.with_name(names.lesions))
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (an evaluation's output folder, holding "
                         f"{EVALUATOR_FILES.cases} or {NIFTI_FILES.cases})")
    names = EVALUATOR_FILES
    if (folder / NIFTI_FILES.cases).is_file() and not (folder / EVALUATOR_FILES.cases).is_file():
        names = NIFTI_FILES
    return FoundResults(
        names.kind, folder / names.cases, folder / names.summary, folder / names.lesions
    )
