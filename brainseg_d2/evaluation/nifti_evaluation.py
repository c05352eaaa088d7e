"""``brainseg-evaluate``: score any tool's label maps (NIfTI, MHA, NRRD) against references.

The command is :mod:`brainseg_d2.cli.evaluate`::

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
  (:func:`~brainseg_d2.evaluation.label_map_files.reference_convention`: BraTS names,
  BraTS 2013-2015 folders) unless ``--label-convention``
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

import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from brainseg_d2.evaluation.case_scores import (
    CASE_COLUMNS,
    ScoringSettings,
    missing_prediction_rows,
    pop_lesion_records,
    score_label_maps,
)
from brainseg_d2.evaluation.case_scores import LESION_COLUMNS as CASE_LESION_COLUMNS
from brainseg_d2.evaluation.case_summary import summarize_cases
from brainseg_d2.evaluation.label_checks import (
    binary_01,
    check_implied_conventions,
    looks_like_2021_labels,
    option_convention,
)
from brainseg_d2.evaluation.label_map_files import (
    CasePair,
    EvaluationError,
    match_cases,
    reference_convention,
)
from brainseg_d2.evaluation.lesion_metrics import BRATS2023_LESION_SETTINGS, LesionSettings
from brainseg_d2.evaluation.results_files import (
    NIFTI_FILES,
    REPORT_FILE,
    write_summary,
    write_table,
)
from brainseg_d2.labels import (
    CONVENTIONS,
    LabelConvention,
    brats_task,
    relabel,
    resolve_convention,
)
from brainseg_d2.utils.paths import check_not_input, check_own_files, record_own_files

__all__ = [
    "CASES_FILE",
    "LESIONS_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "EvaluationError",
    "evaluate_case",
    "evaluate_folders",
]

logger = logging.getLogger(__name__)

CASES_FILE = NIFTI_FILES.cases
LESIONS_FILE = NIFTI_FILES.lesions
SUMMARY_FILE = NIFTI_FILES.summary
#: Written into ``--output``, listing the files above: only those are ever replaced.
MARKER = ".brainseg-evaluation"
OWN_FILES = (CASES_FILE, LESIONS_FILE, SUMMARY_FILE)
#: Geometry tolerance: spacing/origin in mm, direction cosines.
_GEOMETRY_ATOL = 1e-4
LESION_COLUMNS = ("case_id", *CASE_LESION_COLUMNS)


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
        ("direction", pred_image.GetDirection(), ref_image.GetDirection()),
        ("origin", pred_image.GetOrigin(), ref_image.GetOrigin()),
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
    name = reference_convention(ref)
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


def evaluate_case(
    pair: CasePair,
    *,
    convention: LabelConvention | None = None,
    settings: ScoringSettings | None = None,
    lesion_per_case: bool = True,
    pred_convention: LabelConvention | None = None,
) -> tuple[list[dict], list[dict], list[str]]:
    """Score one case.

    Args:
        pair: reference and prediction files.
        convention: the labels' convention; None picks it from the reference name.
        settings: scoring conventions.
        lesion_per_case: replace ``settings.lesion`` by the BraTS 2023 settings of
            the reference name's task (GLI for other names).
        pred_convention: the prediction's own convention, when it differs: its
            classes are rewritten in the reference's (:func:`~brainseg_d2.labels.relabel`).

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
    ref = binary_01(ref, conv)
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
            pred = binary_01(pred, conv)
            if pred_convention is not None:
                pred = relabel(pred, pred_convention, conv)
            elif looks_like_2021_labels(pred, ref, conv):
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
    pair, convention, settings, per_case, pred_convention = args
    return evaluate_case(pair, convention=convention, settings=settings, lesion_per_case=per_case,
                         pred_convention=pred_convention)


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
    pred_label_convention: str | LabelConvention | None = None,
    lesion: str | LesionSettings | None = None,
    settings: ScoringSettings | None = None,
    workers: int = 1,
    progress: bool = True,
    report: bool = True,
) -> dict:
    """Score every reference in ``ref_dir`` against its prediction in ``pred_dir``.

    Args:
        pred_dir, ref_dir: folders of label maps (NIfTI, MetaImage, NRRD; any depth).
        output_dir: gets ``cases.csv``, ``lesions.csv`` and ``summary.json``.
        pattern: regex giving the case id of a file name (module docstring).
        label_convention: a built-in name, a convention file, or None to pick
            each case's from its reference name.
        pred_label_convention: the predictions' convention where it is not the
            references' (e.g. another tool's BraTS 2021 labels against 2023 files);
            None: the same as the references'.
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
    pred_convention = option_convention(pred_label_convention, "--pred-label-convention")
    settings = settings or ScoringSettings()
    if isinstance(lesion, str):
        if lesion not in BRATS2023_LESION_SETTINGS:
            raise EvaluationError(
                f"unknown challenge {lesion!r}; choose one of {sorted(BRATS2023_LESION_SETTINGS)}"
            )
        lesion = BRATS2023_LESION_SETTINGS[lesion]
    if lesion is not None:
        settings = replace(settings, lesion=lesion)
    # Absolute, so that cases.csv's file columns (and the report's links) work from anywhere.
    pred_dir, ref_dir = Path(os.path.abspath(pred_dir)), Path(os.path.abspath(ref_dir))
    out = Path(output_dir)
    try:  # before the work: the inputs and files this did not write stay as they are
        check_not_input(out, [pred_dir, ref_dir], "--output")
        check_own_files(out, OWN_FILES, MARKER, "brainseg-evaluate", "--output")
        stale_report = False  # an earlier run's report, which --no-report must not leave
        if os.path.lexists(out / REPORT_FILE):
            from brainseg_d2.report import check_replaceable_report

            try:
                check_replaceable_report(out / REPORT_FILE, [])
                stale_report = not report
            except ValueError:
                if report:
                    raise
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    pairs, unmatched = match_cases(pred_dir, ref_dir, regex)

    from tqdm import tqdm
    jobs = [(pair, convention, settings, lesion is None, pred_convention) for pair in pairs]
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
    if convention is None:  # conventions implied by names: do the labels agree?
        check_implied_conventions(rows, pred_convention_given=pred_convention is not None)
    present = _present_names(rows)
    absent = sorted({(r["group"], r["name"]) for r in rows} - present)
    rows = [r for r in rows if (r["group"], r["name"]) in present]
    lesions = [r for r in lesions if (r["group"], r["name"]) in present]
    out.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves no folder behind
    record_own_files(out, OWN_FILES, MARKER, "brainseg-evaluate")
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
        "pred_convention": None if pred_convention is None else pred_convention.name,
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
    if stale_report:
        (out / REPORT_FILE).unlink()
        logger.info("removed %s: it showed an earlier run's scores", out / REPORT_FILE)
    if report:
        from brainseg_d2.report import write_report

        try:
            write_report(out, out / REPORT_FILE, title="brainseg-evaluate: evaluation report")
        except ValueError as exc:
            raise EvaluationError(str(exc)) from None
    return summary
