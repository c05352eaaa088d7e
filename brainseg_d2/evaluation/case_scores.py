"""Every metric of one case: a predicted label map scored against its reference.

The array-level core shared by both evaluation entry points, free of file
handling: ``brainseg-evaluate`` (:mod:`brainseg_d2.evaluation.nifti_evaluation`)
calls :func:`score_label_maps`, which takes two raw label maps in one
:class:`~brainseg_d2.labels.LabelConvention` and returns one row per region and
class (:meth:`~brainseg_d2.labels.LabelConvention.evaluation_names`); the
Detectron2 evaluator (:func:`~brainseg_d2.evaluation.volume_scores.evaluate_volume`)
calls :func:`score_named_masks` on its category masks. Both crop to the same
box and score every name with :func:`score_masks`, so the same masks give the
same numbers. :func:`missing_prediction_rows` scores a case without prediction
as BraTS does (:func:`~brainseg_d2.evaluation.case_summary.summarize_cases`
aggregates rows over cases);
:func:`pop_lesion_records` turns a row's per-lesion records into table rows.

Conventions (:class:`ScoringSettings`, BraTS defaults):

* overlap scores (Dice, IoU, sensitivity, specificity, precision) come from the
  voxel counts of the whole volume; Dice and IoU of two empty masks are
  ``empty_score`` (1, BraTS), and such rows are flagged ``both_empty``;
* ``hd95`` follows MONAI (maximum of the two directed 95th percentiles),
  ``hd95_pooled`` panoptica (95th percentile of the pooled distances), both in
  mm with the voxel spacing; 0 when both masks are empty and the *penalty*
  ``hd95_penalty`` (:data:`~brainseg_d2.evaluation.metrics.HD95_PENALTY_MM`, 374 mm,
  BraTS 2023) when exactly one is;
* ``lesion_dice``/``lesion_hd95``: BraTS 2023 lesion-wise scores
  (:func:`~brainseg_d2.evaluation.lesion_metrics.brats2023_lesion_metrics`)
  with the challenge's dilation and small-lesion threshold;
* ``rq``, ``sq``, ``pq``, ``sq_hd95``: BraTS 2024+ lesion qualities
  (:func:`~brainseg_d2.evaluation.panoptic_lesions.panoptic_lesion_metrics`),
  NaN when neither mask has a lesion (as panoptica); ``sq_hd95`` is the penalty
  where lesions exist but none is matched (panoptica: inf);
* volumes in mL; ``volume_diff_ml`` is predicted minus reference (signed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from brainseg_d2.evaluation.distances import hd95_from_distances, surface_distances
from brainseg_d2.evaluation.lesion_metrics import (
    BRATS2023_LESION_SETTINGS,
    LesionSettings,
    brats2023_lesion_metrics,
)
from brainseg_d2.evaluation.metrics import HD95_PENALTY_MM, confusion_counts, scores_from_counts
from brainseg_d2.evaluation.panoptic_lesions import (
    PANOPTICA_MATCHING_THRESHOLD,
    panoptic_lesion_metrics,
)
from brainseg_d2.labels import LabelConvention

__all__ = [
    "CASE_COLUMNS",
    "DISTANCE_METRICS",
    "LESION_COLUMNS",
    "SCORE_COLUMNS",
    "SCORE_METRICS",
    "ScoringSettings",
    "missing_prediction_rows",
    "pop_lesion_records",
    "score_label_maps",
    "score_masks",
    "score_named_masks",
]

#: Metrics in [0, 1], higher is better; a missing prediction scores 0 in each.
SCORE_METRICS = (
    "dice", "iou", "sensitivity", "specificity", "precision", "lesion_dice", "rq", "sq", "pq",
)  # fmt: skip
#: Distances in mm, lower is better; a missing prediction scores the penalty.
DISTANCE_METRICS = ("hd95", "hd95_pooled", "lesion_hd95", "sq_hd95")
#: Counts and volumes of a row.
COUNT_FIELDS = (
    "ref_voxels", "pred_voxels", "ref_ml", "pred_ml", "volume_diff_ml",
    "lesion_tp", "lesion_fn", "lesion_fp", "panoptic_tp", "panoptic_fp", "panoptic_fn",
)  # fmt: skip
#: What :func:`score_masks` returns, in the column order of the per-case tables.
SCORE_COLUMNS = (
    "both_empty", *SCORE_METRICS[:5], "hd95", "hd95_pooled", "lesion_dice", "lesion_hd95",
    "rq", "sq", "pq", "sq_hd95", *COUNT_FIELDS,
)  # fmt: skip
#: Column order of ``brainseg-evaluate``'s per-case CSV.
CASE_COLUMNS = (
    "case_id", "group", "name", "missing", *SCORE_COLUMNS, "convention", "pred_file", "ref_file",
)  # fmt: skip
#: Columns of a per-lesion record (:func:`pop_lesion_records`).
LESION_COLUMNS = (
    "group", "name", "definition", "lesion", "volume_ml", "matched", "dice", "hd95", "ignored",
)  # fmt: skip


@dataclass(frozen=True)
class ScoringSettings:
    """How a case is scored (BraTS defaults).

    Attributes:
        hd95_penalty: HD95 (mm) where a distance is undefined because one side is
            empty: one empty mask, a missed lesion, a false-positive lesion, a
            missing prediction (BraTS 2023: 374).
        empty_score: Dice/IoU/lesion Dice when both masks are empty (BraTS: 1).
        lesion: BraTS 2023 lesion-wise settings (dilation, small-lesion volume).
        matching_threshold: least Dice of a matched lesion pair (BraTS 2024+).
    """

    hd95_penalty: float = HD95_PENALTY_MM
    empty_score: float = 1.0
    lesion: LesionSettings = field(default_factory=lambda: BRATS2023_LESION_SETTINGS["GLI"])
    matching_threshold: float = PANOPTICA_MATCHING_THRESHOLD


def _ml(voxels: int, spacing: Sequence[float]) -> float:
    return voxels * math.prod(spacing) / 1000.0


def score_masks(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    settings: ScoringSettings | None = None,
    *,
    with_lesions: bool = False,
    outside_voxels: int = 0,
) -> dict:
    """All metrics of one binary prediction against its reference.

    Args:
        pred: bool array ``(S, H, W)`` (any dimensionality).
        gt: bool array of the same shape.
        spacing: voxel size in mm per array axis.
        settings: scoring conventions (default :class:`ScoringSettings`).
        with_lesions: also return the per-lesion records under ``lesions_2023``
            and ``lesions_panoptic``.
        outside_voxels: background voxels of the case outside the arrays given
            (when they are a crop), counted as true negatives.

    Returns:
        dict with the metrics of the module docstring (keys of
        :data:`CASE_COLUMNS` from ``both_empty`` on, less the file and
        convention columns).
    """
    settings = settings or ScoringSettings()
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    tp, fp, fn, tn = confusion_counts(pred, gt)
    tn += int(outside_voxels)
    scores = scores_from_counts(tp, fp, fn, tn, empty_score=settings.empty_score)
    n_pred, n_gt = tp + fp, tp + fn
    distances = None
    if n_pred and n_gt:
        distances = surface_distances(pred, gt, spacing)
        hd95 = hd95_from_distances(*distances, convention="monai")
        hd95_pooled = hd95_from_distances(*distances, convention="panoptica")
    else:
        hd95 = hd95_pooled = 0.0 if n_pred == n_gt else settings.hd95_penalty
    lesion = brats2023_lesion_metrics(
        pred,
        gt,
        spacing=spacing,
        dilation_iters=settings.lesion.dilation_iters,
        min_lesion_volume=settings.lesion.min_lesion_volume,
        empty_score=settings.empty_score,
        hd95_penalty=settings.hd95_penalty,
        whole_distances=distances,
    )
    panoptic = panoptic_lesion_metrics(
        pred,
        gt,
        spacing=spacing,
        matching_threshold=settings.matching_threshold,
        zero_tp_hd95=settings.hd95_penalty,
        whole_distances=distances,
    )
    row = {
        "both_empty": n_pred == 0 and n_gt == 0,
        **{k: scores[k] for k in ("dice", "iou", "sensitivity", "specificity", "precision")},
        "hd95": hd95,
        "hd95_pooled": hd95_pooled,
        "lesion_dice": lesion["lesion_wise_dice"],
        "lesion_hd95": lesion["lesion_wise_hd95"],
        "rq": panoptic["rq"],
        "sq": panoptic["sq"],
        "pq": panoptic["pq"],
        "sq_hd95": panoptic["sq_hd95"],
        "ref_voxels": n_gt,
        "pred_voxels": n_pred,
        "ref_ml": _ml(n_gt, spacing),
        "pred_ml": _ml(n_pred, spacing),
        "volume_diff_ml": _ml(n_pred - n_gt, spacing),
        "lesion_tp": lesion["num_tp"],
        "lesion_fn": lesion["num_fn"],
        "lesion_fp": lesion["num_fp"],
        "panoptic_tp": panoptic["tp"],
        "panoptic_fp": panoptic["fp"],
        "panoptic_fn": panoptic["fn"],
    }
    if with_lesions:
        row["lesions_2023"] = lesion["lesions"]
        row["lesions_panoptic"] = panoptic["lesions"]
    return row


def _check_values(labels: np.ndarray, convention: LabelConvention, what: str) -> np.ndarray:
    values = np.unique(labels)
    unknown = [int(v) for v in values if int(v) not in convention.values]
    if unknown:
        raise ValueError(
            f"{what} has label values {unknown} that convention '{convention.name}' does not "
            f"have (it has {list(convention.values)})"
        )
    return values


def _bbox(a: np.ndarray, b: np.ndarray, pad: int) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` grown by ``pad`` voxels (a 1-voxel box if both are empty)."""
    union = a | b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        idx = np.flatnonzero(union.any(axis=other))
        if idx.size == 0:
            return tuple(slice(0, 1) for _ in range(union.ndim))
        box.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + 1 + pad, union.shape[axis])))
    return tuple(box)


def _name_mask(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    lut[[v for v in values if v < lut.size]] = True
    return lut[labels]


def _score_names(
    named: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    spacing: Sequence[float],
    settings: ScoringSettings,
    outside: int,
    with_lesions: bool,
) -> list[dict]:
    """Rows of cropped ``(group, name, pred, gt)`` masks; ``outside`` voxels are background."""
    rows = []
    for group, name, pred, gt in named:
        scored = score_masks(
            pred, gt, spacing, settings, with_lesions=with_lesions, outside_voxels=outside
        )
        rows.append({"group": group, "name": name, "missing": False, **scored})
    return rows


def score_named_masks(
    named: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    spacing: Sequence[float],
    settings: ScoringSettings | None = None,
    *,
    with_lesions: bool = False,
) -> list[dict]:
    """Score the binary masks of one case (regions, classes), as :func:`score_label_maps` does.

    Args:
        named: ``(group, name, pred, gt)`` per scored name; ``pred`` and ``gt``
            bool arrays ``(S, H, W)``, all of one shape.
        spacing: voxel size in mm per array axis.
        settings: scoring conventions.
        with_lesions: keep the per-lesion records (see :func:`score_masks`).

    Returns:
        One dict per name, in order, with ``group``, ``name``, ``missing``
        (False) and the metrics of :func:`score_masks`.

    Raises:
        ValueError: masks of different shapes.
    """
    settings = settings or ScoringSettings()
    named = [(g, n, np.asarray(p, dtype=bool), np.asarray(t, dtype=bool)) for g, n, p, t in named]
    if not named:
        return []
    shape = named[0][2].shape
    if any(p.shape != shape or t.shape != shape for _, _, p, t in named):
        raise ValueError(f"masks must share one shape, got {[p.shape for _, _, p, _ in named]}")
    # The box of every mask grown by the lesion dilation reach, as for label maps.
    union = np.zeros(shape, dtype=bool)
    for _, _, pred, gt in named:
        union |= pred | gt
    box = _bbox(union, union, settings.lesion.dilation_iters)
    outside = union.size - union[box].size
    cropped = [(g, n, p[box], t[box]) for g, n, p, t in named]
    return _score_names(cropped, spacing, settings, outside, with_lesions)


def score_label_maps(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    convention: LabelConvention,
    settings: ScoringSettings | None = None,
    *,
    with_lesions: bool = False,
) -> list[dict]:
    """Score a predicted label map against its reference, region by region and class by class.

    Args:
        pred: integer array ``(S, H, W)`` of raw labels in ``convention``.
        ref: integer array of the same shape and convention.
        spacing: voxel size in mm per array axis.
        convention: the labels' convention; its
            :meth:`~brainseg_d2.labels.LabelConvention.evaluation_names` say what
            is scored (regions first, then classes that are not a region).
        settings: scoring conventions.
        with_lesions: keep the per-lesion records (see :func:`score_masks`).

    Returns:
        One dict per name with ``group`` (``region``/``class``), ``name``,
        ``missing`` (False) and the metrics of :func:`score_masks`.

    Raises:
        ValueError: different shapes, or label values outside the convention
            (the message names them).
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    size = pred.size
    # Every metric is unchanged on the bounding box of both label maps grown by
    # the lesion dilation reach (outside it both are background: surfaces,
    # components, dilations and merges are those of the whole volume), but
    # true negatives outside the box are added back for the specificity.
    settings = settings or ScoringSettings()
    box = _bbox(pred != 0, ref != 0, settings.lesion.dilation_iters)
    pred = pred[box].astype(np.int64, copy=False)
    ref = ref[box].astype(np.int64, copy=False)
    outside = size - pred.size
    # Outside the box both are 0, so checking the box checks the volume.
    _check_values(pred, convention, "prediction")
    _check_values(ref, convention, "reference")
    named = [
        (group, name, _name_mask(pred, values), _name_mask(ref, values))
        for group, name, values in convention.evaluation_names()
    ]
    return _score_names(named, spacing, settings, outside, with_lesions)


def missing_prediction_rows(
    ref: np.ndarray,
    spacing: Sequence[float],
    convention: LabelConvention,
    settings: ScoringSettings | None = None,
) -> list[dict]:
    """Rows of a case whose prediction is missing, scored as BraTS scores it.

    Every score of :data:`SCORE_METRICS` is 0 and every distance of
    :data:`DISTANCE_METRICS` the penalty (374 mm), whatever the reference holds,
    as the BraTS evaluation fills in missing cases. Prediction volumes are NaN.
    """
    settings = settings or ScoringSettings()
    ref = np.asarray(ref)
    _check_values(ref, convention, "reference")
    ref = ref.astype(np.int64, copy=False)
    rows = []
    for group, name, values in convention.evaluation_names():
        n_gt = int(np.count_nonzero(_name_mask(ref, values)))
        row = {"group": group, "name": name, "missing": True, "both_empty": False}
        row.update({k: 0.0 for k in SCORE_METRICS})
        row.update({k: float(settings.hd95_penalty) for k in DISTANCE_METRICS})
        row.update({k: math.nan for k in COUNT_FIELDS})
        row.update(ref_voxels=n_gt, ref_ml=_ml(n_gt, spacing))
        rows.append(row)
    return rows


def pop_lesion_records(row: dict) -> list[dict]:
    """Take the per-lesion records out of a row scored ``with_lesions``.

    Returns:
        One dict per reference lesion and definition (``2023``: BraTS 2023
        lesion-wise, ``panoptic``: BraTS 2024+) with :data:`LESION_COLUMNS`;
        volumes in mL. The row loses its ``lesions_*`` keys.
    """
    out = []
    for definition in ("2023", "panoptic"):
        for rec in row.pop(f"lesions_{definition}", None) or []:
            out.append(
                {
                    "group": row["group"],
                    "name": row["name"],
                    "definition": definition,
                    "lesion": rec["label"],
                    "volume_ml": rec["volume"] / 1000.0,
                    "matched": rec["matched"],
                    "dice": rec["dice"],
                    "hd95": rec["hd95"],
                    "ignored": rec.get("ignored", False),
                }
            )
    return out
