"""The tuning grid and the sweep: every setting scored on every validation volume."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from brainseg_d2.evaluation.metrics import confusion_counts, scores_from_counts
from brainseg_d2.labels import Target
from brainseg_d2.postprocessing import (
    PostprocessParams,
    postprocess_volume,
    probabilities_to_masks_and_seeds,
)

__all__ = ["DEFAULT_GRID", "TuningGrid", "best_setting", "region_dice", "sweep"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningGrid:
    """Values tried for each swept ``BRAINSEG.POSTPROCESS`` key (every combination).

    Attributes:
        score_thresh: ``SCORE_THRESH`` values.
        min_volume_ml: ``MIN_VOLUME_ML`` values (millilitres, so the choice holds
            at another voxel size); the swept settings set ``MIN_VOLUME_3D`` to 0.
        component_score_thresh: ``COMPONENT_SCORE_THRESH`` values; ``()`` is off.
        inner_min_volume_ml: for nested targets, ``MIN_VOLUME_ML`` values of the
            inner categories, tried after the thresholds (:func:`refine_inner_min_volume`).
        min_total_ml: for nested targets, ``MIN_TOTAL_ML`` values (millilitres) of
            the innermost category, tried after the inner minimum volume
            (:func:`refine_min_total_ml`); 0 is off.
        core_hull_margin: for nested targets, ``CORE_HULL_MARGIN`` values, tried
            last (:func:`refine_core_hull_margin`); -1 is off.
    """

    score_thresh: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    min_volume_ml: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    component_score_thresh: tuple[tuple[float, ...], ...] = ((), (0.8,), (0.9,), (0.95,))
    inner_min_volume_ml: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5)
    min_total_ml: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    core_hull_margin: tuple[int, ...] = (-1, 0, 1, 2, 4)

    def settings(self, base: PostprocessParams, target: Target) -> list[PostprocessParams]:
        """Every combination, as ``base`` with the swept keys replaced (see module doc)."""
        inner = len(target.categories) - 1 if target.nested else 0

        def outer(values: tuple, off) -> tuple:
            return tuple(values) + (off,) * inner if values else ()

        # The core hull is chosen last (refine_core_hull_margin); the grid runs without it.
        hull = -1 if inner and self.core_hull_margin else base.core_hull_margin
        return [
            replace(base, enabled=True, score_threshold=t, min_volume_3d=(0,),
                    min_volume_ml=outer((v,), 0.0), component_score_threshold=outer(tuple(c), 0.0),
                    core_hull_margin=hull)
            for t, v, c in itertools.product(
                self.score_thresh, self.min_volume_ml, self.component_score_thresh
            )
        ]  # fmt: skip


DEFAULT_GRID = TuningGrid()


def region_masks(
    masks: np.ndarray, gt: np.ndarray, target: Target
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(region, predicted, reference)`` bool ``(S, H, W)`` masks of each BraTS region.

    A region is the union of its categories (see ``volume_scores.region_categories``).
    """
    from brainseg_d2.evaluation.volume_scores import region_categories

    for region, idx in region_categories(target).items():
        yield region, np.logical_or.reduce(masks[list(idx)]), np.logical_or.reduce(gt[list(idx)])


def region_dice(masks: np.ndarray, gt: np.ndarray, target: Target) -> dict[str, float]:
    """Volume Dice per BraTS region the target expresses (both empty = 1).

    Args:
        masks, gt: bool ``(C, S, H, W)`` category masks.
        target: the dataset's target (which categories form which region).

    Returns:
        region name -> Dice.
    """
    return {
        region: scores_from_counts(*confusion_counts(pred, ref), empty_score=1.0)["dice"]
        for region, pred, ref in region_masks(masks, gt, target)
    }


def _needs_full_path(params: PostprocessParams) -> bool:
    """Whether ``params`` has a step that :func:`_score_settings_fast` does not model."""
    return bool(
        params.opening_kernel > 1 or params.closing_kernel > 1 or params.fill_holes
        or params.min_area_2d > 0 or params.keep_largest_k > 0
        or (params.enabled and (params.core_hull_margin >= 0 or any(params.min_total_ml)))
    )  # fmt: skip


def _crop_to_content(
    scores: np.ndarray, gt: np.ndarray, lowest: float
) -> tuple[np.ndarray, np.ndarray]:
    """``scores`` and ``gt`` cut to the box of every voxel scoring ``>= lowest`` or in ``gt``.

    Outside that box no setting keeps a voxel and the reference is empty, so every
    component and every count behind Dice stays the same; the sweep just labels
    and counts far fewer voxels (a tumour fills a small part of a volume).
    """
    from scipy import ndimage

    content = (scores >= np.float32(lowest)).any(0) | gt.any(0)
    boxes = ndimage.find_objects(content.astype(np.int8))
    box = boxes[0] if boxes else (slice(0, 1),) * content.ndim
    return scores[(slice(None), *box)], gt[(slice(None), *box)]


def _score_settings_fast(
    scores: np.ndarray,
    gt: np.ndarray,
    target: Target,
    settings: Sequence[PostprocessParams],
    voxel_ml: float | None,
) -> list[dict[str, float]]:
    """Region Dice of every setting, labelling each category once per score threshold.

    Exactly :func:`postprocess_volume` for settings whose only steps are the swept
    ones (score thresholds, minimum 3D volume, hysteresis) and nesting: those drop
    whole 3D components of the thresholded masks, so one labelling serves them all.
    Only the box that holds the reference and every voxel above the lowest
    threshold is labelled (:func:`_crop_to_content`).
    """
    from scipy import ndimage

    from brainseg_d2.evaluation.metrics import neighbourhood_structure

    num_categories = len(scores)
    lowest = min(min(p.score_thresholds(num_categories)) for p in settings)
    scores, gt = _crop_to_content(scores, gt, lowest)
    labelled: dict[tuple[int, float, int], tuple[np.ndarray, int, np.ndarray]] = {}

    def components(c: int, threshold: float, connectivity: int):
        key = (c, float(threshold), connectivity)
        if key not in labelled:
            structure = neighbourhood_structure(3, connectivity)
            lab, n = ndimage.label(scores[c] >= np.float32(threshold), structure=structure)
            labelled[key] = (lab, n, np.bincount(lab.ravel(), minlength=n + 1))
        return labelled[key]

    out = []
    for p in settings:
        thresholds = p.score_thresholds(num_categories)
        seeds = p.component_thresholds(num_categories) if p.enabled else None
        min_volumes = p.min_component_voxels(num_categories, voxel_ml)
        kept = np.zeros(scores.shape, dtype=bool)
        for c in range(num_categories):
            lab, n, size = components(c, thresholds[c], p.connectivity_3d)
            keep = size >= min_volumes[c]
            if seeds is not None:
                seeded = np.zeros(n + 1, dtype=bool)
                seeded[lab[scores[c] >= np.float32(seeds[c])]] = True
                keep &= seeded
            keep[0] = False
            kept[c] = keep[lab]
        if target.nested and p.enabled:
            for c in range(1, num_categories):
                kept[c] &= kept[c - 1]
        out.append(region_dice(kept, gt, target))
    return out


def sweep(
    volumes: Iterable[tuple[str, np.ndarray, np.ndarray, float]],
    target: Target,
    settings: Sequence[PostprocessParams],
) -> list[dict]:
    """Score every setting on every volume.

    Args:
        volumes: ``(volume_id, scores, gt, voxel_ml)`` with float ``(C, S, H, W)``
            per-voxel scores in [0, 1], bool ``(C, S, H, W)`` ground truth and one
            voxel's volume in millilitres.
        target: the dataset's target.
        settings: post-processing settings to try.

    Returns:
        one dict per setting: ``params``, ``dice`` (region -> mean over volumes),
        ``objective`` (mean over regions) and ``num_volumes``.
    """
    totals: list[dict[str, float]] = [defaultdict(float) for _ in settings]
    fast = not any(_needs_full_path(p) for p in settings)
    count = 0
    for volume_id, scores, gt, voxel_ml in volumes:
        count += 1
        if fast:
            per_setting = _score_settings_fast(scores, gt, target, settings, voxel_ml)
        else:
            per_setting = []
            for params in settings:
                masks, seeds = probabilities_to_masks_and_seeds(scores, params)
                masks = postprocess_volume(
                    masks, params, enforce_nesting=target.nested, seeds=seeds, voxel_ml=voxel_ml
                )
                per_setting.append(region_dice(masks, gt, target))
        for total, dice in zip(totals, per_setting):
            for region, value in dice.items():
                total[region] += value
        logger.info("tuning: scored %d settings on %s", len(settings), volume_id)
    if not count:
        raise ValueError("no validation volume to tune the post-processing on")
    results = []
    for params, total in zip(settings, totals):
        dice = {region: value / count for region, value in total.items()}
        results.append(
            {"params": params, "dice": dice, "objective": float(np.mean(list(dice.values()))),
             "num_volumes": count}
        )  # fmt: skip
    return results


def _simplicity(params: PostprocessParams) -> tuple:
    """Sort key among equal objectives: the setting that changes the least first."""
    return (
        max(params.min_volume_ml),
        max(params.min_volume_3d),
        max(params.component_score_threshold, default=0.0),
        abs(params.score_threshold - 0.5),
    )


def best_setting(results: Sequence[Mapping]) -> Mapping:
    """The result with the highest objective (ties: :func:`_simplicity`)."""
    if not results:
        raise ValueError("no tuning results to choose from")
    top = max(round(r["objective"], 6) for r in results)
    tied = [r for r in results if round(r["objective"], 6) == top]
    return min(tied, key=lambda r: _simplicity(r["params"]))
