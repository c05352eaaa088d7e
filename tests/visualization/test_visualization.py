"""Overlays, montages, GIFs and case pictures (brainseg_d2.visualization)."""

from __future__ import annotations

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
from detectron2.structures import Boxes
from scipy import ndimage

from brainseg_d2 import visualization as viz
from brainseg_d2.labels import CATEGORY_COLORS

GREY = 100
NAMES = ["edema", "enhancing"]


def _image(h: int = 40, w: int = 48) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def _masks() -> np.ndarray:
    """Edema square; enhancing ring (a mask with a hole: Visualizer's other code path)."""
    m = np.zeros((2, 40, 48), bool)
    m[0, 10:26, 12:28] = True
    m[1, 5:20, 30:45] = True
    m[1, 9:16, 34:41] = False
    return m


def test_overlay_colours_masked_pixels_with_category_colour():
    masks = _masks()
    out = viz.overlay_masks(_image(), masks, NAMES, alpha=0.4)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    inner = ndimage.binary_erosion(masks[0], iterations=2)
    expected = 0.6 * GREY + 0.4 * np.array(CATEGORY_COLORS["edema"])
    np.testing.assert_allclose(out[inner].mean(axis=0), expected, atol=3)


def test_overlay_leaves_pixels_away_from_masks_and_inside_holes_alone():
    masks = _masks()
    out = viz.overlay_masks(_image(), masks, NAMES, title=None)
    far = ~ndimage.binary_dilation(masks.any(axis=0), iterations=2)
    assert np.abs(out[far].astype(int) - GREY).max() <= 2
    hole = np.zeros((40, 48), bool)
    hole[11:14, 36:39] = True  # centre of the ring's hole
    assert np.abs(out[hole].astype(int) - GREY).max() <= 2


def test_overlay_draws_components_of_one_or_two_pixels():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 10, 10:12] = True  # Visualizer alone drops polygons this small
    out = viz.overlay_masks(_image(20, 20), masks, ["edema"], contour=False)
    assert np.abs(out[10, 10].astype(int) - GREY).max() > 20


def test_overlay_upscales_and_rejects_bad_shapes():
    out = viz.overlay_masks(_image(), _masks(), NAMES, scale=3, labels=True, legend=True, title="t")
    assert out.shape == (120, 144, 3)
    with pytest.raises(ValueError, match="masks must be"):
        viz.overlay_masks(_image(), _masks()[:, :10], NAMES)
    with pytest.raises(ValueError, match="names"):
        viz.overlay_masks(_image(), _masks(), ["edema"])


def test_side_by_side_is_two_scaled_panels_and_a_gap():
    out = viz.side_by_side(_image(), _masks(), _masks()[::-1], NAMES, scale=2, gap=4)
    assert out.shape == (80, 2 * 96 + 4, 3)


def test_montage_shape_and_padding():
    tiles = [np.full((10, 12, 3), i * 20, np.uint8) for i in range(5)]
    tiles.append(np.zeros((6, 8, 3), np.uint8))  # smaller: padded
    out = viz.montage(tiles, cols=4, gap=2)
    assert out.shape == (2 * 10 + 2, 4 * 12 + 3 * 2, 3)
    np.testing.assert_array_equal(out[0:10, 14:26], tiles[1])
    assert viz.montage(tiles[:1], cols=4).shape == (10, 12, 3)
    with pytest.raises(ValueError, match="at least one"):
        viz.montage([], cols=2)


def test_tumour_slices_spread_and_area():
    masks = np.zeros((2, 9, 4, 4), bool)
    masks[0, 2, 0, 0] = True  # area 1
    masks[1, 3] = True  # area 16
    masks[0, 4, :2] = True  # area 8
    masks[1, 7] = True  # area 16
    assert viz.tumour_slices(masks, 3) == [2, 4, 7]
    assert viz.tumour_slices(masks, 2, mode="area") == [3, 7]
    assert viz.tumour_slices(masks, 10) == [2, 3, 4, 7]
    assert viz.tumour_slices(np.zeros((1, 5, 4, 4), bool), 3) == []
    with pytest.raises(ValueError, match="C, S, H, W"):
        viz.tumour_slices(masks[0], 3)


def test_write_gif_has_one_frame_per_image(tmp_path):
    frames = [np.full((16, 20, 3), 40 * i, np.uint8) for i in range(5)]
    path = viz.write_gif(frames, tmp_path / "sub" / "a.gif", fps=5)
    back = iio.imread(path, index=None)
    assert back.shape[:3] == (5, 16, 20)
    with pytest.raises(ValueError, match="one shape"):
        viz.write_gif([frames[0], np.zeros((8, 8, 3), np.uint8)], tmp_path / "b.gif")


def _volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, H, W, 3) slices with a bright tumour on slices 3-5, its GT and a shifted prediction."""
    rng = np.random.default_rng(0)
    slices = rng.integers(30, 90, (8, 24, 24, 3)).astype(np.uint8)
    gt = np.zeros((2, 8, 24, 24), bool)
    gt[0, 3:6, 8:16, 8:16] = True
    gt[1, 4, 10:14, 10:14] = True
    slices[gt[0]] = 200
    return slices, gt, np.roll(gt, 2, axis=3)


def test_render_case_writes_side_by_sides_montage_and_gif(tmp_path):
    slices, gt, pred = _volume()
    result = viz.render_case(
        slices, pred, tmp_path / "case", NAMES, gt_masks=gt, num_slices=2, max_gif_frames=4
    )
    assert result.slice_indices == [3, 5]
    assert [p.name for p in result.slices] == ["slice_0003.png", "slice_0005.png"]
    side = cv2.imread(str(result.slices[0]))
    scale = viz.auto_scale((24, 24), target=480)
    assert side.shape[0] == 24 * scale and side.shape[1] > 2 * 24 * scale
    assert result.montage.is_file()
    assert iio.imread(result.gif, index=None).shape[0] == 4  # 8 slices, step 2


def test_render_case_without_tumour_or_gt_picks_spread_slices(tmp_path):
    slices, gt, _ = _volume()
    result = viz.render_case(slices, np.zeros_like(gt), tmp_path, NAMES, num_slices=3, gif=False)
    assert result.slice_indices == [0, 4, 7] and result.gif is None
    assert len(list(tmp_path.glob("slice_*.png"))) == 3


def test_ground_truth_masks_follow_the_prediction_geometry():
    import SimpleITK as sitk

    from brainseg_d2.data.ground_truth import label_map_masks
    from brainseg_d2.labels import get_convention, get_target
    from brainseg_d2.structures import SliceGeometry

    raw = np.zeros((5, 6, 7), np.uint8)  # (z, y, x)
    raw[2, 1, 3], raw[3, 4, 5] = 4, 2
    image = sitk.GetImageFromArray(raw)
    geometry = SliceGeometry.from_image(image, "axial")
    masks = label_map_masks(
        image, geometry, get_target("regions"), get_convention("brats2021")
    )
    assert masks.shape == (3, 5, 6, 7)
    assert masks[0].sum() == 2 and masks[2].sum() == 1  # WT holds both, ET only label 4


@pytest.mark.parametrize("draw", ["dataset_dict", "instances"])
def test_ground_truth_and_instances_are_drawn_in_the_exact_category_colour(draw):
    """Detectron2 shifts each instance's colour at random; the category colour is kept here."""
    import pycocotools.mask as mask_util
    import torch
    from detectron2.structures import BoxMode, Instances

    image = np.full((64, 64, 3), GREY, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[8:56, 8:56] = 1
    metadata = viz.make_metadata(NAMES)

    def drawn() -> np.ndarray:
        if draw == "dataset_dict":
            ann = {"bbox": [8, 8, 48, 48], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                   "segmentation": mask_util.encode(np.asfortranarray(mask))}  # fmt: skip
            return viz.draw_dataset_dict(image, {"annotations": [ann]}, metadata)
        inst = Instances((64, 64), pred_classes=torch.tensor([0]), scores=torch.tensor([0.9]),
                         pred_masks=torch.from_numpy(mask[None].astype(bool)))  # fmt: skip
        return viz.draw_instances(image, inst, metadata)

    first, second = drawn(), drawn()
    np.testing.assert_array_equal(first, second)  # no random shade
    inner = ndimage.binary_erosion(mask.astype(bool), iterations=6)
    alpha = 0.5 if draw == "dataset_dict" else 0.8  # Detectron2's fill opacities
    expected = (1 - alpha) * GREY + alpha * np.array(CATEGORY_COLORS["edema"])
    np.testing.assert_allclose(np.median(first[inner], axis=0), expected, atol=3)


@pytest.mark.parametrize("draw", ["dataset_dict", "instances"])
def test_a_ring_keeps_its_hole_in_ground_truth_and_instance_pictures(draw):
    """An enhancing rim around necrosis: Detectron2 filled the hole's polygon too, so the
    ground truth looked like a solid lesion."""
    import pycocotools.mask as mask_util
    import torch
    from detectron2.structures import BoxMode, Instances

    image = np.full((64, 64, 3), GREY, np.uint8)
    rows, cols = np.mgrid[:64, :64]
    radius = np.hypot(rows - 32, cols - 32)
    ring = ((radius <= 24) & (radius > 12)).astype(np.uint8)
    metadata = viz.make_metadata(NAMES)
    if draw == "dataset_dict":
        ann = {"bbox": [8, 8, 49, 49], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
               "segmentation": mask_util.encode(np.asfortranarray(ring))}  # fmt: skip
        out = viz.draw_dataset_dict(image, {"annotations": [ann]}, metadata)
    else:
        inst = Instances((64, 64), pred_classes=torch.tensor([0]), scores=torch.tensor([0.9]),
                         pred_masks=torch.from_numpy(ring[None].astype(bool)),
                         pred_boxes=Boxes(torch.tensor([[8.0, 8.0, 57.0, 57.0]])))  # fmt: skip
        out = viz.draw_instances(image, inst, metadata)
    hole = radius <= 9  # away from the outline's line width
    np.testing.assert_array_equal(out[hole], np.full((hole.sum(), 3), GREY, np.uint8))
    band = (radius > 15) & (radius < 21)
    assert np.abs(out[band].astype(int) - GREY).max(axis=1).min() > 20  # tinted everywhere
