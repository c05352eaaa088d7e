"""BraTS 2024+ lesion qualities: one-to-one lesion matching with RQ, SQ and PQ.

:func:`panoptic_lesion_metrics` computes the lesion scores of the
``brats-evaluation`` package, i.e. panoptica's BraTS configuration: connected
components on both sides, one-to-one matching that maximises the summed Dice of
matched pairs (pairs need Dice >= :data:`PANOPTICA_MATCHING_THRESHOLD`), then
recognition quality RQ (the F1 score of lesion detection), segmentation quality
SQ (mean Dice of matched pairs) and panoptic quality PQ = SQ x RQ, plus the mean
HD95 of matched pairs.

The BraTS 2023 lesion-wise Dice and HD95 are a different definition (lesions
merged by dilation, many-to-one matching, a fixed penalty per false positive)
and give other numbers for the same masks; they live in
:mod:`brainseg_d2.evaluation.lesion_metrics`.

Arrays follow :mod:`brainseg_d2.evaluation.metrics`: ``pred`` and ``gt`` are
boolean arrays of equal shape, ``(S, H, W)`` volumes in practice (any
dimensionality works), non-boolean input is read as ``value != 0``, and
``spacing`` is the voxel size in mm in array axis order (``None``: 1 mm). The
work happens on the bounding box of ``pred | gt``, which is exact (everything
outside is background in both masks and connected-component labels keep their
raster order) and keeps BraTS-size volumes fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from brainseg_d2.evaluation.distances import (
    hd95_from_distances,
    join_boxes,
    surface_distances,
    union_bbox,
)
from brainseg_d2.evaluation.metrics import as_mask_pair, as_spacing
from brainseg_d2.utils.connectivity import neighbourhood_structure

__all__ = ["PANOPTICA_MATCHING_THRESHOLD", "panoptic_lesion_metrics"]

#: Dice a pair of components needs to be matched in the BraTS 2024+ configuration.
PANOPTICA_MATCHING_THRESHOLD = 1e-6


def panoptic_lesion_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: float | Sequence[float] | None = None,
    connectivity: int | None = None,
    matching_threshold: float = PANOPTICA_MATCHING_THRESHOLD,
    hd95_convention: str = "panoptica",
    zero_tp_hd95: float = math.inf,
    whole_distances: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Lesion detection and segmentation qualities as the BraTS 2024+ evaluator computes them.

    The official ``brats-evaluation`` package runs panoptica with, per region,
    connected-component instances, ``MaxBipartiteMatching`` on Dice with
    threshold 1e-6, and Dice, NSD and HD95 per matched pair. This function
    implements that configuration (Dice and HD95; checked against panoptica
    2.1):

    1. Instances: connected components of ``gt`` (reference lesions) and of
       ``pred`` with ``connectivity`` (26 in 3D by default).
    2. Matching, one-to-one: among pairs with Dice ``>= matching_threshold``,
       the assignment with the largest summed Dice (Hungarian algorithm,
       :func:`scipy.optimize.linear_sum_assignment`, on the cost ``1 - Dice``,
       other pairs costing a little over 1 and never kept). Unmatched
       reference lesions are false negatives, unmatched predicted components
       false positives.
    3. Scores: ``rq = tp / (tp + fp/2 + fn/2)`` (F1 of detection), ``sq`` = mean
       Dice of the matched pairs, ``pq = sq * rq``, ``sq_hd95`` = mean HD95 of
       the matched pairs (``hd95_convention="panoptica"``: the 95th percentile
       of the pooled surface distances of both directions, with ``spacing``),
       ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``.

    Edge cases as panoptica's BraTS configuration: with no lesion on either
    side every score is NaN (panoptica leaves such a case out of its means);
    with lesions but no match, ``rq``, ``sq`` and ``pq`` are 0 and ``sq_hd95`` is
    ``zero_tp_hd95`` (panoptica: ``inf``). Precision or recall with a zero
    denominator is NaN. Note that panoptica computes its *global* (whole-mask)
    HD95 without the voxel spacing; this function only covers lesions.

    Args:
        pred: bool array ``(S, H, W)`` (or ``(H, W)``).
        gt: bool array of the same shape.
        spacing: voxel size in mm per axis, for volumes and HD95.
        connectivity: neighbourhood of the components; ``None`` -> 26 in 3D.
        matching_threshold: least Dice of a matched pair.
        hd95_convention: ``"panoptica"`` (default) or ``"monai"``.
        zero_tp_hd95: ``sq_hd95`` when lesions exist but none is matched.
        whole_distances: ``surface_distances(pred, gt, spacing)`` if the caller
            has them: reused when both masks are one component each.

    Returns:
        dict with ``num_ref``, ``num_pred``, ``tp``, ``fp``, ``fn`` (ints),
        ``precision``, ``recall``, ``rq``, ``sq``, ``pq``, ``sq_hd95`` (floats),
        and ``lesions``: one dict per reference lesion with ``label`` (1-based
        component id of ``scipy.ndimage.label(gt)``), ``voxels``, ``volume``
        (mm^3), ``matched`` (the predicted component id or None), ``dice`` and
        ``hd95`` (0 and NaN when unmatched).

    Raises:
        ValueError: different shapes, a bad spacing, connectivity or convention.
    """
    pred, gt = as_mask_pair(pred, gt)
    sampling = as_spacing(spacing, pred.ndim)
    voxel = math.prod(sampling)
    structure = neighbourhood_structure(pred.ndim, connectivity)
    hd95_from_distances(np.zeros(1), np.zeros(1), convention=hd95_convention)  # validates
    box = union_bbox(pred, gt)
    if box is not None:
        pred, gt = pred[box], gt[box]
    ref_cc, n_ref = ndimage.label(gt, structure=structure)
    pred_cc, n_pred = ndimage.label(pred, structure=structure)
    ref_sizes = np.bincount(ref_cc.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)

    pairs: list[tuple[int, int, float]] = []  # (ref id, pred id, dice)
    if n_ref and n_pred:
        both = (ref_cc > 0) & (pred_cc > 0)
        codes = ref_cc[both].astype(np.int64) * (n_pred + 1) + pred_cc[both]
        inter = np.bincount(codes, minlength=(n_ref + 1) * (n_pred + 1))
        inter = inter.reshape(n_ref + 1, n_pred + 1)[1:, 1:]
        dice = 2.0 * inter / (ref_sizes[1:, None] + pred_sizes[None, 1:])
        # panoptica's cost matrix: 1 - Dice for pairs that pass the threshold,
        # a little over 1 otherwise; the solver assigns min(n_ref, n_pred) pairs
        # and only those below cost 1 are matches.
        cost = np.full(dice.shape, 1.0 + 1e-6)
        valid = dice >= matching_threshold
        cost[valid] = 1.0 - dice[valid]
        rows, cols = linear_sum_assignment(cost)
        pairs = [
            (int(r) + 1, int(c) + 1, float(dice[r, c]))
            for r, c in zip(rows, cols)
            if cost[r, c] < 1.0
        ]

    ref_boxes = ndimage.find_objects(ref_cc)
    pred_boxes = ndimage.find_objects(pred_cc)
    match = {r: (p, d) for r, p, d in pairs}
    lesions = []
    for label in range(1, n_ref + 1):
        record = {
            "label": label,
            "voxels": int(ref_sizes[label]),
            "volume": int(ref_sizes[label]) * voxel,
            "matched": None,
            "dice": 0.0,
            "hd95": math.nan,
        }
        if label in match:
            p, d = match[label]
            if whole_distances is not None and n_ref == n_pred == 1:
                distances = whole_distances
            else:
                joint = join_boxes([ref_boxes[label - 1], pred_boxes[p - 1]])
                distances = surface_distances(pred_cc[joint] == p, ref_cc[joint] == label, sampling)
            record.update(
                matched=p, dice=d, hd95=hd95_from_distances(*distances, convention=hd95_convention)
            )
        lesions.append(record)

    tp = len(pairs)
    fp, fn = n_pred - tp, n_ref - tp
    nan = math.nan
    if n_ref + n_pred == 0:
        rq = sq = pq = sq_hd95 = nan
    elif tp == 0:
        rq = sq = pq = 0.0
        sq_hd95 = float(zero_tp_hd95)
    else:
        rq = tp / (tp + 0.5 * fp + 0.5 * fn)
        sq = float(np.mean([d for _, _, d in pairs]))
        pq = sq * rq
        sq_hd95 = float(np.mean([r["hd95"] for r in lesions if r["matched"] is not None]))
    return {
        "num_ref": int(n_ref),
        "num_pred": int(n_pred),
        "tp": tp,
        "fp": int(fp),
        "fn": int(fn),
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
        "rq": rq,
        "sq": sq,
        "pq": pq,
        "sq_hd95": sq_hd95,
        "lesions": lesions,
    }
