"""``brainseg-evaluate``: score a folder of NIfTI label maps from any tool against references.

Usage::

    brainseg-evaluate --pred PRED_DIR --ref REF_DIR --output OUT_DIR [--workers 4]

Data path: find label maps in both folders -> match them by case id -> per case,
read both, check that their geometry agrees, pick the label convention ->
:func:`~brainseg_d2.evaluation.case_scores.score_label_maps` -> ``cases.csv``,
``lesions.csv`` and ``summary.json`` in ``OUT_DIR``.

* **Case ids.** BraTS names give the id wherever they sit in a file name
  (``BraTS-GLI-00000-000``, ``BraTS2021_00000``, ``Brats18_2013_2_1``, ...);
  other names give their stem less a trailing ``_seg``/``-seg``/``_pred``-like
  suffix; ``--pattern REGEX`` overrides both (named group ``id``, else group 1,
  else the whole match). Reference folders may be BraTS case folders: image
  files (``_flair``, ``-t2f``, ...) are skipped.
* **Missing predictions** are scored as BraTS scores them (every score 0, every
  distance the 374 mm penalty) and listed in ``summary.json``; predictions
  without reference are listed too. A prediction whose size, spacing, origin
  or direction differs from its reference is an error naming both files.
* **Label conventions** come from each reference's name
  (:func:`~brainseg_d2.labels.detect_convention`) unless ``--label-convention``
  names one or a JSON/YAML file (:func:`~brainseg_d2.labels.load_convention`).
  BraTS 2023 lesion-wise settings follow the BraTS task in the name (GLI
  otherwise) unless ``--challenge`` or the ``--lesion-*`` options say.
* Regions and classes that are empty in every reference and every prediction
  are left out of the outputs (e.g. the resection cavity of 2023 GLI data).

* The HTML report (:mod:`brainseg_d2.report`, the one the Detectron2 evaluator's
  folder gets too) is ``OUT_DIR/report.html``: means with their *n*, both-empty
  scores and the HD95 penalty flagged, a Dice plot, links to every file.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from brainseg_d2.evaluation.case_scores import (
    CASE_COLUMNS,
    ScoringSettings,
    missing_prediction_rows,
    pop_lesion_records,
    score_label_maps,
    summarize_cases,
)
from brainseg_d2.evaluation.case_scores import LESION_COLUMNS as CASE_LESION_COLUMNS
from brainseg_d2.evaluation.lesion_metrics import BRATS2023_LESION_SETTINGS, LesionSettings
from brainseg_d2.evaluation.results_files import (
    NIFTI_FILES,
    REPORT_FILE,
    write_summary,
    write_table,
)
from brainseg_d2.labels import (
    BRATS2021_CASE,
    BRATS2023_CASE,
    CONVENTIONS,
    LabelConvention,
    brats_task,
    detect_convention,
    resolve_convention,
)

__all__ = [
    "CASES_FILE",
    "LESIONS_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "CasePair",
    "EvaluationError",
    "case_id",
    "evaluate_case",
    "evaluate_folders",
    "find_label_maps",
    "main",
    "match_cases",
]

logger = logging.getLogger(__name__)

CASES_FILE = NIFTI_FILES.cases
LESIONS_FILE = NIFTI_FILES.lesions
SUMMARY_FILE = NIFTI_FILES.summary
NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Trailing parts of a file stem that are not part of the case id.
_ID_SUFFIX = re.compile(r"[_-](seg|pred|prediction|label|labels|mask|segmentation)$", re.I)
#: BraTS image files (not label maps) inside case folders.
_IMAGE_SUFFIX = re.compile(r"[_-](flair|t1|t1ce|t2|t1n|t1c|t2w|t2f)$", re.I)
#: Geometry tolerance: spacing/origin in mm, direction cosines.
_GEOMETRY_ATOL = 1e-4
LESION_COLUMNS = ("case_id", *CASE_LESION_COLUMNS)


class EvaluationError(ValueError):
    """Bad input to the evaluation: folders, names, geometry, labels (one-line message)."""


# ---------------------------------------------------------------------------
# finding and matching files
# ---------------------------------------------------------------------------


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id(path: str | os.PathLike, pattern: re.Pattern | None = None) -> str | None:
    """Case id of a label-map file name (module docstring); None if ``pattern`` misses."""
    stem = _stem(Path(path))
    if pattern is not None:
        m = pattern.search(Path(path).name)
        if m is None:
            return None
        if "id" in pattern.groupindex:
            return m.group("id")
        return m.group(1) if pattern.groups else m.group(0)
    m = BRATS2023_CASE.search(stem)
    if m:
        return m.group(0)
    m = BRATS2021_CASE.search(stem)
    if m:
        return _ID_SUFFIX.sub("", m.group(0))
    return _ID_SUFFIX.sub("", stem)


def _is_image(path: Path) -> bool:
    stem = _stem(path)
    return brats_task(stem) is not None and _IMAGE_SUFFIX.search(stem) is not None


def find_label_maps(
    folder: str | os.PathLike, pattern: re.Pattern | None = None, *, role: str = "folder"
) -> dict[str, Path]:
    """Label maps under ``folder`` (any depth) by case id.

    Raises:
        EvaluationError: missing folder, no NIfTI file, or two files with one id
            (the message names both).
    """
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationError(f"{role} {root} is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.name.lower().endswith(NIFTI_SUFFIXES) or not path.is_file():
            continue
        if _is_image(path):
            continue
        cid = case_id(path, pattern)
        if cid is None:
            continue
        if cid in found:
            raise EvaluationError(
                f"{role}: {found[cid]} and {path} have the same case id {cid!r}; "
                "use --pattern to tell them apart"
            )
        found[cid] = path
    if not found:
        what = "NIfTI label map" if pattern is None else f"NIfTI file matching {pattern.pattern!r}"
        raise EvaluationError(f"{role} {root} holds no {what}")
    return found


@dataclass(frozen=True)
class CasePair:
    """One reference and its prediction (None when missing)."""

    case_id: str
    ref: Path
    pred: Path | None


def match_cases(
    pred_dir: str | os.PathLike, ref_dir: str | os.PathLike, pattern: re.Pattern | None = None
) -> tuple[list[CasePair], list[Path]]:
    """Pair references with predictions by case id.

    Returns:
        ``(pairs, unmatched)``: one pair per reference, sorted by id (``pred`` None
        when missing), and the predictions without reference.

    Raises:
        EvaluationError: bad folders, duplicate ids, or no prediction matching any
            reference (names an id of each side, which usually means a wrong
            ``--pattern``).
    """
    refs = find_label_maps(ref_dir, pattern, role="--ref")
    preds = find_label_maps(pred_dir, pattern, role="--pred")
    if not set(refs) & set(preds):
        raise EvaluationError(
            f"no prediction in {pred_dir} matches a reference in {ref_dir} (ids like "
            f"{next(iter(preds))!r} and {next(iter(refs))!r}); use --pattern"
        )
    pairs = [CasePair(cid, refs[cid], preds.get(cid)) for cid in sorted(refs)]
    unmatched = [preds[cid] for cid in sorted(set(preds) - set(refs))]
    return pairs, unmatched


# ---------------------------------------------------------------------------
# one case
# ---------------------------------------------------------------------------


def _read(path: Path):
    from brainseg_d2.data.ground_truth import read_label_image
    from brainseg_d2.data.volume_io import VolumeError

    try:
        return read_label_image(path)
    except VolumeError as exc:
        raise EvaluationError(str(exc)) from None


def _check_geometry(pred_image, ref_image, pred: Path, ref: Path) -> None:
    checks = (
        ("size", pred_image.GetSize(), ref_image.GetSize()),
        ("spacing", pred_image.GetSpacing(), ref_image.GetSpacing()),
        ("origin", pred_image.GetOrigin(), ref_image.GetOrigin()),
        ("direction", pred_image.GetDirection(), ref_image.GetDirection()),
    )
    for what, a, b in checks:
        if len(a) != len(b) or not np.allclose(a, b, rtol=0, atol=_GEOMETRY_ATOL):
            fmt = tuple(round(v, 4) for v in a), tuple(round(v, 4) for v in b)
            raise EvaluationError(
                f"prediction {pred} and reference {ref} differ in {what}: {fmt[0]} vs {fmt[1]}"
            )


def _convention_for(ref: Path, spec: LabelConvention | None) -> LabelConvention:
    if spec is not None:
        return spec
    name = detect_convention(ref.name)
    if name is None:
        raise EvaluationError(
            f"cannot tell the label convention of {ref} from its name; pass "
            f"--label-convention (one of {sorted(CONVENTIONS)} or a JSON/YAML file)"
        )
    return CONVENTIONS[name]


def _settings_for(ref: Path, base: ScoringSettings, per_case: bool) -> ScoringSettings:
    if not per_case:
        return base
    task = brats_task(ref.name)
    lesion = BRATS2023_LESION_SETTINGS.get(task or "GLI", BRATS2023_LESION_SETTINGS["GLI"])
    return replace(base, lesion=lesion)


def _looks_like_2021_labels(pred: np.ndarray, ref: np.ndarray, convention: LabelConvention) -> bool:
    """A 2023+ case whose prediction writes ET as 4 (BraTS 2021) where 4 means RC."""
    if convention.classes.get(4) != "resection_cavity" or convention.classes.get(3) != "enhancing":
        return False
    pred_values = set(np.unique(pred).tolist())
    ref_values = set(np.unique(ref).tolist())
    return 4 in pred_values and 3 not in pred_values and 4 not in ref_values and 3 in ref_values


def evaluate_case(
    pair: CasePair,
    *,
    convention: LabelConvention | None = None,
    settings: ScoringSettings | None = None,
    lesion_per_case: bool = True,
) -> tuple[list[dict], list[dict], list[str]]:
    """Score one case.

    Args:
        pair: reference and prediction files.
        convention: the labels' convention; None picks it from the reference name.
        settings: scoring conventions.
        lesion_per_case: replace ``settings.lesion`` by the BraTS 2023 settings of
            the reference name's task (GLI for other names).

    Returns:
        ``(rows, lesions, warnings)``: per-name rows (``CASE_COLUMNS``), per-lesion
        records (``LESION_COLUMNS``) and warning lines.

    Raises:
        EvaluationError: unreadable files, geometry mismatch, labels outside the
            convention; the message names the file(s).
    """
    settings = settings or ScoringSettings()
    conv = _convention_for(pair.ref, convention)
    settings = _settings_for(pair.ref, settings, lesion_per_case)
    ref_image, ref = _read(pair.ref)
    spacing = tuple(reversed(ref_image.GetSpacing()))  # numpy axis order (z, y, x)
    info = {
        "case_id": pair.case_id,
        "convention": conv.name,
        "ref_file": str(pair.ref),
        "pred_file": "" if pair.pred is None else str(pair.pred),
    }
    warnings = []
    lesions: list[dict] = []
    try:
        if pair.pred is None:
            rows = missing_prediction_rows(ref, spacing, conv, settings)
        else:
            pred_image, pred = _read(pair.pred)
            _check_geometry(pred_image, ref_image, pair.pred, pair.ref)
            if _looks_like_2021_labels(pred, ref, conv):
                warnings.append(
                    f"{pair.pred}: label 4 is the resection cavity in convention "
                    f"'{conv.name}', but the prediction has no 3 (enhancing) while its "
                    "reference has: was it written in the BraTS 2021 convention (ET = 4)?"
                )
            rows = score_label_maps(pred, ref, spacing, conv, settings, with_lesions=True)
    except EvaluationError:
        raise
    except ValueError as exc:
        where = pair.ref if pair.pred is None else f"{pair.pred} (reference {pair.ref})"
        raise EvaluationError(f"{where}: {exc}") from None
    for row in rows:
        row.update(info)
        lesions += [{"case_id": pair.case_id, **rec} for rec in pop_lesion_records(row)]
    return rows, lesions, warnings


def _evaluate_case_job(args: tuple) -> tuple[list[dict], list[dict], list[str]]:
    pair, convention, settings, per_case = args
    return evaluate_case(pair, convention=convention, settings=settings, lesion_per_case=per_case)


# ---------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------


def _present_names(rows: Sequence[dict]) -> set[tuple[str, str]]:
    present = set()
    for row in rows:
        if (row.get("ref_voxels") or 0) > 0 or (row.get("pred_voxels") or 0) > 0:
            present.add((row["group"], row["name"]))
    return present


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    pattern: str | None = None,
    label_convention: str | LabelConvention | None = None,
    lesion: str | LesionSettings | None = None,
    settings: ScoringSettings | None = None,
    workers: int = 1,
    progress: bool = True,
    report: bool = True,
) -> dict:
    """Score every reference in ``ref_dir`` against its prediction in ``pred_dir``.

    Args:
        pred_dir, ref_dir: folders of NIfTI label maps (any depth).
        output_dir: gets ``cases.csv``, ``lesions.csv`` and ``summary.json``.
        pattern: regex giving the case id of a file name (module docstring).
        label_convention: a built-in name, a convention file, or None to pick
            each case's from its reference name.
        lesion: BraTS 2023 lesion-wise settings for all cases: a challenge
            (``GLI``, ``MET``, ...) or :class:`LesionSettings`; None picks each
            case's from its name.
        settings: scoring conventions (its ``lesion`` is replaced as ``lesion``
            says).
        workers: processes scoring cases at once.
        progress: show a tqdm progress bar.
        report: also write :data:`REPORT_FILE` (replacing only an earlier report).

    Returns:
        The summary written to ``summary.json``.

    Raises:
        EvaluationError: bad input (message names the file or folder).
    """
    start = time.perf_counter()
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise EvaluationError(
                f"--pattern {pattern!r} is not a regular expression: {exc}"
            ) from None
    try:
        convention = None if label_convention is None else resolve_convention(label_convention)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    settings = settings or ScoringSettings()
    if isinstance(lesion, str):
        if lesion not in BRATS2023_LESION_SETTINGS:
            raise EvaluationError(
                f"unknown challenge {lesion!r}; choose one of {sorted(BRATS2023_LESION_SETTINGS)}"
            )
        lesion = BRATS2023_LESION_SETTINGS[lesion]
    if lesion is not None:
        settings = replace(settings, lesion=lesion)
    pairs, unmatched = match_cases(pred_dir, ref_dir, regex)
    out = Path(output_dir)
    if report:  # before the work: an earlier file that is not our report stays
        from brainseg_d2.report import check_replaceable_report

        try:
            check_replaceable_report(out / REPORT_FILE, [])
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    jobs = [(pair, convention, settings, lesion is None) for pair in pairs]
    bar = tqdm(total=len(jobs), desc="brainseg-evaluate", unit="case", disable=not progress)
    results: list[tuple[list[dict], list[dict], list[str]]] = []
    try:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(_evaluate_case_job, jobs):
                    results.append(result)
                    bar.update()
        else:
            for job in jobs:
                results.append(_evaluate_case_job(job))
                bar.update()
    finally:
        bar.close()

    rows = [row for case_rows, _, _ in results for row in case_rows]
    lesions = [rec for _, case_lesions, _ in results for rec in case_lesions]
    warnings = [w for _, _, case_warnings in results for w in case_warnings]
    present = _present_names(rows)
    absent = sorted({(r["group"], r["name"]) for r in rows} - present)
    rows = [r for r in rows if (r["group"], r["name"]) in present]
    lesions = [r for r in lesions if (r["group"], r["name"]) in present]
    write_table(out / CASES_FILE, rows, CASE_COLUMNS)
    write_table(out / LESIONS_FILE, lesions, LESION_COLUMNS)

    from brainseg_d2 import __version__

    summary = {
        "tool": "brainseg-evaluate",
        "version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "num_cases": len(pairs),
        "missing_predictions": [str(p.ref) for p in pairs if p.pred is None],
        "unmatched_predictions": [str(p) for p in unmatched],
        "conventions": sorted({r["convention"] for r in rows}),
        "absent_names": [f"{g}:{n}" for g, n in absent],
        "settings": {
            "hd95_penalty_mm": settings.hd95_penalty,
            "empty_score": settings.empty_score,
            "matching_threshold": settings.matching_threshold,
            "lesion": (
                vars(settings.lesion) if lesion is not None else "per case from its BraTS task"
            ),
            "hd95": "MONAI: max of the two directed 95th percentiles",
            "hd95_pooled": "panoptica: 95th percentile of the pooled distances",
        },
        "warnings": warnings,
        "seconds": round(time.perf_counter() - start, 2),
        "names": summarize_cases(rows),
    }
    write_summary(out / SUMMARY_FILE, summary)
    if report:
        from brainseg_d2.report import write_report

        try:
            write_report(out, out / REPORT_FILE, title="brainseg-evaluate: evaluation report")
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
    return summary


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brainseg-evaluate",
        description=(
            "Score NIfTI label maps from any tool against reference label maps: Dice, IoU, "
            "HD95 (MONAI and panoptica conventions), sensitivity, specificity, precision, "
            "volume difference, BraTS 2023 lesion-wise Dice/HD95 and BraTS 2024+ RQ/SQ/PQ, "
            "per region and class."
        ),
    )
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    p.add_argument("--ref", required=True, type=Path, help="folder of reference label maps")
    p.add_argument("--output", required=True, type=Path, help="folder for the CSV and JSON")
    p.add_argument(
        "--pattern",
        help="regex giving the case id of a file name (group 'id', else group 1, else the "
        "match); default: BraTS ids, else the stem less _seg/_pred-like suffixes",
    )
    p.add_argument(
        "--label-convention",
        help=f"one of {sorted(CONVENTIONS)} or a .json/.yaml convention file "
        "(default: from each reference's BraTS name)",
    )
    p.add_argument(
        "--challenge",
        choices=sorted(BRATS2023_LESION_SETTINGS),
        help="BraTS 2023 lesion-wise settings for every case (default: from each case's name, "
        "GLI for others)",
    )
    p.add_argument(
        "--lesion-dilation",
        type=int,
        help="BraTS 2023 lesion dilation iterations (overrides --challenge)",
    )
    p.add_argument(
        "--lesion-min-volume",
        type=float,
        help="BraTS 2023: ignore lesions of at most this volume in mm^3 (overrides --challenge)",
    )
    p.add_argument(
        "--hd95-penalty",
        type=float,
        default=ScoringSettings().hd95_penalty,
        help="HD95 in mm where one side is empty, for missed and false-positive lesions "
        "and missing predictions (default: %(default)s, BraTS 2023)",
    )
    p.add_argument("--workers", type=int, default=1, help="cases scored at once (processes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help=f"do not write {REPORT_FILE}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or 2 on bad input (one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.workers < 1:
            raise EvaluationError(f"--workers must be >= 1, got {args.workers}")
        lesion = BRATS2023_LESION_SETTINGS[args.challenge] if args.challenge else None
        if args.lesion_dilation is not None or args.lesion_min_volume is not None:
            base = lesion or BRATS2023_LESION_SETTINGS["GLI"]
            lesion = LesionSettings(
                dilation_iters=(
                    base.dilation_iters if args.lesion_dilation is None else args.lesion_dilation
                ),
                min_lesion_volume=(
                    base.min_lesion_volume
                    if args.lesion_min_volume is None
                    else args.lesion_min_volume
                ),
            )
            if lesion.dilation_iters < 0:
                raise EvaluationError(
                    f"--lesion-dilation must be >= 0, got {lesion.dilation_iters}"
                )
        summary = evaluate_folders(
            args.pred,
            args.ref,
            args.output,
            pattern=args.pattern,
            label_convention=args.label_convention,
            lesion=lesion,
            settings=ScoringSettings(hd95_penalty=args.hd95_penalty),
            workers=args.workers,
            progress=not args.quiet,
            report=not args.no_report,
        )
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    if summary["missing_predictions"]:
        print(
            f"warning: {len(summary['missing_predictions'])} reference(s) without prediction, "
            f"scored Dice 0 / HD95 {summary['settings']['hd95_penalty_mm']:g} mm: "
            + ", ".join(Path(p).name for p in summary["missing_predictions"]),
            file=sys.stderr,
        )
    if summary["unmatched_predictions"]:
        print(
            f"warning: {len(summary['unmatched_predictions'])} prediction(s) without reference: "
            + ", ".join(Path(p).name for p in summary["unmatched_predictions"]),
            file=sys.stderr,
        )
    for entry in summary["names"]:
        mean, exists = entry["mean"], entry["mean_exists"]
        print(
            f"{entry['name']:>16}  Dice {mean['dice']:.4f} (n={entry['n_cases']}; "
            f"{exists['dice']:.4f} over n={entry['n_exists']} with it)  "
            f"HD95 {mean['hd95']:.2f} mm  lesion Dice {mean['lesion_dice']:.4f}  "
            f"PQ {mean['pq']:.4f}"
        )
    written = [CASES_FILE, SUMMARY_FILE] + ([] if args.no_report else [REPORT_FILE])
    print(f"wrote {', '.join(str(Path(args.output) / f) for f in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
