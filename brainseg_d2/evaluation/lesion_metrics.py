"""BraTS 2023 lesion-wise Dice and HD95 (numpy/scipy only; no torch, no detectron2).

:func:`brats2023_lesion_metrics` follows the 2023 scripts'
``get_LesionWiseScores``: ground-truth lesions are merged when they come close
(dilation), every predicted component that touches a dilated lesion is matched
to it (many-to-one), small lesions are ignored, and every false positive adds 0
to the Dice mean and 374 mm to the HD95 mean. Per-challenge settings:
:data:`BRATS2023_LESION_SETTINGS`.

BraTS 2024+ scores lesions differently (one-to-one matching, RQ, SQ and PQ) and
gives other numbers for the same masks: see
:mod:`brainseg_d2.evaluation.panoptic_lesions`.

Arrays follow :mod:`brainseg_d2.evaluation.metrics`: ``pred`` and ``gt`` are
boolean arrays of equal shape, ``(S, H, W)`` volumes in practice (any
dimensionality works), non-boolean input is read as ``value != 0``, and
``spacing`` is the voxel size in mm in array axis order (``None``: 1 mm).

The work happens on the bounding box of ``pred | gt`` grown by the dilation
reach, which is exact (everything outside is background in both masks and
connected-component labels keep their raster order) and keeps BraTS-size
volumes fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainseg_d2.evaluation.distances import (
    hd95_from_distances,
    join_boxes,
    surface_distances,
    union_bbox,
)
from brainseg_d2.evaluation.metrics import HD95_PENALTY_MM, as_mask_pair, as_spacing
from brainseg_d2.utils.connectivity import neighbourhood_structure

__all__ = ["BRATS2023_LESION_SETTINGS", "LesionSettings", "brats2023_lesion_metrics"]


@dataclass(frozen=True)
class LesionSettings:
    """Per-challenge parameters of the BraTS 2023 lesion-wise metrics.

    Attributes:
        dilation_iters: dilations (18-neighbourhood in 3D) used to merge nearby
            ground-truth lesions and to match predictions to them.
        min_lesion_volume: lesions of at most this volume (mm^3) are ignored.
    """

    dilation_iters: int
    min_lesion_volume: float


#: BraTS 2023 settings per challenge (the 2023 scripts' ``get_LesionWiseResults``).
BRATS2023_LESION_SETTINGS: dict[str, LesionSettings] = {
    "GLI": LesionSettings(dilation_iters=3, min_lesion_volume=50.0),
    "SSA": LesionSettings(dilation_iters=3, min_lesion_volume=50.0),
    "PED": LesionSettings(dilation_iters=3, min_lesion_volume=50.0),
    "MEN": LesionSettings(dilation_iters=1, min_lesion_volume=50.0),
    "MET": LesionSettings(dilation_iters=1, min_lesion_volume=2.0),
}


def _grow(box: tuple[slice, ...], pad: int, shape: Sequence[int]) -> tuple[slice, ...]:
    """``box`` grown by ``pad`` voxels on every side, clipped to an array of ``shape``."""
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, shape))


def _dilation_structure(ndim: int, neighbours: int | None) -> np.ndarray:
    if neighbours is None:  # BraTS 2023: generate_binary_structure(3, 2), i.e. 18 in 3D
        return ndimage.generate_binary_structure(ndim, min(2, ndim))
    return neighbourhood_structure(ndim, neighbours)


def brats2023_lesion_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: float | Sequence[float] | None = None,
    connectivity: int | None = None,
    dilation_iters: int = 3,
    dilation_connectivity: int | None = None,
    min_lesion_volume: float = 0.0,
    empty_score: float = 1.0,
    hd95_convention: str = "monai",
    hd95_penalty: float = HD95_PENALTY_MM,
    empty_hd95: float = 0.0,
    compute_hd95: bool = True,
    whole_distances: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Lesion-wise Dice and HD95 as in the BraTS 2023 evaluation (``get_LesionWiseScores``).

    Step by step:

    1. Lesions. ``gt`` and ``pred`` are split into connected components with
       ``connectivity`` (26 in 3D by default). GT components that touch after
       dilating the whole GT mask ``dilation_iters`` times (structuring element
       ``dilation_connectivity``, 18 in 3D by default) are merged into one
       lesion (BraTS ``get_GTseg_combinedByDilation``).
    2. Matching. Each GT lesion is dilated the same way; every predicted
       component that intersects the dilated lesion is matched to it. A
       predicted component may match several lesions (many-to-one both ways).
    3. Per lesion: Dice and HD95 between the lesion and the union of its matched
       predicted components (whole components, also their parts outside the
       dilated lesion). A lesion nothing matches has Dice 0 and HD95
       ``hd95_penalty``.
    4. Small lesions. Lesions with volume ``<= min_lesion_volume`` (mm^3 with
       ``spacing``, else voxels) are ignored: not in the means, and predicted
       components matched to them are not false positives
       (:data:`BRATS2023_LESION_SETTINGS` has the per-challenge values; the
       default 0 keeps every lesion).
    5. Aggregate over ``n = counted lesions + false positives`` (a false
       positive is a predicted component matched to no lesion, ignored ones
       included): Dice ``sum(lesion Dice) / n`` (each false positive adds 0),
       HD95 ``(sum(lesion HD95) + 374 * false positives) / n``. When ``n`` is 0
       (both empty, or only ignored lesions and no false positive) Dice is
       ``empty_score`` and HD95 ``empty_hd95`` (BraTS: 1 and 0).

    HD95 convention: ``hd95_convention="monai"`` (default) is the maximum of
    the two directed 95th percentiles, the form the 2023 scripts use; they
    compute it with DeepMind's ``surface_distance`` package, which weights each
    distance by the area of its surface element on a half-voxel-shifted grid,
    so their lesion HD95 differs from ours by a fraction of a voxel on typical
    lesions. ``"panoptica"`` pools both directions (BraTS 2024+). See
    :func:`~brainseg_d2.evaluation.distances.hd95_from_distances`.

    Args:
        pred: bool array ``(S, H, W)`` (or ``(H, W)``).
        gt: bool array of the same shape.
        spacing: voxel size in mm per axis, for lesion volumes and HD95.
        connectivity: neighbourhood for connected components (see
            :func:`~brainseg_d2.evaluation.metrics.neighbourhood_structure`);
            ``None`` -> full (26 in 3D, BraTS).
        dilation_iters: dilation iterations in voxels (BraTS GLI/SSA/PED: 3;
            MEN/MET: 1). 0 matches on direct overlap only and merges nothing.
        dilation_connectivity: neighbourhood of one dilation step; ``None`` -> 18
            in 3D (BraTS's ``generate_binary_structure(3, 2)``), 8 in 2D.
        min_lesion_volume: lesions with a volume ``<=`` this are ignored.
        empty_score: Dice aggregate when nothing is counted (default 1.0).
        hd95_convention: ``"monai"`` or ``"panoptica"``.
        hd95_penalty: HD95 of a missed lesion and of each false positive (374).
        empty_hd95: HD95 aggregate when nothing is counted (default 0.0).
        compute_hd95: False skips the distances (HD95 values are NaN).
        whole_distances: ``surface_distances(pred, gt, spacing)`` if the caller
            has them: reused where a lesion and its matches are the whole masks
            (one lesion, every component matched), the common glioma case.

    Returns:
        dict with ``lesion_wise_dice``, ``lesion_wise_hd95`` (floats),
        ``num_lesions`` (counted GT lesions), ``num_tp`` (counted lesions with a
        match), ``num_fn``, ``num_fp`` (false-positive predicted components),
        and ``lesions``: one dict per GT lesion (ignored ones included) with
        ``label`` (1-based lesion id), ``voxels``, ``volume`` (mm^3), ``dice``,
        ``hd95`` (NaN for ignored lesions), ``matched`` (list of predicted
        component ids, 1-based labels of ``scipy.ndimage.label(pred)``) and
        ``ignored`` (bool).

    Raises:
        ValueError: different shapes, a bad spacing, connectivity or convention,
            negative ``dilation_iters``.
    """
    pred, gt = as_mask_pair(pred, gt)
    if dilation_iters < 0:
        raise ValueError(f"dilation_iters must be >= 0, got {dilation_iters!r}")
    sampling = as_spacing(spacing, pred.ndim)
    voxel = math.prod(sampling)
    structure = neighbourhood_structure(pred.ndim, connectivity)
    dil_structure = _dilation_structure(pred.ndim, dilation_connectivity)
    if compute_hd95:
        hd95_from_distances(np.zeros(1), np.zeros(1), convention=hd95_convention)  # validates
    pad = dilation_iters
    box = union_bbox(pred, gt)
    if box is not None:
        box = _grow(box, pad, gt.shape)
        pred, gt = pred[box], gt[box]

    pred_cc, n_pred = ndimage.label(pred, structure=structure)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    pred_boxes = ndimage.find_objects(pred_cc)
    if dilation_iters > 0 and gt.any():
        # Lesions = components of the dilated GT restricted to GT voxels: GT
        # components closer than the dilation reach share one lesion id.
        dilated_cc, _ = ndimage.label(
            ndimage.binary_dilation(gt, dil_structure, iterations=dilation_iters),
            structure=structure,
        )
        ids = np.unique(dilated_cc[gt])
        relabel = np.zeros(int(ids[-1]) + 1, dtype=dilated_cc.dtype)
        relabel[ids] = np.arange(1, ids.size + 1)  # consecutive lesion ids from 1
        lesions = np.where(gt, relabel[dilated_cc], 0)
    else:
        lesions, _ = ndimage.label(gt, structure=structure)

    records = []
    matched_any = np.zeros(n_pred + 1, dtype=bool)
    lesion_boxes = ndimage.find_objects(lesions)
    n_lesions = len(lesion_boxes)
    for lesion_id, lesion_box in enumerate(lesion_boxes, start=1):
        # The lesion's box grown by the dilation reach holds every voxel a
        # matching component must touch: exact and fast.
        reach_box = _grow(lesion_box, pad, gt.shape)
        lesion = lesions[reach_box] == lesion_id
        reach = lesion
        if dilation_iters > 0:
            reach = ndimage.binary_dilation(lesion, dil_structure, iterations=dilation_iters)
        matched = np.unique(pred_cc[reach_box][reach])
        matched = matched[matched != 0]
        size = int(np.count_nonzero(lesion))
        # Any predicted voxel inside the lesion belongs to a matched component.
        overlap = int(np.count_nonzero(pred[reach_box] & lesion))
        volume = size * voxel
        ignored = volume <= min_lesion_volume
        matched_any[matched] = True
        hd95 = math.nan
        if compute_hd95 and not ignored:
            if matched.size == 0:
                hd95 = float(hd95_penalty)
            elif whole_distances is not None and n_lesions == 1 and matched.size == n_pred:
                hd95 = hd95_from_distances(*whole_distances, convention=hd95_convention)
            else:
                joint = join_boxes([lesion_box, *(pred_boxes[m - 1] for m in matched)])
                sub_gt = lesions[joint] == lesion_id
                sub_pred = np.isin(pred_cc[joint], matched)
                hd95 = hd95_from_distances(
                    *surface_distances(sub_pred, sub_gt, sampling), convention=hd95_convention
                )
        records.append(
            {
                "label": lesion_id,
                "voxels": size,
                "volume": volume,
                "dice": 2.0 * overlap / (int(pred_sizes[matched].sum()) + size),
                "hd95": hd95,
                "matched": [int(m) for m in matched],
                "ignored": bool(ignored),
            }
        )

    counted = [r for r in records if not r["ignored"]]
    num_fp = int(n_pred - np.count_nonzero(matched_any[1:]))
    n = len(counted) + num_fp
    if n:
        dice_score = sum(r["dice"] for r in counted) / n
        hd95_score = (sum(r["hd95"] for r in counted) + num_fp * hd95_penalty) / n
    else:
        dice_score, hd95_score = float(empty_score), float(empty_hd95)
    num_tp = sum(1 for r in counted if r["matched"])
    return {
        "lesion_wise_dice": float(dice_score),
        "lesion_wise_hd95": float(hd95_score) if compute_hd95 else math.nan,
        "num_lesions": len(counted),
        "num_tp": num_tp,
        "num_fn": len(counted) - num_tp,
        "num_fp": num_fp,
        "lesions": records,
    }
