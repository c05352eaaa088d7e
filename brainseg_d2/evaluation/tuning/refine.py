"""Refinements after the grid: per-category thresholds, the inner categories' minimum
volume, the least total enhancing volume, the core's hull margin."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from brainseg_d2.evaluation.tuning.cache import read_cached
from brainseg_d2.evaluation.tuning.grid import region_dice, region_masks, sweep
from brainseg_d2.labels import Target
from brainseg_d2.postprocessing import (
    PostprocessParams,
    postprocess_volume,
    probabilities_to_masks_and_seeds,
)

__all__ = [
    "lesion_dice_by_region",
    "refine_category_thresholds",
    "refine_core_hull_margin",
    "refine_inner_min_volume",
    "refine_min_total_ml",
]


def refine_category_thresholds(
    paths: Sequence[Path],
    target: Target,
    params: PostprocessParams,
    thresholds: Sequence[float],
) -> tuple[PostprocessParams, list[dict]]:
    """Give each category its own score threshold, one category at a time.

    Starting from ``params`` (one threshold for all), each category's threshold
    in turn is swept over ``thresholds`` with the others fixed, keeping the best
    objective (ties keep the current value). For nested targets WT's threshold
    decides the lesions, TC's and ET's then how much of each lesion is core or
    enhancing, so they need not be equal.

    Returns:
        the refined settings and the results of every step.
    """
    num_categories = len(target.categories)
    start = tuple(params.score_thresholds(num_categories))
    current = replace(params, category_score_threshold=start)
    best = None
    history = []
    for c in range(num_categories):
        trials = []
        for t in thresholds:
            values = list(current.category_score_threshold)
            values[c] = float(t)
            trials.append(replace(current, category_score_threshold=tuple(values)))
        results = sweep(read_cached(paths), target, trials)
        history += results
        top = max(round(r["objective"], 6) for r in results)
        tied = [r for r in results if round(r["objective"], 6) == top]
        keep = current.category_score_threshold[c]
        best = min(tied, key=lambda r: abs(r["params"].category_score_threshold[c] - keep))
        current = best["params"]
    return current, history


def lesion_dice_by_region(masks: np.ndarray, gt: np.ndarray, target: Target) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice per region (every ground-truth lesion counted).

    Args:
        masks, gt: bool ``(C, S, H, W)`` category masks.
        target: the dataset's target.

    Returns:
        region name -> lesion-wise Dice (3 dilations, 26-connectivity, each false
        positive component adds 0; see ``lesion_metrics.brats2023_lesion_metrics``).
    """
    from brainseg_d2.evaluation.lesion_metrics import brats2023_lesion_metrics

    return {
        region: brats2023_lesion_metrics(
            pred, ref, min_lesion_volume=0.0, compute_hd95=False
        )["lesion_wise_dice"]
        for region, pred, ref in region_masks(masks, gt, target)
    }


def refine_inner_min_volume(
    paths: Sequence[Path],
    target: Target,
    params: PostprocessParams,
    volumes_ml: Sequence[float],
) -> tuple[PostprocessParams, list[dict]]:
    """Choose one minimum component volume (ml) for the inner categories of a nested target.

    Each of ``volumes_ml`` is tried for every inner category (the outer one keeps
    its value); the objective is the mean over regions of volume Dice and
    lesion-wise Dice (:func:`lesion_dice_by_region`), averaged over volumes.
    Ties keep the smallest volume. Non-nested targets are returned unchanged.

    Returns:
        the chosen settings and one result per tried volume (``dice``,
        ``lesion_dice``, ``objective``, ``num_volumes``).
    """
    if not target.nested or not volumes_ml:
        return params, []
    num_categories = len(target.categories)
    outer = params.min_volumes_ml(num_categories)[0]
    trials = [
        replace(params, min_volume_ml=(outer,) + (float(v),) * (num_categories - 1))
        for v in sorted(set(volumes_ml))
    ]
    return _first_best(_volume_and_lesion_results(paths, target, trials))


def refine_min_total_ml(
    paths: Sequence[Path],
    target: Target,
    params: PostprocessParams,
    volumes_ml: Sequence[float],
) -> tuple[PostprocessParams, list[dict]]:
    """Choose the innermost category's ``min_total_ml`` for a nested target (ET for ``regions``).

    Below that total an enhancing call is moved to the core, the case-level rule
    BraTS submissions use: in a tumour without enhancement (low-grade gliomas
    often have none), any enhancing voxel makes the case's ET Dice 0 instead of 1.
    Each of ``volumes_ml`` is tried with everything else as in ``params``; the
    objective is that of :func:`refine_inner_min_volume` (volume and lesion-wise
    Dice). Ties keep the smallest. Non-nested targets are returned unchanged.

    Returns:
        the chosen settings and one result per tried volume.
    """
    if not target.nested or not volumes_ml:
        return params, []
    outer = (0.0,) * (len(target.categories) - 1)
    trials = [replace(params, min_total_ml=outer + (float(v),)) for v in sorted(set(volumes_ml))]
    return _first_best(_volume_and_lesion_results(paths, target, trials))


def refine_core_hull_margin(
    paths: Sequence[Path],
    target: Target,
    params: PostprocessParams,
    margins: Sequence[int],
) -> tuple[PostprocessParams, list[dict]]:
    """Choose ``core_hull_margin`` for a nested target: off (-1) or a margin in voxels.

    Each of ``margins`` is tried with everything else as in ``params``; the
    objective is that of :func:`refine_inner_min_volume` (volume and lesion-wise
    Dice). Ties keep the first in the order off, then the widest margin, so the
    core is cut only where that scores better. Non-nested targets are returned
    unchanged.

    Returns:
        the chosen settings and one result per tried margin.
    """
    if not target.nested or not margins:
        return params, []
    order = sorted(set(int(m) for m in margins), key=lambda m: (m >= 0, -m))
    trials = [replace(params, core_hull_margin=m) for m in order]
    return _first_best(_volume_and_lesion_results(paths, target, trials))


def _volume_and_lesion_results(
    paths: Sequence[Path], target: Target, trials: Sequence[PostprocessParams]
) -> list[dict]:
    """Each trial's mean volume and lesion-wise Dice per region over the cached volumes.

    The objective is the mean over regions of (volume Dice + lesion-wise Dice) / 2.
    """
    sums = [(defaultdict(float), defaultdict(float)) for _ in trials]
    count = 0
    for _volume_id, scores, gt, voxel_ml in read_cached(paths):
        count += 1
        for p, (dice_sum, lesion_sum) in zip(trials, sums):
            masks, seeds = probabilities_to_masks_and_seeds(scores, p)
            masks = postprocess_volume(
                masks, p, enforce_nesting=True, seeds=seeds, voxel_ml=voxel_ml
            )
            for region, value in region_dice(masks, gt, target).items():
                dice_sum[region] += value
            for region, value in lesion_dice_by_region(masks, gt, target).items():
                lesion_sum[region] += value
    if not count:
        raise ValueError("no validation volume to tune the post-processing on")
    results = []
    for p, (dice_sum, lesion_sum) in zip(trials, sums):
        dice = {k: v / count for k, v in dice_sum.items()}
        lesion = {k: v / count for k, v in lesion_sum.items()}
        objective = float(np.mean([(dice[k] + lesion[k]) / 2 for k in dice]))
        results.append({"params": p, "dice": dice, "lesion_dice": lesion,
                        "objective": objective, "num_volumes": count})  # fmt: skip
    return results


def _first_best(results: list[dict]) -> tuple[PostprocessParams, list[dict]]:
    """The first result with the top objective (to 6 decimals), and all results."""
    top = max(round(r["objective"], 6) for r in results)
    best = next(r for r in results if round(r["objective"], 6) == top)
    return best["params"], results
