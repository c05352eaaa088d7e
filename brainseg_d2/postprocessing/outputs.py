"""Model outputs -> per-category masks of a slice, and the seed masks of score hysteresis.

Instance outputs (masks, classes, scores) and dense per-category probabilities
both become ``(C, H, W)`` bool masks at the score thresholds of a
:class:`~brainseg_d2.postprocessing.params.PostprocessParams`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainseg_d2.postprocessing.params import PostprocessParams


def instances_to_category_masks(
    masks: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    num_categories: int,
    score_threshold: float | Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Union of the instance masks scoring ``>= score_threshold``, per category.

    Args:
        masks: bool ``(N, H, W)`` instance masks (N may be 0).
        classes: int ``(N,)`` 0-based category index (Detectron2 ``pred_classes``).
        scores: float ``(N,)`` instance scores.
        num_categories: ``C``, number of categories of the target.
        score_threshold: instances with a score below it are dropped.

    Returns:
        bool ``(C, H, W)``.

    Raises:
        ValueError: on inconsistent shapes or a class outside ``[0, C)``.
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    classes = np.asarray(classes)
    scores = np.asarray(scores)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    n = masks.shape[0]
    if classes.shape != (n,) or scores.shape != (n,):
        raise ValueError(
            f"classes and scores must be ({n},) for masks {masks.shape}, "
            f"got classes {classes.shape} and scores {scores.shape}"
        )
    if n and (classes.min() < 0 or classes.max() >= num_categories):
        raise ValueError(
            f"classes must be in [0, {num_categories}), got values {sorted(set(classes.tolist()))}"
        )
    thresholds = np.asarray(score_threshold, dtype=float)
    if thresholds.ndim == 0:
        thresholds = np.full(num_categories, float(thresholds))
    if thresholds.shape != (num_categories,):
        raise ValueError(
            f"score_threshold must be one number or {num_categories} (one per category), "
            f"got shape {thresholds.shape}"
        )
    if scores.dtype.kind == "f":  # compare in the scores' precision: float32 0.9 >= 0.9
        thresholds = thresholds.astype(scores.dtype)
    out = np.zeros((num_categories, *masks.shape[1:]), dtype=bool)
    for i in np.flatnonzero(scores >= thresholds[classes] if n else []):
        out[classes[i]] |= masks[i]
    return out


def instances_to_masks_and_seeds(
    masks: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    num_categories: int,
    params: PostprocessParams,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Category masks at ``params.score_threshold`` and, with hysteresis on, the seeds.

    Returns:
        bool ``(C, H, W)`` masks, and bool ``(C, H, W)`` seed masks (instances
        scoring ``>= params.component_thresholds(C)``) or None when that is off:
        the two inputs :func:`postprocess_volume` needs per slice.
    """
    args = (masks, classes, scores, num_categories)
    out = instances_to_category_masks(*args, params.score_thresholds(num_categories))
    thresholds = params.component_thresholds(num_categories)
    return out, None if thresholds is None else instances_to_category_masks(*args, thresholds)


def probabilities_to_masks_and_seeds(
    probs: np.ndarray, params: PostprocessParams
) -> tuple[np.ndarray, np.ndarray | None]:
    """Category masks of a dense head's per-pixel probabilities, and the hysteresis seeds.

    For a dense head the pixel's probability plays the part of the instance score:
    pixels enter category ``c`` at ``probs[c] >= params.score_threshold``, and seed
    a 3D component at ``probs[c] >= params.component_thresholds(C)[c]``.

    Args:
        probs: float ``(C, H, W)`` (or ``(C, S, H, W)``) probabilities in [0, 1].
        params: settings.

    Returns:
        bool masks of ``probs``' shape, and bool seeds (None when hysteresis is off).
    """
    probs = np.asarray(probs)
    if probs.ndim < 3:
        raise ValueError(f"probabilities must be (C, H, W), got shape {probs.shape}")
    shape = (-1, *([1] * (probs.ndim - 1)))
    masks = probs >= params.score_thresholds(probs.shape[0]).astype(np.float32).reshape(shape)
    thresholds = params.component_thresholds(probs.shape[0])
    if thresholds is None:
        return masks, None
    return masks, probs >= thresholds.astype(np.float32).reshape(shape)


#: Where category masks come from: a dense head's ``sem_seg`` probabilities, or the
#: union of the detected instances' masks.
MASK_SOURCES = ("semantic", "instances")


def score_maps_from_output(
    output: dict, num_categories: int, source: str = "semantic", min_score: float = 0.0
) -> np.ndarray:
    """Per-pixel score of every category in one Detectron2 model output.

    For a dense head the score is its probability; for instances it is the
    highest score of the instances of that category covering the pixel (0 where
    none does). Thresholding either at ``t`` gives the category masks at ``t``
    (for instances: the union of those scoring ``>= t``), so post-processing and
    its tuning treat both sources alike.

    Args:
        output: ``{"sem_seg": (C, H, W) probabilities, "instances": Instances}``
            (tensors on any device).
        num_categories: C.
        source: ``semantic`` (the ``sem_seg`` probabilities) or ``instances``.
        min_score: instances scoring below this are left out (their masks are
            not moved off the device); scores below it are irrelevant to any
            threshold at or above it.

    Returns:
        float32 ``(C, H, W)``.

    Raises:
        ValueError: unknown source, or the output lacks what it needs.
    """
    if source not in MASK_SOURCES:
        raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
    if source == "semantic":
        if "sem_seg" not in output:
            raise ValueError(
                "the model returns no 'sem_seg' (no dense head): set BRAINSEG.MASK_SOURCE "
                "instances, or use MODEL.META_ARCHITECTURE BrainSegRCNN"
            )
        probs = output["sem_seg"].detach().float().cpu().numpy()
        if probs.shape[0] != num_categories:
            raise ValueError(
                f"sem_seg has {probs.shape[0]} channels, the dataset {num_categories} categories"
            )
        return probs
    inst = output["instances"]
    if not inst.has("pred_masks"):
        raise ValueError("the model returns instances without 'pred_masks' (no mask head)")
    keep = inst.scores >= min_score  # move only the kept masks off the device
    masks = inst.pred_masks[keep].cpu().numpy().astype(bool, copy=False)
    classes = inst.pred_classes[keep].cpu().numpy()
    scores = inst.scores[keep].cpu().numpy().astype(np.float32)
    if len(classes) and (classes.min() < 0 or classes.max() >= num_categories):
        raise ValueError(
            f"classes must be in [0, {num_categories}), got values {sorted(set(classes.tolist()))}"
        )
    out = np.zeros((num_categories, *inst.image_size), dtype=np.float32)
    for mask, c, score in zip(masks, classes, scores):
        np.maximum(out[c], np.where(mask, score, np.float32(0)), out=out[c])
    return out


def masks_and_seeds_from_output(
    output: dict, num_categories: int, params: PostprocessParams, source: str = "semantic"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Category masks ``(C, H, W)`` and hysteresis seeds of one Detectron2 model output.

    :func:`score_maps_from_output` thresholded by
    :func:`probabilities_to_masks_and_seeds`.
    """
    scores = score_maps_from_output(output, num_categories, source, params.lowest_score_threshold)
    return probabilities_to_masks_and_seeds(scores, params)
