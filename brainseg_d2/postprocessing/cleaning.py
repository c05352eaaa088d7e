"""Cleaning category masks: 2D steps per slice, 3D steps per volume (package docstring)."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from brainseg_d2.postprocessing.params import PostprocessParams
from brainseg_d2.utils.connectivity import neighbourhood_structure


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


def _hull_excess(inside: np.ndarray, query: np.ndarray, chunk: int = 16384) -> np.ndarray | None:
    """How far (voxels) each ``query`` point lies outside the convex hull of ``inside``.

    The largest signed distance to the planes of the hull's faces: <= 0 inside the
    hull, and for a point outside at most its distance to the hull (equal where
    the nearest hull point lies on a face), so a margin keeps the hull with each
    face moved out by it. ``inside`` and ``query`` are integer
    ``(N, 3)`` voxel indices. None when the points span no volume (fewer than
    four, or all in one plane), so no hull exists.
    """
    try:
        hull = ConvexHull(inside.astype(np.float64))
    except (QhullError, ValueError):
        return None
    normals = hull.equations[:, :3].T.astype(np.float32)  # unit normals, pointing out
    offsets = hull.equations[:, 3].astype(np.float32)
    out = np.empty(len(query), dtype=np.float32)
    for start in range(0, len(query), chunk):
        points = query[start : start + chunk].astype(np.float32)
        out[start : start + chunk] = (points @ normals + offsets).max(axis=1)
    return out


def core_within_enhancement(
    core: np.ndarray,
    enhancing: np.ndarray,
    margin: int,
    connectivity: int = 26,
    min_share: float = 0.0,
) -> np.ndarray:
    """Cut each core component that holds enhancing voxels to their grown convex hull.

    Args:
        core: bool ``(S, H, W)``, e.g. TC.
        enhancing: bool ``(S, H, W)``, e.g. ET (normally inside ``core``).
        margin: voxels the hull's faces are moved out by (>= 0).
        connectivity: 6, 18 or 26, for the core's 3D components.
        min_share: a component whose enhancing voxels are less than this share of
            its voxels is kept whole (a mostly non-enhancing core with a patch or
            a speck of enhancement is not a core inside its enhancement).

    Returns:
        bool ``(S, H, W)``, a new array: the core, less the voxels of an enhancing
        component that lie more than ``margin`` voxels outside its hull, and less
        the pieces that cut leaves unconnected to the enhancement. Core
        components without enhancement, and those whose enhancing voxels span no
        volume (a hull needs four points off one plane), are kept whole;
        enhancing voxels are always kept.
    """
    out = np.array(core, dtype=bool)
    box = _bbox(out)
    if box is None:
        return out
    structure = neighbourhood_structure(3, connectivity)
    labels, _ = ndimage.label(out[box], structure=structure)
    for index, part in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[part] == index
        lit = component & enhancing[box][part]
        if not lit.any() or np.count_nonzero(lit) < min_share * np.count_nonzero(component):
            continue
        # The hull of the enhancement's outer voxels is the hull of all of them.
        outline = np.argwhere(lit & ~ndimage.binary_erosion(lit))
        query = np.argwhere(component & ~lit)
        excess = _hull_excess(outline, query) if len(query) else None
        if excess is None:
            continue
        drop = query[excess > margin + 1e-3]
        kept = component.copy()
        kept[drop[:, 0], drop[:, 1], drop[:, 2]] = False
        # Pieces the cut separates from the enhancement go too (each would be a
        # lesion of its own).
        pieces, _ = ndimage.label(kept, structure=structure)
        kept = np.isin(pieces, np.unique(pieces[lit]))
        region = out[box][part]  # a view into ``out``
        region[component & ~kept] = False
    return out


def postprocess_volume(
    masks: np.ndarray,
    params: PostprocessParams,
    *,
    enforce_nesting: bool = False,
    seeds: np.ndarray | None = None,
    voxel_ml: float | None = None,
) -> np.ndarray:
    """2D then 3D post-processing of a stack of category masks.

    Args:
        masks: bool ``(C, S, H, W)``: categories, slices, rows, columns.
        params: settings. The 2D steps of :func:`postprocess_slice` run on every
            slice, then per category: 3D components without a seed voxel are
            removed (if ``component_score_threshold`` is set), then those smaller
            than ``min_volume_3d`` voxels or ``min_volume_ml`` millilitres
            (``connectivity_3d``), then only the
            ``keep_largest_k`` largest remain.
        enforce_nesting: for nested targets (``regions``: WT ⊇ TC ⊇ ET, in that
            category order) intersect each category with the one before it,
            after all cleaning, so an inner region never leaks outside its outer
            one. This can leave fragments smaller than the size limits. Default
            False (``labels`` and ``binary`` targets are not nested). Then a
            category under ``min_total_ml`` in all is emptied (with nesting, the
            categories inside it too). Last, with ``core_hull_margin`` >= 0, the
            category before the last (TC) is cut to the last one's grown hull
            (:func:`core_within_enhancement`), except a component less than
            ``core_hull_min_share`` enhancing.
        seeds: bool ``(C, S, H, W)``, voxels of instances scoring ``>=``
            ``component_score_threshold`` (``instances_to_category_masks`` with
            ``params.component_thresholds(C)``); required when that is set.
        voxel_ml: one voxel's volume in millilitres (the product of the spacing
            in mm, over 1000); required when ``min_total_ml`` or ``min_volume_ml``
            is set.

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
    min_totals = params.min_totals_ml(masks.shape[0])
    if min_totals.any() and not (voxel_ml is not None and voxel_ml > 0):
        raise ValueError(
            f"min_total_ml is set: postprocess_volume needs voxel_ml > 0, got {voxel_ml!r}"
        )
    min_volumes = params.min_component_voxels(masks.shape[0], voxel_ml)
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
    for c in np.flatnonzero(min_totals):
        if np.count_nonzero(out[c]) * voxel_ml < min_totals[c]:
            # Nested: the categories inside this one lie within it, so they go too.
            last = out.shape[0] if enforce_nesting else c + 1
            out[c:last] = False
    if enforce_nesting and params.core_hull_margin >= 0 and out.shape[0] >= 2:
        out[-2] = core_within_enhancement(
            out[-2], out[-1], params.core_hull_margin, params.connectivity_3d,
            params.core_hull_min_share,
        )
    return out
