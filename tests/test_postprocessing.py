"""Tests for brainseg_d2.postprocessing: every step on tiny hand-drawn masks."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
from scipy import ndimage

from brainseg_d2.postprocessing import (
    PostprocessParams,
    instances_to_category_masks,
    postprocess_slice,
    postprocess_volume,
)


def pic(*rows: str) -> np.ndarray:
    """A bool (H, W) mask drawn with '#' for foreground."""
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


def run2d(mask: np.ndarray, **params) -> np.ndarray:
    """postprocess_slice on one category, every step off unless named in ``params``."""
    return postprocess_slice(mask[None], PostprocessParams(**params))[0]


# ---------------------------------------------------------------------------
# params
# ---------------------------------------------------------------------------


def test_defaults():
    p = PostprocessParams()
    assert (p.enabled, p.score_threshold, p.fill_holes, p.connectivity_3d) == (True, 0.5, False, 26)
    assert (p.opening_kernel, p.closing_kernel, p.min_area_2d) == (0, 0, 0)
    assert (p.min_volume_3d, p.keep_largest_k) == ((0,), 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("opening_kernel", 4),
        ("closing_kernel", 2),
        ("opening_kernel", -3),
        ("min_area_2d", -1),
        ("min_volume_3d", 2.5),
        ("keep_largest_k", -1),
        ("connectivity_3d", 8),
        ("score_threshold", 1.5),
        ("score_threshold", "0.5"),
        ("enabled", "yes"),
        ("fill_holes", 1),
        ("component_score_threshold", (0.5, 1.2)),
        ("component_score_threshold", "0.9"),
        ("core_hull_margin", -2),
        ("core_hull_margin", 1.5),
        ("core_hull_margin", True),
        ("core_hull_min_share", 1.5),
        ("core_hull_min_share", True),
        ("min_total_ml", (0.0, -0.5)),
        ("min_total_ml", float("inf")),
        ("min_total_ml", ()),
        ("min_total_ml", "1"),
        ("min_volume_ml", -0.1),
        ("min_volume_ml", ()),
    ],
)
def test_invalid_values_name_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"{field}.*{value!r}"):
        PostprocessParams(**{field: value})


def test_from_cfg_reads_uppercase_keys():
    node = types.SimpleNamespace(
        ENABLED=True,
        SCORE_THRESH=0.3,
        OPENING_KERNEL=3,
        CLOSING_KERNEL=5,
        FILL_HOLES=False,
        MIN_AREA_2D=10,
        MIN_VOLUME_3D=[100],
        CONNECTIVITY_3D=6,
        KEEP_LARGEST_K=2,
        COMPONENT_SCORE_THRESH=[0.9, 0.7, 0.7],
        CATEGORY_SCORE_THRESH=[],
        CORE_HULL_MARGIN=2,
        CORE_HULL_MIN_SHARE=0.25,
        MIN_TOTAL_ML=[0, 0, 0.5],
        MIN_VOLUME_ML=[0.5, 0.1, 0.1],
    )
    assert PostprocessParams.from_cfg(node) == PostprocessParams(
        core_hull_min_share=0.25,
        min_total_ml=(0.0, 0.0, 0.5),
        min_volume_ml=(0.5, 0.1, 0.1),
        component_score_threshold=(0.9, 0.7, 0.7),
        enabled=True,
        score_threshold=0.3,
        opening_kernel=3,
        closing_kernel=5,
        fill_holes=False,
        min_area_2d=10,
        min_volume_3d=100,
        connectivity_3d=6,
        keep_largest_k=2,
        core_hull_margin=2,
    )


def test_from_cfg_names_missing_keys_and_validates():
    with pytest.raises(ValueError, match="KEEP_LARGEST_K"):
        PostprocessParams.from_cfg(types.SimpleNamespace(ENABLED=True))
    node = types.SimpleNamespace(**{**PostprocessParams().to_cfg_dict(), "OPENING_KERNEL": 4})
    with pytest.raises(ValueError, match="opening_kernel"):
        PostprocessParams.from_cfg(node)


def test_to_cfg_dict_round_trip():
    params = PostprocessParams(min_volume_3d=50, keep_largest_k=1, component_score_threshold=(0.8,))
    node = types.SimpleNamespace(**params.to_cfg_dict())
    assert PostprocessParams.from_cfg(node) == params


def test_raw_keeps_only_the_threshold():
    raw = PostprocessParams.raw(0.7)
    assert raw.score_threshold == 0.7 and not raw.enabled and not raw.fill_holes
    assert raw.opening_kernel == raw.closing_kernel == raw.min_area_2d == 0
    assert raw.min_volume_3d == (0,) and raw.keep_largest_k == 0
    assert raw.component_score_threshold == ()
    assert PostprocessParams.raw().score_threshold == PostprocessParams().score_threshold


# ---------------------------------------------------------------------------
# instances -> category masks
# ---------------------------------------------------------------------------


def test_instances_to_category_masks_union_above_threshold():
    masks = np.zeros((3, 2, 3), dtype=bool)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 0, 2] = True
    masks[0, 1, 2] = True
    out = instances_to_category_masks(
        masks, classes=np.array([0, 1, 0]), scores=np.array([0.9, 0.5, 0.3]),
        num_categories=3, score_threshold=0.5,
    )  # fmt: skip
    assert out.shape == (3, 2, 3) and out.dtype == bool
    np.testing.assert_array_equal(out[0], masks[0])  # instance 2 is below threshold
    np.testing.assert_array_equal(out[1], masks[1])  # score == threshold is kept
    assert not out[2].any()
    both = instances_to_category_masks(masks, np.array([0, 1, 0]), np.ones(3), 3, 0.5)
    np.testing.assert_array_equal(both[0], masks[0] | masks[2])


def test_instances_to_category_masks_no_instances():
    out = instances_to_category_masks(np.zeros((0, 4, 5), bool), [], [], 2, 0.5)
    assert out.shape == (2, 4, 5) and not out.any()


def test_instances_to_category_masks_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 2\).*\[0, 2\]"):
        instances_to_category_masks(np.zeros((2, 3, 3), bool), [0, 2], [1, 1], 2, 0.5)
    with pytest.raises(ValueError, match=r"classes \(1,\)"):
        instances_to_category_masks(np.zeros((2, 3, 3), bool), [0], [1, 1], 2, 0.5)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        instances_to_category_masks(np.zeros((3, 3), bool), [0], [1], 2, 0.5)


# ---------------------------------------------------------------------------
# 2D steps
# ---------------------------------------------------------------------------


def test_opening_removes_speck_and_rounds_corners():
    mask = pic(
        "........",
        ".#####..",
        ".#####..",
        ".#####.#",
        ".#####..",
        ".#####..",
        "........",
    )
    # 3-px ellipse is a cross: erosion keeps the inner 3x3, dilation gives the
    # 5x5 square without its corners; the single pixel disappears.
    expected = pic(
        "........",
        "..###...",
        ".#####..",
        ".#####..",
        ".#####..",
        "..###...",
        "........",
    )
    np.testing.assert_array_equal(run2d(mask, opening_kernel=3), expected)


def test_opening_treats_outside_of_slice_as_background():
    mask = pic(
        "###...",
        "###...",
        "###...",
        "......",
    )
    # erosion keeps only (1, 1); dilation gives the cross around it
    expected = pic(
        ".#....",
        "###...",
        ".#....",
        "......",
    )
    np.testing.assert_array_equal(run2d(mask, opening_kernel=3), expected)


def test_closing_bridges_one_pixel_gap():
    mask = pic(
        ".......",
        ".##.##.",
        ".##.##.",
        ".##.##.",
        ".##.##.",
        ".......",
    )
    # a gap pixel is closed when its 4 neighbours survive dilation: not in the
    # first and last rows of the gap. Nothing grows into the empty border
    # columns (OpenCV's neutral default border would add them).
    expected = pic(
        ".......",
        ".##.##.",
        ".#####.",
        ".#####.",
        ".##.##.",
        ".......",
    )
    np.testing.assert_array_equal(run2d(mask, closing_kernel=3), expected)


def test_kernel_one_is_identity():
    mask = pic("#.#", ".#.", "#..")
    np.testing.assert_array_equal(run2d(mask, opening_kernel=1, closing_kernel=1), mask)


def test_fill_holes_fills_enclosed_not_open_background():
    ring = pic(
        "#####...",
        "#...#...",
        "#...#...",
        "#####...",
    )
    open_c = pic(
        "####",
        "#...",
        "####",
    )
    np.testing.assert_array_equal(run2d(ring, fill_holes=True), pic(
        "#####...",
        "#####...",
        "#####...",
        "#####...",
    ))  # fmt: skip
    np.testing.assert_array_equal(run2d(open_c, fill_holes=True), open_c)
    np.testing.assert_array_equal(run2d(ring, fill_holes=False), ring)


def test_min_area_2d_keeps_components_at_least_that_large():
    mask = pic(
        "#..##..",
        "...##..",
        ".......",
        "###....",
    )
    expected = pic(
        "...##..",
        "...##..",
        ".......",
        "###....",
    )
    np.testing.assert_array_equal(run2d(mask, min_area_2d=3), expected)


def test_min_area_2d_connectivity_follows_connectivity_3d():
    diagonal = pic("#.", ".#")
    np.testing.assert_array_equal(run2d(diagonal, min_area_2d=2), diagonal)  # 26 -> 8
    assert not run2d(diagonal, min_area_2d=2, connectivity_3d=6).any()  # 6 -> 4
    np.testing.assert_array_equal(
        run2d(diagonal, min_area_2d=2, connectivity_3d=18), diagonal
    )  # 18 -> 8


def test_opening_runs_before_hole_filling():
    # A one-pixel-thick ring vanishes under opening, so nothing is left to fill.
    # (Filling first would keep a 5x5 square.)
    ring = pic(
        ".......",
        ".#####.",
        ".#...#.",
        ".#...#.",
        ".#...#.",
        ".#####.",
        ".......",
    )
    assert not run2d(ring, opening_kernel=3, fill_holes=True).any()


def test_slice_disabled_returns_copy():
    masks = np.stack([pic("#.#", "...", "#..")] * 2)
    out = postprocess_slice(masks, PostprocessParams(enabled=False, min_area_2d=5))
    np.testing.assert_array_equal(out, masks)
    assert out is not masks


def test_slice_categories_are_independent():
    masks = np.stack([pic("#..", "...", "..."), pic("##.", "##.", "...")])
    out = postprocess_slice(masks, PostprocessParams(fill_holes=False, min_area_2d=2))
    assert not out[0].any() and out[1].sum() == 4


def test_slice_bad_shape():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        postprocess_slice(np.zeros((4, 4), bool), PostprocessParams())


# ---------------------------------------------------------------------------
# 3D steps
# ---------------------------------------------------------------------------


def vol(*voxels, shape=(4, 5, 5)) -> np.ndarray:
    out = np.zeros((1, *shape), dtype=bool)
    for v in voxels:
        out[(0, *v)] = True
    return out


def run3d(masks: np.ndarray, enforce_nesting: bool = False, **params) -> np.ndarray:
    params = PostprocessParams(fill_holes=False, **params)
    return postprocess_volume(masks, params, enforce_nesting=enforce_nesting)


def test_min_volume_3d_counts_across_slices():
    column = [(0, 0, 0), (1, 0, 0), (2, 0, 0)]  # one pixel per slice, 3 voxels
    blob = [(0, 3, 3), (0, 3, 4)]  # 2 voxels in one slice
    out = run3d(vol(*column, *blob), min_volume_3d=3)
    np.testing.assert_array_equal(out, vol(*column))


@pytest.mark.parametrize(("connectivity", "kept"), [(6, False), (18, False), (26, True)])
def test_min_volume_3d_corner_neighbours(connectivity, kept):
    pair = vol((0, 0, 0), (1, 1, 1))  # touch by a corner only
    out = run3d(pair, min_volume_3d=2, connectivity_3d=connectivity)
    assert out.any() == kept


@pytest.mark.parametrize(("connectivity", "kept"), [(6, False), (18, True), (26, True)])
def test_min_volume_3d_edge_neighbours(connectivity, kept):
    pair = vol((0, 0, 0), (1, 1, 0))  # touch by an edge across slices
    assert run3d(pair, min_volume_3d=2, connectivity_3d=connectivity).any() == kept


def test_keep_largest_k():
    three = [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    five = [(0, 4, 0), (0, 4, 1), (0, 4, 2), (0, 4, 3), (0, 4, 4)]
    two = [(3, 2, 2), (3, 2, 3)]
    masks = vol(*three, *five, *two)
    np.testing.assert_array_equal(run3d(masks, keep_largest_k=1), vol(*five))
    np.testing.assert_array_equal(run3d(masks, keep_largest_k=2), vol(*three, *five))
    np.testing.assert_array_equal(run3d(masks, keep_largest_k=5), masks)


def test_keep_largest_k_tie_keeps_first_in_raster_order():
    masks = vol((0, 0, 0), (3, 4, 4))
    np.testing.assert_array_equal(run3d(masks, keep_largest_k=1), vol((0, 0, 0)))


def test_min_volume_applies_before_keep_largest():
    masks = vol((0, 0, 0), (1, 0, 0), (3, 4, 4))  # sizes 2 and 1
    assert not run3d(masks, min_volume_3d=3, keep_largest_k=1).any()


def test_3d_steps_are_per_category():
    masks = np.concatenate([vol((0, 0, 0)), vol((0, 0, 0), (1, 0, 0))])
    out = run3d(masks, min_volume_3d=2)
    assert not out[0].any() and out[1].sum() == 2


def test_volume_applies_2d_steps_per_slice_like_postprocess_slice():
    rng = np.random.default_rng(0)
    masks = rng.random((2, 3, 12, 12)) > 0.6
    params = PostprocessParams(opening_kernel=3, closing_kernel=3, min_area_2d=4)
    out = postprocess_volume(masks, params)
    for s in range(3):
        np.testing.assert_array_equal(out[:, s], postprocess_slice(masks[:, s], params))


def test_enforce_nesting():
    wt = vol((0, 0, 0), (0, 0, 1), (0, 0, 2))
    tc = vol((0, 0, 1), (0, 0, 2), (0, 0, 3))  # (0,0,3) leaks outside WT
    et = vol((0, 0, 1), (0, 4, 4))  # (0,4,4) outside TC
    masks = np.concatenate([wt, tc, et])
    out = run3d(masks, enforce_nesting=True)
    np.testing.assert_array_equal(out[0], wt[0])
    np.testing.assert_array_equal(out[1], vol((0, 0, 1), (0, 0, 2))[0])
    np.testing.assert_array_equal(out[2], vol((0, 0, 1))[0])
    np.testing.assert_array_equal(run3d(masks), masks)  # default: not nested


def test_volume_disabled_returns_copy():
    masks = vol((0, 0, 0))
    out = postprocess_volume(masks, PostprocessParams.raw(), enforce_nesting=True)
    np.testing.assert_array_equal(out, masks)
    assert out is not masks


def test_volume_bad_shape():
    with pytest.raises(ValueError, match=r"\(C, S, H, W\)"):
        postprocess_volume(np.zeros((3, 4, 4), bool), PostprocessParams())


def _reference_2d(mask: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """The 2D steps on the whole slice zero-padded by a wide margin, no cropping."""
    pad = 8
    img = np.pad(mask, pad).astype(np.uint8)
    for size, op in (
        (params.opening_kernel, cv2.MORPH_OPEN),
        (params.closing_kernel, cv2.MORPH_CLOSE),
    ):
        if size > 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
            img = cv2.morphologyEx(img, op, kernel)
    img = img[pad:-pad, pad:-pad]
    if params.fill_holes:
        img = ndimage.binary_fill_holes(img).astype(np.uint8)
    if params.min_area_2d:
        labels, n = ndimage.label(img, np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())
        img = (sizes >= params.min_area_2d)[labels] & (labels > 0)
    return img.astype(bool)


@pytest.mark.parametrize("seed", range(4))
def test_bounding_box_cropping_is_exact(seed):
    rng = np.random.default_rng(seed)
    params = PostprocessParams(opening_kernel=3, closing_kernel=5, fill_holes=True, min_area_2d=6)
    for _ in range(5):
        mask = ndimage.gaussian_filter(rng.random((20, 24)), 1.0) > 0.55
        np.testing.assert_array_equal(run2d(mask, **vars(params)), _reference_2d(mask, params))


# ---------------------------------------------------------------------------
# hysteresis on instance scores (component_score_threshold)
# ---------------------------------------------------------------------------


def test_instances_to_category_masks_per_category_thresholds():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 2, 2] = True
    out = instances_to_category_masks(masks, np.array([0, 1, 0]), np.array([0.8, 0.8, 0.95]),
                                      2, [0.9, 0.5])
    assert out[0].sum() == 1 and out[0, 2, 2]  # 0.8 < 0.9 for category 0
    assert out[1, 1, 1]
    with pytest.raises(ValueError, match="one per category"):
        instances_to_category_masks(masks, np.array([0, 1, 0]), np.ones(3), 2, [0.5, 0.5, 0.5])


def _two_blobs() -> np.ndarray:
    masks = np.zeros((2, 4, 8, 8), bool)
    masks[:, :, 0:2, 0:2] = True  # blob A in both categories
    masks[:, 1:3, 5:8, 5:8] = True  # blob B in both categories
    return masks


def test_component_score_threshold_keeps_only_seeded_components():
    masks = _two_blobs()
    seeds = np.zeros_like(masks)
    seeds[0, 2, 1, 1] = True  # category 0: one voxel of blob A came from a confident instance
    seeds[1, 1, 6, 6] = True  # category 1: one voxel of blob B
    out = postprocess_volume(
        masks, PostprocessParams(component_score_threshold=(0.9,)), seeds=seeds
    )
    assert out[0, :, 0:2, 0:2].all() and not out[0, :, 5:, 5:].any()  # whole A kept, B gone
    assert out[1, 1:3, 5:, 5:].all() and not out[1, :, 0:2, 0:2].any()
    raw = postprocess_volume(masks, PostprocessParams.raw(), seeds=np.zeros_like(masks))
    np.testing.assert_array_equal(raw, masks)  # not a raw step
    # Without seeds every component goes; the size filter runs after the seed filter.
    none = postprocess_volume(
        masks, PostprocessParams(component_score_threshold=(0.9,)), seeds=np.zeros_like(masks)
    )
    assert not none.any()


def test_component_score_threshold_needs_seeds_and_a_valid_length():
    masks = _two_blobs()
    with pytest.raises(ValueError, match="needs the seed masks"):
        postprocess_volume(masks, PostprocessParams(component_score_threshold=(0.9,)))
    with pytest.raises(ValueError, match="3 values; give 1 or one per category"):
        postprocess_volume(
            masks, PostprocessParams(component_score_threshold=(0.9, 0.8, 0.7)), seeds=masks
        )
    with pytest.raises(ValueError, match="seeds must have the masks' shape"):
        postprocess_volume(
            masks, PostprocessParams(component_score_threshold=(0.9,)), seeds=masks[:1]
        )


def test_min_volume_3d_per_category():
    """One value per category: here only the outer category is filtered."""
    masks = np.zeros((2, 3, 8, 8), bool)
    masks[:, 1, 2:4, 2:4] = True  # a 4-voxel component in both categories
    masks[:, :, 6, 6] = True  # a 3-voxel column in both
    out = postprocess_volume(masks, PostprocessParams(min_volume_3d=(4, 0)))
    assert out[0, 1, 2:4, 2:4].all() and not out[0, :, 6, 6].any()
    assert out[1].sum() == masks[1].sum()  # inner category untouched
    with pytest.raises(ValueError, match="min_volume_3d has 3 values"):
        postprocess_volume(masks, PostprocessParams(min_volume_3d=(1, 2, 3)))


def test_min_volume_ml_is_one_physical_size_at_every_voxel_size():
    """A 0.2 ml minimum is 60 voxels at 1.5 mm and 200 at 1 mm."""
    small = np.zeros((1, 6, 12, 12), bool)
    small[0, 1:4, 2:6, 2:6] = True  # 48 voxels of 1.5 mm: 0.16 ml
    params = PostprocessParams(min_volume_ml=0.2)
    assert not postprocess_volume(small, params, voxel_ml=0.003375).any()
    fine = np.zeros((1, 10, 20, 20), bool)
    fine[0, 1:3, 2:12, 2:12] = True  # 200 voxels of 1 mm3: 0.2 ml, just at the minimum
    np.testing.assert_array_equal(postprocess_volume(fine, params, voxel_ml=0.001), fine)
    fine[0, 1, 2, 2] = False  # 199 voxels: under it
    assert not postprocess_volume(fine, params, voxel_ml=0.001).any()
    # A component must reach both minima; per category, like MIN_VOLUME_3D.
    assert postprocess_volume(small, PostprocessParams(min_volume_ml=0.05), voxel_ml=0.003375).any()
    both = PostprocessParams(min_volume_3d=50, min_volume_ml=0.05)
    assert not postprocess_volume(small, both, voxel_ml=0.003375).any()  # 48 < 50 voxels
    per_category = PostprocessParams(min_volume_ml=(0.0, 0.5))
    two = np.concatenate([small, small])
    out = postprocess_volume(two, per_category, voxel_ml=0.003375)
    np.testing.assert_array_equal(out[0], small[0])
    assert not out[1].any()
    with pytest.raises(ValueError, match="min_volume_ml is set"):
        postprocess_volume(small, params)
    # A size chosen as N voxels stays N voxels (no floating-point round-up to N + 1).
    assert PostprocessParams(min_volume_ml=0.675).min_component_voxels(1, 0.003375)[0] == 200
    raw = postprocess_volume(small, PostprocessParams.raw())
    np.testing.assert_array_equal(raw, small)  # off in the raw variant


def _core_around_enhancement():
    """regions masks (3, 20, 40, 40): a 6^3 enhancing cube inside a core that reaches
    8 voxels past it along +x, inside a large lesion; plus a second core component
    with no enhancement (a non-enhancing tumour)."""
    masks = np.zeros((3, 20, 40, 40), bool)
    masks[0, 2:18, 2:38, 2:38] = True
    masks[2, 7:13, 7:13, 7:13] = True  # ET: x 7..12
    masks[1, 7:13, 7:13, 7:21] = True  # TC: ET plus x 13..20
    masks[1, 7:13, 25:32, 25:32] = True  # a core without ET
    return masks


def test_core_hull_cuts_the_core_to_its_enhancement_and_leaves_other_cores():
    from brainseg_d2.postprocessing import core_within_enhancement

    masks = _core_around_enhancement()
    for margin, last_x in ((0, 12), (2, 14), (100, 20)):
        core = core_within_enhancement(masks[1], masks[2], margin)
        assert core[7:13, 7:13, 7 : last_x + 1].all(), margin
        assert not core[:, :, last_x + 1 : 21][:, 7:13].any(), margin
        assert core[7:13, 25:32, 25:32].all()  # no enhancement: kept whole
        assert (core & masks[2]).sum() == masks[2].sum()  # enhancing voxels stay
    # A flat enhancement (one slice) spans no volume: nothing to cut against.
    flat = np.zeros_like(masks[2])
    flat[10, 7:13, 7:13] = True
    assert (core_within_enhancement(masks[1], flat, 0) == masks[1]).all()
    # Empty input stays empty.
    assert not core_within_enhancement(np.zeros_like(flat), flat, 0).any()


def test_core_hull_drops_pieces_the_cut_separates_from_the_enhancement():
    """Two enhancing cubes joined by a core arch outside their hull; a core blob between
    them, inside the hull, hangs from the arch: once the arch is cut the blob is a lesion
    of its own with no enhancement, so it goes too."""
    from brainseg_d2.postprocessing import core_within_enhancement

    et = np.zeros((20, 40, 40), bool)
    et[7:13, 7:13, 7:13] = True
    et[7:13, 7:13, 27:33] = True
    core = et.copy()
    core[8:10, 13:21, 9:11] = True  # up from the first cube (y past the hull's 12)
    core[8:10, 19:21, 9:31] = True  # across
    core[8:10, 13:21, 29:31] = True  # down into the second cube
    core[8:10, 12:19, 19:21] = True  # a stalk from the arch into the hull ...
    core[7:13, 8:12, 17:23] = True  # ... holding a blob between the cubes
    assert ndimage.label(core, structure=np.ones((3, 3, 3)))[1] == 1
    assert (core_within_enhancement(core, et, 0) == et).all()


def test_postprocess_volume_applies_the_core_hull_only_when_set_and_nested():
    masks = _core_around_enhancement()
    off = postprocess_volume(masks, PostprocessParams(), enforce_nesting=True)
    assert (off == masks).all()
    hull = PostprocessParams(core_hull_margin=0)
    cut = postprocess_volume(masks, hull, enforce_nesting=True)
    assert cut[1].sum() == masks[1].sum() - 6 * 6 * 8
    assert (cut[0] == masks[0]).all() and (cut[2] == masks[2]).all()
    # Not nested (e.g. labels), or every step disabled: the core is not touched.
    assert (postprocess_volume(masks, hull)[1] == masks[1]).all()
    raw = hull.thresholds_only()
    assert raw.core_hull_margin == -1
    assert (postprocess_volume(masks, raw, enforce_nesting=True) == masks).all()


def test_min_total_ml_empties_a_small_region_in_millilitres_and_its_inner_ones():
    masks = np.zeros((3, 4, 10, 10), bool)
    masks[0, :, 1:9, 1:9] = True  # WT, 256 voxels
    masks[1, 1:3, 2:6, 2:6] = True  # TC, 32 voxels
    masks[2, 1:3, 3:5, 3:5] = True  # ET, 8 voxels
    et_small = PostprocessParams(min_total_ml=(0.0, 0.0, 0.1))
    # 1.5 mm voxels (3.375 mm3): ET 0.027 ml, under 0.1 -> emptied; TC and WT stay.
    out = postprocess_volume(masks, et_small, enforce_nesting=True, voxel_ml=0.003375)
    np.testing.assert_array_equal(out[:2], masks[:2])
    assert not out[2].any()
    # 4 mm voxels (64 mm3): the same 8 voxels are 0.512 ml and stay.
    out = postprocess_volume(masks, et_small, enforce_nesting=True, voxel_ml=0.064)
    np.testing.assert_array_equal(out, masks)
    # Nested: an emptied TC takes the ET inside it along; not nested, only TC goes.
    tc_small = PostprocessParams(min_total_ml=(0.0, 1.0, 0.0))
    out = postprocess_volume(masks, tc_small, enforce_nesting=True, voxel_ml=0.001)
    np.testing.assert_array_equal(out[0], masks[0])
    assert not out[1:].any()
    out = postprocess_volume(masks, tc_small, voxel_ml=0.001)
    assert not out[1].any()
    np.testing.assert_array_equal(out[2], masks[2])
    # One value for every category: each is judged on its own total.
    out = postprocess_volume(masks, PostprocessParams(min_total_ml=0.01), voxel_ml=0.001)
    assert out[0].any() and out[1].any() and not out[2].any()
    with pytest.raises(ValueError, match="needs voxel_ml"):
        postprocess_volume(masks, et_small, enforce_nesting=True)
    raw = postprocess_volume(masks, PostprocessParams.raw(), enforce_nesting=True)
    np.testing.assert_array_equal(raw, masks)  # off in the raw variant


def test_core_hull_leaves_a_mostly_non_enhancing_core_whole():
    """A low-grade tumour's core (10 x 20 x 20) with a 3 x 3 x 3 enhancing patch (0.7 %):
    cutting it to the patch's hull would keep 27 of its 4000 voxels."""
    from brainseg_d2.postprocessing import core_within_enhancement

    masks = np.zeros((3, 14, 30, 30), bool)
    masks[0, 1:13, 3:27, 3:27] = True
    masks[1, 2:12, 5:25, 5:25] = True
    masks[2, 5:8, 10:13, 10:13] = True
    assert core_within_enhancement(masks[1], masks[2], 0).sum() == 27
    whole = core_within_enhancement(masks[1], masks[2], 0, min_share=0.15)
    np.testing.assert_array_equal(whole, masks[1])
    # The default share of PostprocessParams keeps it whole; 0.005 lets the cut through.
    out = postprocess_volume(masks, PostprocessParams(core_hull_margin=0), enforce_nesting=True)
    np.testing.assert_array_equal(out, masks)
    cut = PostprocessParams(core_hull_margin=0, core_hull_min_share=0.005)
    assert postprocess_volume(masks, cut, enforce_nesting=True)[1].sum() == 27
