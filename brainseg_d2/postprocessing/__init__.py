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
   then removal of components smaller than ``min_volume_3d`` voxels or
   ``min_volume_ml`` millilitres, then keep
   the ``keep_largest_k`` largest components.
3. Optional nesting (volumes only, ``enforce_nesting=True``): each category is
   intersected with the previous one, so WT ⊇ TC ⊇ ET holds after cleaning.
4. A category whose voxels add up to less than ``min_total_ml`` millilitres in
   the volume is emptied (with nesting, the categories inside it as well): a
   whole-volume decision on whether the region exists, in physical units.
5. With nesting and ``core_hull_margin`` >= 0: each TC component that holds ET
   keeps only what lies within the convex hull of its ET voxels, grown by that
   many voxels (:func:`core_within_enhancement`).

Connectivity: ``connectivity_3d`` (6, 18 or 26) is used for 3D components; 2D
components use its in-plane part (6 -> 4, 18 and 26 -> 8), so the two never
disagree.
"""

from brainseg_d2.postprocessing.cleaning import (
    core_within_enhancement,
    postprocess_slice,
    postprocess_volume,
)
from brainseg_d2.postprocessing.outputs import (
    MASK_SOURCES,
    instances_to_category_masks,
    instances_to_masks_and_seeds,
    masks_and_seeds_from_output,
    probabilities_to_masks_and_seeds,
    score_maps_from_output,
)
from brainseg_d2.postprocessing.params import PostprocessParams

__all__ = [
    "MASK_SOURCES",
    "PostprocessParams",
    "core_within_enhancement",
    "masks_and_seeds_from_output",
    "probabilities_to_masks_and_seeds",
    "score_maps_from_output",
    "instances_to_category_masks",
    "instances_to_masks_and_seeds",
    "postprocess_slice",
    "postprocess_volume",
]
