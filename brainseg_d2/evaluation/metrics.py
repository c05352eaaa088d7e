"""Segmentation metrics on boolean masks (numpy/scipy only; no torch, no detectron2).

Every function takes ``pred`` and ``gt`` boolean arrays of the same shape and any
dimensionality: a slice ``(H, W)`` or a volume ``(S, H, W)``. Non-boolean input is
read as ``value != 0``. ``spacing`` is the physical voxel size in millimetres, one
value per array axis and in the same axis order as the array (for a ``(S, H, W)``
volume: ``(slice thickness, row spacing, column spacing)``); ``None`` means 1 mm.

The maths lives in stateless functions (MONAI style): :func:`confusion_counts` and
:func:`scores_from_counts` so evaluators can pool counts over slices and score a
whole volume from the pooled counts; volume differences. Surface distances and
HD95 live in :mod:`brainseg_d2.evaluation.distances`.
:class:`PooledCounts` is the small accumulator that sums counts per
``(volume, category)``. Lesion-wise scores live in
:mod:`brainseg_d2.evaluation.lesion_metrics` (BraTS 2023 lesion-wise Dice and
HD95) and :mod:`brainseg_d2.evaluation.panoptic_lesions` (BraTS 2024+ panoptic
qualities); :func:`lesion_wise_dice` is kept here for its callers.

Empty-mask policy (parameters, with these defaults): when prediction and ground
truth are both empty, overlap scores are ``empty_score=1.0`` (as BraTS scores
them) and HD95 is ``both_empty=0.0``; when exactly one is empty, overlap scores
are 0 and HD95 is the *penalty* :data:`HD95_PENALTY_MM` (374 mm, BraTS 2023): not a
measured distance, a stand-in for an undefined one.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from brainseg_d2.utils.connectivity import neighbourhood_structure

__all__ = [
    "HD95_PENALTY_MM",
    "PooledCounts",
    "absolute_volume_difference",
    "as_mask_pair",
    "as_spacing",
    "confusion_counts",
    "dice",
    "iou",
    "lesion_wise_dice",
    "neighbourhood_structure",
    "pixel_accuracy",
    "precision",
    "relative_volume_difference",
    "scores_from_counts",
    "sensitivity",
    "specificity",
]

#: The HD95 *penalty* (mm): the value every metric of this package reports where a
#: distance is undefined because one side is empty (one empty mask, a missed
#: lesion, a false-positive lesion, a missing prediction). It is the BraTS 2023
#: evaluation's value (its scripts replace ``inf`` by 374, a little over the
#: 373.13 mm diagonal of a 240 x 240 x 155 volume at 1 mm), which is also what
#: BraTS ranks lesion-wise HD95 with; the BraTS 2024+ package (``brats-evaluation``)
#: writes 373. One name, used by the Detectron2 evaluator, ``brainseg-evaluate``
#: and ``cfg.BRAINSEG.EVAL.HD95_PENALTY``; reports label it as a penalty.
HD95_PENALTY_MM = 374.0


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------


def as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as bool arrays of one shape (ValueError naming both shapes)."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got pred {pred.shape} and gt {gt.shape}"
        )
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def as_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """One spacing per axis from None (1 mm), one number, or one per axis."""
    if spacing is None:
        return (1.0,) * ndim
    values = np.atleast_1d(np.asarray(spacing, dtype=float))
    if values.ndim != 1 or values.size not in (1, ndim):
        raise ValueError(
            f"spacing must be a number or one value per axis ({ndim}), got {spacing!r}"
        )
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"spacing values must be finite and > 0, got {spacing!r}")
    return tuple(float(v) for v in np.broadcast_to(values, (ndim,)))


# ---------------------------------------------------------------------------
# overlap scores
# ---------------------------------------------------------------------------


def confusion_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """Voxel confusion counts of a binary prediction against the ground truth.

    Args:
        pred: bool array of any shape, e.g. ``(H, W)`` or ``(S, H, W)``.
        gt: bool array of the same shape.

    Returns:
        ``(tp, fp, fn, tn)`` as Python ints; they sum to ``pred.size``.

    Raises:
        ValueError: if the shapes differ (the message names both).
    """
    pred, gt = as_mask_pair(pred, gt)
    tp = int(np.count_nonzero(pred & gt))
    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    fp = n_pred - tp
    fn = n_gt - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _ratio(num: int, den: int, perfect: bool, empty_score: float) -> float:
    if den == 0:
        return float(empty_score) if perfect else 0.0
    return num / den


def scores_from_counts(
    tp: int, fp: int, fn: int, tn: int, *, empty_score: float = 1.0
) -> dict[str, float]:
    """All overlap scores from confusion counts (pooled over slices if you like).

    Pooling counts over the slices of a volume and scoring once gives the
    per-volume Dice, which differs from the mean of per-slice Dice scores.

    A score whose denominator is 0 is undefined. It is ``empty_score`` when
    prediction and ground truth agree everywhere (``fp == fn == 0``; for Dice and
    IoU this is "both masks empty", which BraTS scores 1.0), and 0 otherwise (e.g.
    sensitivity with an empty ground truth and a non-empty prediction, as in the
    BraTS 2023 evaluation code). Use ``empty_score=float("nan")`` to exclude such
    cases from a later ``nanmean`` (MONAI's ``ignore_empty=True``).

    Args:
        tp, fp, fn, tn: non-negative voxel counts.
        empty_score: score of an undefined ratio under perfect agreement.

    Returns:
        dict with keys ``dice`` (2TP / (2TP+FP+FN)), ``iou`` (TP / (TP+FP+FN)),
        ``precision`` (TP / (TP+FP)), ``sensitivity`` (TP / (TP+FN)),
        ``specificity`` (TN / (TN+FP)) and ``accuracy`` ((TP+TN) / all).

    Raises:
        ValueError: if a count is negative.
    """
    counts = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"confusion counts must be >= 0, got {name}={value}")
    tp, fp, fn, tn = (int(v) for v in counts.values())
    perfect = fp == 0 and fn == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, perfect, empty_score),
        "iou": _ratio(tp, tp + fp + fn, perfect, empty_score),
        "precision": _ratio(tp, tp + fp, perfect, empty_score),
        "sensitivity": _ratio(tp, tp + fn, perfect, empty_score),
        "specificity": _ratio(tn, tn + fp, perfect, empty_score),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, perfect, empty_score),
    }


def dice(pred: np.ndarray, gt: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Dice coefficient 2|P∩G| / (|P|+|G|) of two bool arrays of equal shape.

    Both empty -> ``empty_score`` (default 1.0, BraTS); one empty -> 0.0.
    """
    return scores_from_counts(*confusion_counts(pred, gt), empty_score=empty_score)["dice"]


def iou(pred: np.ndarray, gt: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Intersection over union (Jaccard) |P∩G| / |P∪G| of two bool arrays of equal shape.

    Both empty -> ``empty_score`` (default 1.0); one empty -> 0.0.
    """
    return scores_from_counts(*confusion_counts(pred, gt), empty_score=empty_score)["iou"]


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Fraction of voxels where pred and gt agree; ``empty_score`` only for size-0 arrays."""
    return scores_from_counts(*confusion_counts(pred, gt), empty_score=empty_score)["accuracy"]


def sensitivity(pred: np.ndarray, gt: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Recall TP / (TP+FN). Empty gt: ``empty_score`` if pred is empty too, else 0.0."""
    scores = scores_from_counts(*confusion_counts(pred, gt), empty_score=empty_score)
    return scores["sensitivity"]


def specificity(pred: np.ndarray, gt: np.ndarray, *, empty_score: float = 1.0) -> float:
    """TN / (TN+FP). All-foreground gt: ``empty_score`` if pred is all foreground, else 0.0."""
    scores = scores_from_counts(*confusion_counts(pred, gt), empty_score=empty_score)
    return scores["specificity"]


def precision(pred: np.ndarray, gt: np.ndarray, *, empty_score: float = 1.0) -> float:
    """Precision TP / (TP+FP). Empty pred: ``empty_score`` if gt is empty too, else 0.0."""
    scores = scores_from_counts(*confusion_counts(pred, gt), empty_score=empty_score)
    return scores["precision"]


# ---------------------------------------------------------------------------
# volumes
# ---------------------------------------------------------------------------


def absolute_volume_difference(
    pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None
) -> float:
    """Absolute volume difference ``| |P| - |G| |`` in mm^3 (divide by 1000 for ml).

    Args:
        pred: bool array of any shape.
        gt: bool array of the same shape.
        spacing: voxel size in mm per axis (array axis order); ``None`` -> 1 mm.

    Returns:
        Non-negative volume difference in cubic millimetres (square millimetres
        for 2D input).
    """
    pred, gt = as_mask_pair(pred, gt)
    voxel = math.prod(as_spacing(spacing, pred.ndim))
    return abs(int(np.count_nonzero(pred)) - int(np.count_nonzero(gt))) * voxel


def relative_volume_difference(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    both_empty: float = 0.0,
    gt_empty: float = float("nan"),
) -> float:
    """Signed relative volume difference ``(|P| - |G|) / |G|`` (spacing cancels out).

    Positive means over-segmentation. With an empty ground truth the ratio is
    undefined: ``both_empty`` (default 0.0) when pred is empty too, else
    ``gt_empty`` (default NaN, so that ``nanmean`` skips it).

    Args:
        pred: bool array of any shape.
        gt: bool array of the same shape.

    Returns:
        The signed relative difference (0.25 = 25 % too large).
    """
    pred, gt = as_mask_pair(pred, gt)
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_gt == 0:
        return float(both_empty) if n_pred == 0 else float(gt_empty)
    return (n_pred - n_gt) / n_gt


# ---------------------------------------------------------------------------
# lesion-wise Dice (BraTS 2023), kept for its callers
# ---------------------------------------------------------------------------


def lesion_wise_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: float | Sequence[float] | None = None,
    connectivity: int | None = None,
    dilation_iters: int = 3,
    dilation_connectivity: int | None = None,
    min_lesion_volume: float = 0.0,
    empty_score: float = 1.0,
) -> dict:
    """Lesion-wise Dice as in the BraTS 2023 evaluation (``get_LesionWiseScores``).

    The same computation as
    :func:`brainseg_d2.evaluation.lesion_metrics.brats2023_lesion_metrics` (see
    there for the steps and parameters), without the lesion HD95. Kept with its
    old signature for callers such as the Detectron2 evaluator.

    Returns:
        dict with ``lesion_wise_dice`` (float), ``num_lesions`` (counted GT
        lesions), ``num_tp`` (counted lesions with a match), ``num_fn``, ``num_fp``
        (false-positive predicted components), and ``lesions``: one dict per GT
        lesion (ignored ones included) with ``label`` (1-based lesion id),
        ``volume``, ``dice``, ``matched`` (list of predicted component ids, 1-based
        labels of ``scipy.ndimage.label(pred)``) and ``ignored`` (bool).
    """
    # Imported here: lesion_metrics builds on this module.
    from brainseg_d2.evaluation.lesion_metrics import brats2023_lesion_metrics

    out = brats2023_lesion_metrics(
        pred,
        gt,
        spacing=spacing,
        connectivity=connectivity,
        dilation_iters=dilation_iters,
        dilation_connectivity=dilation_connectivity,
        min_lesion_volume=min_lesion_volume,
        empty_score=empty_score,
        compute_hd95=False,
    )
    lesions = [
        {k: r[k] for k in ("label", "volume", "dice", "matched", "ignored")} for r in out["lesions"]
    ]
    return {
        "lesion_wise_dice": out["lesion_wise_dice"],
        "num_lesions": out["num_lesions"],
        "num_tp": out["num_tp"],
        "num_fn": out["num_fn"],
        "num_fp": out["num_fp"],
        "lesions": lesions,
    }


# ---------------------------------------------------------------------------
# accumulator
# ---------------------------------------------------------------------------


class PooledCounts:
    """Sums confusion counts per ``(volume, category)`` over slices.

    Per-volume scores come from the pooled counts (:func:`scores_from_counts`), so a
    volume's Dice is the Dice of its 3D masks, not the mean of slice Dice scores.
    Counts are small tuples: evaluators can gather :meth:`counts` across ranks and
    :meth:`add` them on the main process.

    Example::

        acc = PooledCounts()
        for volume_id, category, pred_slice, gt_slice in slices:
            acc.update(volume_id, category, pred_slice, gt_slice)
        acc.scores()  # {(volume_id, category): {"dice": ..., "iou": ..., ...}}
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[Hashable, Hashable], list[int]] = {}

    def update(
        self, volume: Hashable, category: Hashable, pred: np.ndarray, gt: np.ndarray
    ) -> None:
        """Add the counts of one slice (or any chunk) ``pred``/``gt`` of equal shape."""
        self.add(volume, category, confusion_counts(pred, gt))

    def add(self, volume: Hashable, category: Hashable, counts: Sequence[int]) -> None:
        """Add precomputed ``(tp, fp, fn, tn)`` counts."""
        if len(counts) != 4:
            raise ValueError(f"counts must be (tp, fp, fn, tn), got {counts!r}")
        total = self._counts.setdefault((volume, category), [0, 0, 0, 0])
        for i, value in enumerate(counts):
            total[i] += int(value)

    def counts(self) -> dict[tuple[Hashable, Hashable], tuple[int, int, int, int]]:
        """Pooled ``(tp, fp, fn, tn)`` per ``(volume, category)``."""
        return {key: tuple(value) for key, value in self._counts.items()}

    def scores(self, *, empty_score: float = 1.0) -> dict[tuple[Hashable, Hashable], dict]:
        """Scores per ``(volume, category)`` from pooled counts (:func:`scores_from_counts`)."""
        return {
            key: scores_from_counts(*value, empty_score=empty_score)
            for key, value in self._counts.items()
        }

    def reset(self) -> None:
        self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)
