"""Post-processing of predicted masks: the one place that defines it.

The evaluator, the training hook and volume inference all call these functions
with the same :class:`PostprocessParams`, so "post-processed" means the same thing
everywhere. Pass :meth:`PostprocessParams.raw` to get the raw masks (score
threshold only) for side-by-side metrics.

Data path::

    instances (N, H, W) --instances_to_category_masks--> (C, H, W)
        --postprocess_slice--> (C, H, W)                      per slice, 2D steps
    stacked slices (C, S, H, W) --postprocess_volume--> (C, S, H, W)   2D + 3D steps

Category axis ``C`` follows the target's category order (0-based, i.e. COCO
``category_id - 1``; see :mod:`brainseg_d2.labels`). Volumes are ``(C, S, H, W)``
with ``S`` the slice axis; 2D steps run on each ``(H, W)`` slice.

Step order (every step can be switched off):

1. 2D, per category and slice: opening, closing (OpenCV, elliptical kernel; the
   outside of the slice counts as background), hole filling
   (:func:`scipy.ndimage.binary_fill_holes`), removal of components smaller than
   ``min_area_2d`` pixels.
2. 3D, per category (volumes only): with ``component_score_threshold`` set, only
   components holding a voxel of a confident instance survive (hysteresis on
   instance scores: voxels enter at ``score_threshold``, a component needs a
   *seed*, a voxel of an instance scoring ``>= component_score_threshold``);
   then removal of components smaller than ``min_volume_3d`` voxels, then keep
   the ``keep_largest_k`` largest components.
3. Optional nesting (volumes only, ``enforce_nesting=True``): each category is
   intersected with the previous one, so WT ⊇ TC ⊇ ET holds after cleaning.

Connectivity: ``connectivity_3d`` (6, 18 or 26) is used for 3D components; 2D
components use its in-plane part (6 -> 4, 18 and 26 -> 8), so the two never
disagree.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import cv2
import numpy as np
from scipy import ndimage

from brainseg_d2.utils.connectivity import neighbourhood_structure

__all__ = [
    "MASK_SOURCES",
    "PostprocessParams",
    "masks_and_seeds_from_output",
    "probabilities_to_masks_and_seeds",
    "score_maps_from_output",
    "instances_to_category_masks",
    "instances_to_masks_and_seeds",
    "postprocess_slice",
    "postprocess_volume",
]


@dataclass(frozen=True)
class PostprocessParams:
    """Post-processing settings; the defaults are the project's defaults.

    Attributes:
        enabled: False turns every step off (masks are returned unchanged). The
            score threshold still applies: it is how instances become masks.
        score_threshold: pixels enter the category masks where the score is
            ``>=`` this: the pixel's probability for a dense head's output, the
            instance's score for instance masks.
        category_score_threshold: one threshold per category instead of
            ``score_threshold`` (empty = ``score_threshold`` for every category);
            see :meth:`score_thresholds`.
        opening_kernel: diameter in pixels of the elliptical structuring element
            of a 2D opening (removes specks and thin bridges); odd; 0 = off.
        closing_kernel: same for a 2D closing (bridges small gaps); odd; 0 = off.
        fill_holes: fill 2D holes (background not connected to the slice border).
        min_area_2d: drop 2D components smaller than this many pixels; 0 = off.
        min_volume_3d: drop 3D components smaller than this many voxels; 0 = off.
            One value for every category, or one per category (for nested
            targets, e.g. ``(200, 0, 0)`` filters lesions by their WT extent and
            keeps whatever core lies inside a surviving lesion). Stored as a tuple.
        connectivity_3d: 3D neighbourhood, 6, 18 or 26 (26 as in BraTS lesion
            analysis); its in-plane part (4 or 8) is the 2D connectivity.
        keep_largest_k: keep only the K largest 3D components per category;
            0 = off (gliomas are usually one lesion, but metastases are not).
        component_score_threshold: hysteresis on scores; empty = off.
            A 3D component (of the masks made at ``score_threshold``) is kept
            only if it holds a voxel scoring ``>=`` this (pixel probability, or
            the score of an instance covering the voxel). One
            value for every category, or one per category. Low-scoring instances
            then extend a confident lesion's outline without creating lesions
            of their own (false positives on tumour-free volumes are mostly
            such lone low-score detections). Needs the seed masks
            (:func:`postprocess_volume` ``seeds``).

    Defaults: every cleaning step is off, so ``PostprocessParams()`` differs from
    :meth:`raw` only in being enabled. Sizes and kernels need tuning per dataset
    (a min-size that helps gliomas deletes small metastases). Hole filling is off
    as well because it applies to every category, and some are *meant* to have
    holes: enhancing tumour is a rim around necrosis
    (``ET`` in both ``labels`` and ``regions``) and edema surrounds the core in
    ``labels``. Turn it on for ``binary`` or WT/TC-only work. Tune on validation
    data; compare with :meth:`raw`.
    """

    enabled: bool = True
    score_threshold: float = 0.5
    opening_kernel: int = 0
    closing_kernel: int = 0
    fill_holes: bool = False
    min_area_2d: int = 0
    min_volume_3d: tuple[int, ...] = (0,)
    connectivity_3d: int = 26
    keep_largest_k: int = 0
    component_score_threshold: tuple[float, ...] = ()
    category_score_threshold: tuple[float, ...] = ()

    #: field name -> config key under the post-processing node.
    CFG_KEYS: ClassVar[dict[str, str]] = {
        "enabled": "ENABLED",
        "score_threshold": "SCORE_THRESH",
        "opening_kernel": "OPENING_KERNEL",
        "closing_kernel": "CLOSING_KERNEL",
        "fill_holes": "FILL_HOLES",
        "min_area_2d": "MIN_AREA_2D",
        "min_volume_3d": "MIN_VOLUME_3D",
        "connectivity_3d": "CONNECTIVITY_3D",
        "keep_largest_k": "KEEP_LARGEST_K",
        "component_score_threshold": "COMPONENT_SCORE_THRESH",
        "category_score_threshold": "CATEGORY_SCORE_THRESH",
    }

    def __post_init__(self) -> None:
        for name in ("enabled", "fill_holes"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        thr = self.score_threshold
        if not isinstance(thr, numbers.Real) or isinstance(thr, bool) or not 0.0 <= thr <= 1.0:
            raise ValueError(f"score_threshold must be a number in [0, 1], got {thr!r}")
        volumes = self.min_volume_3d
        if isinstance(volumes, numbers.Integral) and not isinstance(volumes, bool):
            volumes = (volumes,)
        if not isinstance(volumes, (tuple, list)) or not volumes or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
            for v in volumes
        ):
            raise ValueError(
                "min_volume_3d must be integers >= 0 (one, or one per category), got "
                f"{self.min_volume_3d!r}"
            )
        object.__setattr__(self, "min_volume_3d", tuple(int(v) for v in volumes))
        for name in (
            "opening_kernel",
            "closing_kernel",
            "min_area_2d",
            "keep_largest_k",
            "connectivity_3d",
        ):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("opening_kernel", "closing_kernel"):
            value = getattr(self, name)
            if value > 0 and value % 2 == 0:
                raise ValueError(f"{name} must be odd (or 0 for off), got {value!r}")
        if self.connectivity_3d not in (6, 18, 26):
            raise ValueError(f"connectivity_3d must be 6, 18 or 26, got {self.connectivity_3d!r}")
        values = self.component_score_threshold
        if isinstance(values, numbers.Real) and not isinstance(values, bool):
            values = (values,)
        if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in values
        ):
            raise ValueError(
                "component_score_threshold must be numbers in [0, 1] (one, or one per "
                f"category; empty = off), got {self.component_score_threshold!r}"
            )
        object.__setattr__(self, "component_score_threshold", tuple(float(v) for v in values))
        values = self.category_score_threshold
        if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in values
        ):
            raise ValueError(
                "category_score_threshold must be numbers in [0, 1] (one per category; "
                f"empty = score_threshold), got {self.category_score_threshold!r}"
            )
        object.__setattr__(self, "category_score_threshold", tuple(float(v) for v in values))

    def score_thresholds(self, num_categories: int) -> np.ndarray:
        """Per-category score thresholds ``(C,)``: ``category_score_threshold`` if set,
        else ``score_threshold`` for every category.

        Raises:
            ValueError: if ``category_score_threshold`` has neither 0 nor ``C`` values.
        """
        values = self.category_score_threshold
        if not values:
            return np.full(num_categories, self.score_threshold, dtype=float)
        if len(values) != num_categories:
            raise ValueError(
                f"category_score_threshold has {len(values)} values; give one per category "
                f"({num_categories})"
            )
        return np.asarray(values, dtype=float)

    @property
    def lowest_score_threshold(self) -> float:
        """The lowest score that can enter any category's mask."""
        return min((self.score_threshold, *self.category_score_threshold))

    def thresholds_only(self) -> PostprocessParams:
        """The ``raw`` variant of these settings: the same score thresholds, every step off."""
        return replace(
            PostprocessParams.raw(self.score_threshold),
            category_score_threshold=self.category_score_threshold,
        )

    def min_volumes(self, num_categories: int) -> np.ndarray:
        """Per-category minimum 3D component size ``(C,)`` (all 0 when disabled).

        Raises:
            ValueError: if ``min_volume_3d`` has neither 1 nor ``C`` values.
        """
        values = self.min_volume_3d if self.enabled else (0,)
        if len(values) not in (1, num_categories):
            raise ValueError(
                f"min_volume_3d has {len(values)} values; give 1 or one per category "
                f"({num_categories})"
            )
        return np.broadcast_to(np.asarray(values, dtype=np.int64), (num_categories,)).copy()

    def component_thresholds(self, num_categories: int) -> np.ndarray | None:
        """Per-category seed score thresholds ``(C,)``, or None when hysteresis is off.

        Raises:
            ValueError: if ``component_score_threshold`` has neither 1 nor ``C`` values.
        """
        values = self.component_score_threshold
        if not self.enabled or not values:
            return None
        if len(values) not in (1, num_categories):
            raise ValueError(
                f"component_score_threshold has {len(values)} values; give 1 or one per "
                f"category ({num_categories})"
            )
        return np.broadcast_to(np.asarray(values, dtype=float), (num_categories,)).copy()

    @classmethod
    def from_cfg(cls, node: Any) -> PostprocessParams:
        """Build from a config node with UPPERCASE keys (see :attr:`CFG_KEYS`).

        Args:
            node: a yacs/fvcore ``CfgNode`` (or anything with those attributes,
                e.g. ``types.SimpleNamespace``), such as ``cfg.BRAINSEG.POSTPROCESS``.

        Raises:
            ValueError: if keys are missing (all are named) or a value is invalid.
        """
        missing = [key for key in cls.CFG_KEYS.values() if not hasattr(node, key)]
        if missing:
            raise ValueError(f"post-processing config node lacks keys {missing}")
        return cls(**{field: getattr(node, key) for field, key in cls.CFG_KEYS.items()})

    def to_cfg_dict(self) -> dict[str, Any]:
        """UPPERCASE key -> value, so a config can take its defaults from here.

        ``CfgNode(PostprocessParams().to_cfg_dict())`` gives a node with the
        defaults above, so config defaults are not a second copy kept by hand.
        """
        return {key: getattr(self, field) for field, key in self.CFG_KEYS.items()}

    @classmethod
    def raw(cls, score_threshold: float | None = None) -> PostprocessParams:
        """Every post-processing step off; only the score threshold remains.

        Args:
            score_threshold: ``None`` keeps the default threshold. Pass the
                threshold of the post-processed params to compare like with like:
                ``PostprocessParams.raw(params.score_threshold)``.
        """
        if score_threshold is None:
            score_threshold = cls.score_threshold
        return cls(
            enabled=False,
            score_threshold=score_threshold,
            opening_kernel=0,
            closing_kernel=0,
            fill_holes=False,
            min_area_2d=0,
            min_volume_3d=(0,),
            keep_largest_k=0,
            component_score_threshold=(),
        )


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
    scores = score_maps_from_output(
        output, num_categories, source, params.lowest_score_threshold
    )
    return probabilities_to_masks_and_seeds(scores, params)


def _morph(img: np.ndarray, op: int, size: int) -> np.ndarray:
    """Opening/closing of a uint8 mask with the outside of the slice as background.

    OpenCV's default border is neutral, which lets a closing grow objects into
    the image's edge pixels; padding with zeros by the kernel radius gives the
    textbook operation on the mask as a set, cropped back to the slice.
    """
    pad = size // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return cv2.morphologyEx(padded, op, kernel)[pad:-pad, pad:-pad]


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a bool mask as slices; None when empty."""
    boxes = ndimage.find_objects(np.ascontiguousarray(mask).view(np.uint8))
    return boxes[0] if boxes else None


def _clean_2d(mask: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """2D steps on one ``(H, W)`` bool mask; returns a new bool array."""
    out = np.zeros(mask.shape, dtype=bool)
    box = _bbox(mask)
    if box is None:
        return out
    # Work on the bounding box plus a 1-pixel background ring. Exact: outside the
    # slice counts as background anyway, no step grows an object beyond its
    # bounding box, and the ring keeps hole filling's "connected to the border".
    img = np.pad(mask[box], 1).astype(np.uint8)
    if params.opening_kernel > 1:
        img = _morph(img, cv2.MORPH_OPEN, params.opening_kernel)
    if params.closing_kernel > 1:
        img = _morph(img, cv2.MORPH_CLOSE, params.closing_kernel)
    if params.fill_holes:
        img = ndimage.binary_fill_holes(img).astype(np.uint8)
    if params.min_area_2d > 0:
        connectivity = 4 if params.connectivity_3d == 6 else 8
        _, labels, stats, _ = cv2.connectedComponentsWithStats(img, connectivity=connectivity)
        keep = stats[:, cv2.CC_STAT_AREA] >= params.min_area_2d
        keep[0] = False
        img = keep[labels]
    out[box] = img[1:-1, 1:-1]
    return out


def postprocess_slice(masks: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """2D post-processing of the category masks of one slice.

    Args:
        masks: bool ``(C, H, W)``.
        params: settings; the 2D steps run in the order opening, closing, hole
            filling, min area (see module docstring). 3D steps are ignored here.

    Returns:
        bool ``(C, H, W)``, a new array (a copy when ``params.enabled`` is False).
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (C, H, W), got shape {masks.shape}")
    if not params.enabled:
        return masks.copy()
    return np.stack([_clean_2d(m, params) for m in masks]) if len(masks) else masks.copy()


def _filter_components_3d(
    mask: np.ndarray,
    params: PostprocessParams,
    seeds: np.ndarray | None = None,
    min_volume: int = 0,
) -> np.ndarray:
    """3D component filters of one category, on one labelling of ``mask``.

    In order: components without a ``seeds`` voxel go (when seeds are given),
    those under ``min_volume`` voxels go, then the ``keep_largest_k`` largest
    of the rest stay. The first two drop whole components, so one pass is exact.
    """
    out = np.zeros(mask.shape, dtype=bool)
    box = _bbox(mask)
    if box is None:
        return out
    structure = neighbourhood_structure(3, params.connectivity_3d)
    labels, n = ndimage.label(mask[box], structure=structure)  # components lie in the box
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_volume
    if seeds is not None:
        seeded = np.zeros(n + 1, dtype=bool)
        seeded[labels[seeds[box]]] = True
        keep &= seeded
    keep[0] = False
    if params.keep_largest_k > 0:
        # Stable sort: among equal sizes the component met first (lower label) wins.
        order = np.argsort(-sizes[1:], kind="stable") + 1
        ranked = order[keep[order]]
        keep[ranked[params.keep_largest_k :]] = False
    out[box] = keep[labels]
    return out


def postprocess_volume(
    masks: np.ndarray,
    params: PostprocessParams,
    *,
    enforce_nesting: bool = False,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """2D then 3D post-processing of a stack of category masks.

    Args:
        masks: bool ``(C, S, H, W)``: categories, slices, rows, columns.
        params: settings. The 2D steps of :func:`postprocess_slice` run on every
            slice, then per category: 3D components without a seed voxel are
            removed (if ``component_score_threshold`` is set), then those smaller
            than ``min_volume_3d`` voxels (``connectivity_3d``), then only the
            ``keep_largest_k`` largest remain.
        enforce_nesting: for nested targets (``regions``: WT ⊇ TC ⊇ ET, in that
            category order) intersect each category with the one before it,
            after all cleaning, so an inner region never leaks outside its outer
            one. This can leave fragments smaller than the size limits. Default
            False (``labels`` and ``binary`` targets are not nested).
        seeds: bool ``(C, S, H, W)``, voxels of instances scoring ``>=``
            ``component_score_threshold`` (``instances_to_category_masks`` with
            ``params.component_thresholds(C)``); required when that is set.

    Returns:
        bool ``(C, S, H, W)``, a new array; a copy of the input when
        ``params.enabled`` is False.
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 4:
        raise ValueError(f"masks must be (C, S, H, W), got shape {masks.shape}")
    if not params.enabled:
        return masks.copy()
    seed_thresholds = params.component_thresholds(masks.shape[0])
    if seed_thresholds is not None:
        if seeds is None:
            raise ValueError(
                "component_score_threshold is set: postprocess_volume needs the seed masks"
            )
        seeds = np.asarray(seeds).astype(bool, copy=False)
        if seeds.shape != masks.shape:
            raise ValueError(f"seeds must have the masks' shape {masks.shape}, got {seeds.shape}")
    min_volumes = params.min_volumes(masks.shape[0])
    out = np.empty_like(masks)
    for c in range(masks.shape[0]):
        for s in range(masks.shape[1]):
            out[c, s] = _clean_2d(masks[c, s], params)
        category_seeds = seeds[c] if seed_thresholds is not None else None
        if category_seeds is not None or min_volumes[c] > 0 or params.keep_largest_k > 0:
            out[c] = _filter_components_3d(out[c], params, category_seeds, int(min_volumes[c]))
    if enforce_nesting:
        for c in range(1, out.shape[0]):
            out[c] &= out[c - 1]
    return out
