"""Tests for brainseg_d2.evaluation.metrics: hand-computed cases, then cross-checks
against MONAI and SimpleITK on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from brainseg_d2.evaluation.distances import (
    hausdorff_distance_95,
    hd95_from_distances,
    surface_distances,
)
from brainseg_d2.evaluation.metrics import (
    HD95_PENALTY_MM,
    PooledCounts,
    absolute_volume_difference,
    confusion_counts,
    dice,
    iou,
    lesion_wise_dice,
    neighbourhood_structure,
    pixel_accuracy,
    precision,
    relative_volume_difference,
    scores_from_counts,
    sensitivity,
    specificity,
)

# pred/gt of 2x3: tp=1 (0,0), fp=1 (0,1), fn=1 (1,0), tn=3
PRED = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
GT = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
EMPTY = np.zeros((2, 3), dtype=bool)
FULL = np.ones((2, 3), dtype=bool)


def _voxels(shape, *coords):
    out = np.zeros(shape, dtype=bool)
    for c in coords:
        out[c] = True
    return out


# ---------------------------------------------------------------------------
# overlap scores
# ---------------------------------------------------------------------------


def test_confusion_counts_hand_computed():
    assert confusion_counts(PRED, GT) == (1, 1, 1, 3)
    assert all(isinstance(v, int) for v in confusion_counts(PRED, GT))


def test_confusion_counts_reads_nonzero_as_foreground():
    assert confusion_counts(PRED.astype(np.uint8) * 7, GT.astype(float)) == (1, 1, 1, 3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        confusion_counts(PRED, GT.T)
    with pytest.raises(ValueError, match="same shape"):
        hausdorff_distance_95(PRED, GT.T)


def test_scores_from_counts_hand_computed():
    s = scores_from_counts(1, 1, 1, 3)
    assert s["dice"] == pytest.approx(0.5)
    assert s["iou"] == pytest.approx(1 / 3)
    assert s["precision"] == pytest.approx(0.5)
    assert s["sensitivity"] == pytest.approx(0.5)
    assert s["specificity"] == pytest.approx(0.75)
    assert s["accuracy"] == pytest.approx(4 / 6)


def test_wrappers_match_scores_from_counts():
    assert dice(PRED, GT) == pytest.approx(0.5)
    assert iou(PRED, GT) == pytest.approx(1 / 3)
    assert precision(PRED, GT) == pytest.approx(0.5)
    assert sensitivity(PRED, GT) == pytest.approx(0.5)
    assert specificity(PRED, GT) == pytest.approx(0.75)
    assert pixel_accuracy(PRED, GT) == pytest.approx(4 / 6)


def test_both_empty_scores_empty_score_default_one():
    for fn in (dice, iou, precision, sensitivity):
        assert fn(EMPTY, EMPTY) == 1.0
    assert specificity(EMPTY, EMPTY) == 1.0  # defined: TN / TN


def test_both_empty_with_custom_empty_score():
    assert math.isnan(dice(EMPTY, EMPTY, empty_score=float("nan")))
    assert iou(EMPTY, EMPTY, empty_score=0.0) == 0.0


def test_one_empty_scores_zero():
    assert dice(EMPTY, GT) == 0.0
    assert dice(PRED, EMPTY) == 0.0
    assert iou(PRED, EMPTY) == 0.0
    assert sensitivity(PRED, EMPTY) == 0.0  # empty gt, false positives
    assert precision(EMPTY, GT) == 0.0  # empty pred, missed voxels


def test_specificity_all_foreground_gt():
    assert specificity(FULL, FULL) == 1.0
    assert specificity(PRED, FULL) == 0.0


def test_negative_counts_rejected():
    with pytest.raises(ValueError, match="fp=-1"):
        scores_from_counts(1, -1, 0, 0)


# ---------------------------------------------------------------------------
# volumes
# ---------------------------------------------------------------------------


def test_absolute_volume_difference_anisotropic():
    pred = np.zeros((4, 4, 4), dtype=bool)
    pred[0, 0, :4] = True
    pred[1, 0, 0] = True  # 5 voxels
    gt = _voxels((4, 4, 4), (0, 0, 0), (1, 1, 1), (2, 2, 2))  # 3 voxels
    # voxel = 3 * 1 * 0.5 = 1.5 mm^3, difference 2 voxels
    assert absolute_volume_difference(pred, gt, spacing=(3.0, 1.0, 0.5)) == pytest.approx(3.0)
    assert absolute_volume_difference(gt, pred) == pytest.approx(2.0)


def test_relative_volume_difference_signed_and_empty():
    assert relative_volume_difference(FULL, GT) == pytest.approx((6 - 2) / 2)
    assert relative_volume_difference(EMPTY, GT) == pytest.approx(-1.0)
    assert relative_volume_difference(EMPTY, EMPTY) == 0.0
    assert math.isnan(relative_volume_difference(PRED, EMPTY))
    assert relative_volume_difference(PRED, EMPTY, gt_empty=99.0) == 99.0


def test_spacing_checked():
    with pytest.raises(ValueError, match="one value per axis"):
        absolute_volume_difference(PRED, GT, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="> 0"):
        hausdorff_distance_95(PRED, GT, spacing=(1.0, 0.0))


# ---------------------------------------------------------------------------
# Hausdorff distance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "spacing", "expected"),
    [
        pytest.param((0, 2, 2), (2, 2, 2), (3.0, 1.0, 1.0), 6.0, id="two_voxels_along_thick_axis"),
        pytest.param((1, 1, 0), (1, 1, 4), (3.0, 1.0, 0.5), 2.0, id="two_voxels_along_fine_axis"),
        pytest.param((0, 0, 0), (1, 2, 0), (3.0, 1.0, 1.0), math.sqrt(13), id="diagonal"),
        pytest.param((0, 0, 0), (0, 0, 3), None, 3.0, id="default_spacing_1mm"),
        pytest.param((0, 0, 0), (0, 0, 3), 2.0, 6.0, id="scalar_spacing"),
    ],
)
def test_hd95_single_voxels(a, b, spacing, expected):
    pred, gt = _voxels((3, 4, 5), a), _voxels((3, 4, 5), b)
    assert hausdorff_distance_95(pred, gt, spacing) == pytest.approx(expected)


def test_hd95_is_max_of_directed_percentiles_not_pooled():
    # gt: one pixel; pred: isolated pixels 2, 4, 6, 8, 10 px away along a row.
    gt = _voxels((1, 11), (0, 0))
    pred = _voxels((1, 11), (0, 2), (0, 4), (0, 6), (0, 8), (0, 10))
    # pred->gt = [2, 4, 6, 8, 10]: P95 = 8 + 0.8 * 2 = 9.6; gt->pred = [2]
    assert hausdorff_distance_95(pred, gt) == pytest.approx(9.6)
    # the pooled convention would give P95([2, 2, 4, 6, 8, 10]) = 9.5
    assert hausdorff_distance_95(pred, gt, percentile=100.0) == pytest.approx(10.0)
    assert hausdorff_distance_95(pred, gt, percentile=50.0) == pytest.approx(6.0)
    assert hausdorff_distance_95(gt, pred) == pytest.approx(9.6)  # symmetric


def test_hd95_conventions_hand_computed():
    # pred->gt [0, 0, 0, 10], gt->pred [0, 0]: MONAI takes the larger directed
    # percentile (index 0.95 * 3 = 2.85 -> 8.5); panoptica pools the six values
    # (index 0.95 * 5 = 4.75 -> 7.5).
    d1, d2 = np.array([0.0, 0.0, 0.0, 10.0]), np.array([0.0, 0.0])
    assert hd95_from_distances(d1, d2) == pytest.approx(8.5)
    assert hd95_from_distances(d1, d2, convention="panoptica") == pytest.approx(7.5)
    with pytest.raises(ValueError, match="convention must be one of"):
        hd95_from_distances(d1, d2, convention="deepmind")


def test_hd95_convention_on_masks():
    # gt (0, 0); pred (0, 0) and (0, 3): pred->gt [0, 3], gt->pred [0].
    gt = _voxels((1, 4), (0, 0))
    pred = _voxels((1, 4), (0, 0), (0, 3))
    assert hausdorff_distance_95(pred, gt) == pytest.approx(2.85)
    assert hausdorff_distance_95(pred, gt, convention="panoptica") == pytest.approx(2.7)
    with pytest.raises(ValueError, match="convention"):
        hausdorff_distance_95(pred, gt, convention="x")


def test_hd95_identical_masks_zero():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1:4, 2:5, 1:6] = True
    assert hausdorff_distance_95(mask, mask, (2.0, 1.0, 1.0)) == 0.0


def test_hd95_empty_policies():
    one = _voxels((3, 3), (1, 1))
    none = np.zeros((3, 3), dtype=bool)
    assert hausdorff_distance_95(none, none) == 0.0
    assert math.isnan(hausdorff_distance_95(none, none, both_empty=float("nan")))
    assert hausdorff_distance_95(one, none) == HD95_PENALTY_MM == 374.0  # BraTS 2023
    assert hausdorff_distance_95(none, one) == 374.0
    assert hausdorff_distance_95(none, one, one_empty=math.inf) == math.inf
    # A penalty, not a distance: over the largest one in a 240 x 240 x 155 1 mm volume.
    assert HD95_PENALTY_MM > math.sqrt(240**2 + 240**2 + 155**2)


def test_hd95_bad_percentile():
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance_95(PRED, GT, percentile=101.0)


def test_surface_uses_face_connected_erosion():
    # A plus sign: its centre has all 4 face neighbours, so it is interior
    # (MONAI's edges: scipy binary_erosion with its default cross element).
    plus = _voxels((3, 3), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1))
    pred_to_gt, gt_to_pred = surface_distances(plus, plus)
    assert pred_to_gt.shape == (4,) and gt_to_pred.shape == (4,)
    # a 3x3x3 cube: 26 surface voxels
    cube = np.ones((3, 3, 3), dtype=bool)
    assert surface_distances(cube, cube)[0].shape == (26,)


def test_surface_distances_reject_empty():
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(EMPTY, GT)


def test_cropping_is_exact_for_masks_touching_the_border():
    rng = np.random.default_rng(0)
    pred = ndimage.gaussian_filter(rng.random((12, 20, 16)), 2) > 0.52
    gt = ndimage.gaussian_filter(rng.random((12, 20, 16)), 2) > 0.52
    assert pred[0].any() and gt[:, :, -1].any()
    spacing = (2.5, 1.0, 0.7)
    # reference without cropping
    edge_p = pred ^ ndimage.binary_erosion(pred)
    edge_g = gt ^ ndimage.binary_erosion(gt)
    ref_pg = ndimage.distance_transform_edt(~edge_g, sampling=spacing)[edge_p]
    ref_gp = ndimage.distance_transform_edt(~edge_p, sampling=spacing)[edge_g]
    pg, gp = surface_distances(pred, gt, spacing)
    np.testing.assert_allclose(pg, ref_pg)
    np.testing.assert_allclose(gp, ref_gp)


# ---------------------------------------------------------------------------
# lesion-wise Dice
# ---------------------------------------------------------------------------


def _cube(shape, start, size=2):
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(s, s + size) for s in start)] = True
    return out


SHAPE = (20, 20, 20)


def test_lesion_wise_both_empty_is_one():
    empty = np.zeros(SHAPE, dtype=bool)
    res = lesion_wise_dice(empty, empty)
    assert res["lesion_wise_dice"] == 1.0
    assert (res["num_lesions"], res["num_fp"], res["lesions"]) == (0, 0, [])


def test_lesion_wise_empty_gt_with_prediction_is_zero():
    res = lesion_wise_dice(_cube(SHAPE, (5, 5, 5)), np.zeros(SHAPE, dtype=bool))
    assert res["lesion_wise_dice"] == 0.0
    assert res["num_fp"] == 1


def test_lesion_wise_perfect_single_lesion():
    gt = _cube(SHAPE, (5, 5, 5))
    res = lesion_wise_dice(gt, gt)
    assert res["lesion_wise_dice"] == 1.0
    assert (res["num_lesions"], res["num_tp"], res["num_fn"], res["num_fp"]) == (1, 1, 0, 0)


def test_lesion_wise_hit_miss_and_false_positive():
    a, b = _cube(SHAPE, (1, 1, 1)), _cube(SHAPE, (1, 1, 15))  # far apart
    fp = _cube(SHAPE, (15, 15, 15))
    res = lesion_wise_dice(a | fp, a | b)
    # lesion Dice [1, 0], one FP component: (1 + 0) / (2 + 1)
    assert res["lesion_wise_dice"] == pytest.approx(1 / 3)
    assert [r["dice"] for r in res["lesions"]] == [1.0, 0.0]
    assert (res["num_tp"], res["num_fn"], res["num_fp"]) == (1, 1, 1)


def test_lesion_wise_dilation_matches_nearby_fragment():
    gt = _cube(SHAPE, (5, 5, 5))  # voxels 5..6 on each axis, 8 voxels
    frag = _voxels(SHAPE, (5, 5, 9))  # two empty voxels away from the lesion
    pred = gt | frag
    # dilated by 3 (BraTS default): the fragment belongs to the lesion
    res = lesion_wise_dice(pred, gt)
    assert res["lesion_wise_dice"] == pytest.approx(2 * 8 / (9 + 8))
    assert res["num_fp"] == 0 and res["lesions"][0]["matched"] == [1, 2]
    # no dilation: the fragment is a false positive
    res = lesion_wise_dice(pred, gt, dilation_iters=0)
    assert res["lesion_wise_dice"] == pytest.approx(1 / 2)
    assert res["num_fp"] == 1


def test_lesion_wise_merges_close_gt_components():
    gt = _cube(SHAPE, (5, 5, 5)) | _cube(SHAPE, (5, 5, 9))  # 2 voxels gap
    assert lesion_wise_dice(gt, gt)["num_lesions"] == 1
    assert lesion_wise_dice(gt, gt, dilation_iters=0)["num_lesions"] == 2


def test_lesion_wise_connectivity():
    gt = _voxels(SHAPE, (5, 5, 5), (6, 6, 6))  # corner-touching voxels
    assert lesion_wise_dice(gt, gt, dilation_iters=0)["num_lesions"] == 1  # 26
    assert lesion_wise_dice(gt, gt, dilation_iters=0, connectivity=6)["num_lesions"] == 2


def test_lesion_wise_small_lesions_ignored():
    big, small = _cube(SHAPE, (1, 1, 1)), _voxels(SHAPE, (15, 15, 15))
    gt = big | small
    assert lesion_wise_dice(big, gt)["lesion_wise_dice"] == pytest.approx(1 / 2)
    res = lesion_wise_dice(big, gt, min_lesion_volume=1)  # volume <= 1 ignored
    assert res["lesion_wise_dice"] == 1.0
    assert res["num_lesions"] == 1 and res["lesions"][1]["ignored"]
    # with spacing the volume is in mm^3: the small lesion is 8 mm^3
    kwargs = {"spacing": (2.0, 2.0, 2.0)}
    assert lesion_wise_dice(big, gt, min_lesion_volume=8, **kwargs)["num_lesions"] == 1
    assert lesion_wise_dice(big, gt, min_lesion_volume=7, **kwargs)["num_lesions"] == 2


def test_lesion_wise_prediction_of_ignored_lesion_is_not_false_positive():
    small = _voxels(SHAPE, (10, 10, 10))
    res = lesion_wise_dice(small, small, min_lesion_volume=1)
    assert (res["num_lesions"], res["num_fp"], res["lesion_wise_dice"]) == (0, 0, 1.0)


def test_lesion_wise_one_prediction_spanning_two_lesions():
    a, b = _cube(SHAPE, (1, 1, 1)), _cube(SHAPE, (1, 1, 10))
    bridge = np.zeros(SHAPE, dtype=bool)
    bridge[1:3, 1:3, 1:12] = True  # 2*2*11 = 44 voxels, covers a and b
    res = lesion_wise_dice(bridge, a | b, dilation_iters=0)
    # each lesion: 2 * 8 / (44 + 8)
    assert [r["dice"] for r in res["lesions"]] == pytest.approx([16 / 52, 16 / 52])
    assert res["num_fp"] == 0


def test_lesion_wise_2d():
    gt = _voxels((8, 8), (1, 1), (6, 6))
    res = lesion_wise_dice(gt, gt, dilation_iters=1)
    assert res["num_lesions"] == 2 and res["lesion_wise_dice"] == 1.0


# ---------------------------------------------------------------------------
# structures and accumulator
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ndim", "neighbours"), [(2, 4), (2, 8), (3, 6), (3, 18), (3, 26), (3, None)]
)
def test_neighbourhood_structure(ndim, neighbours):
    struct = neighbourhood_structure(ndim, neighbours)
    expected = neighbours if neighbours is not None else 26
    assert struct.shape == (3,) * ndim and struct.sum() - 1 == expected


def test_neighbourhood_structure_rejects_unknown():
    with pytest.raises(ValueError, match="connectivity 6 .* 2D"):
        neighbourhood_structure(2, 6)


def test_pooled_counts_volume_dice_is_not_mean_of_slices():
    acc = PooledCounts()
    acc.update("vol1", "WT", _voxels((1, 4), (0, 0)), _voxels((1, 4), (0, 0)))  # Dice 1
    acc.update("vol1", "WT", _voxels((1, 4), (0, 0)), _voxels((1, 4), (0, 0), (0, 1), (0, 2)))
    # pooled tp=2 fp=0 fn=2: 4/6, whereas the slice mean is (1 + 0.5) / 2
    assert acc.counts() == {("vol1", "WT"): (2, 0, 2, 4)}
    assert acc.scores()[("vol1", "WT")]["dice"] == pytest.approx(4 / 6)


def test_pooled_counts_add_gathered_tuples_and_reset():
    acc = PooledCounts()
    acc.add("v", 0, (1, 2, 3, 4))
    acc.add("v", 0, (1, 0, 0, 0))
    acc.add("w", 0, (0, 0, 0, 9))
    assert len(acc) == 2 and acc.counts()[("v", 0)] == (2, 2, 3, 4)
    assert acc.scores()[("w", 0)]["dice"] == 1.0  # empty volume, BraTS policy
    with pytest.raises(ValueError, match="tp, fp, fn, tn"):
        acc.add("v", 0, (1, 2))
    acc.reset()
    assert len(acc) == 0


# ---------------------------------------------------------------------------
# cross-checks against independent implementations
# ---------------------------------------------------------------------------


def _random_pair(seed, shape):
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.53
    noise = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    pred = ndimage.binary_dilation(gt, iterations=int(rng.integers(0, 2))) ^ noise
    return pred, gt


CROSS_CASES = [
    pytest.param(0, (24, 32, 28), (1.0, 1.0, 1.0), id="3d_iso"),
    pytest.param(1, (20, 30, 26), (3.0, 0.9, 0.9), id="3d_thick_slices"),
    pytest.param(2, (16, 24, 40), (1.2, 0.5, 2.0), id="3d_anisotropic"),
    pytest.param(3, (64, 48), (0.8, 1.7), id="2d_anisotropic"),
]


@pytest.mark.parametrize(("seed", "shape", "spacing"), CROSS_CASES)
def test_matches_monai(seed, shape, spacing):
    pytest.importorskip("monai")
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred, gt = _random_pair(seed, shape)
    assert pred.any() and gt.any()
    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
    y = torch.from_numpy(gt[None, None].astype(np.float32))
    ref_dice = compute_dice(y_pred, y, include_background=True).item()
    assert dice(pred, gt) == pytest.approx(ref_dice, abs=1e-6)
    for percentile, ours_percentile in ((95, 95.0), (None, 100.0)):
        ref_hd = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=percentile, spacing=spacing
        ).item()
        ours = hausdorff_distance_95(pred, gt, spacing, percentile=ours_percentile)
        assert ours == pytest.approx(ref_hd, abs=1e-3)


@pytest.mark.parametrize(("seed", "shape", "spacing"), CROSS_CASES)
def test_max_distance_matches_simpleitk(seed, shape, spacing):
    sitk = pytest.importorskip("SimpleITK")
    pred, gt = _random_pair(seed, shape)
    # ITK measures between all foreground voxels, so feed it our surfaces: this
    # checks the distances and the spacing axis order independently of scipy's EDT.
    images = []
    for mask in (pred, gt):
        edge = (mask ^ ndimage.binary_erosion(mask)).astype(np.uint8)
        image = sitk.GetImageFromArray(edge)
        image.SetSpacing(tuple(reversed(spacing)))  # ITK spacing is (x, y, z)
        images.append(image)
    hd_filter = sitk.HausdorffDistanceImageFilter()
    hd_filter.Execute(*images)
    ours = hausdorff_distance_95(pred, gt, spacing, percentile=100.0)
    assert ours == pytest.approx(hd_filter.GetHausdorffDistance(), abs=1e-4)


def _brats2023_lesion_wise_dice(pred, gt, dil_factor, volume_thresh):
    """Straight port of BraTS-2023-Metrics ``get_LesionWiseScores`` (Dice part),
    with scipy.ndimage.label in place of cc3d (same 26-connectivity)."""
    full = np.ones((3, 3, 3))
    dilation_struct = ndimage.generate_binary_structure(3, 2)

    def dilate(mask):  # scipy reads iterations=0 as "until stable"; BraTS never uses 0
        if dil_factor == 0:
            return mask
        return ndimage.binary_dilation(mask, dilation_struct, iterations=dil_factor)

    gt_cc, _ = ndimage.label(gt, full)
    pred_cc, _ = ndimage.label(pred, full)
    gt_dil_cc, n_dil = ndimage.label(dilate(gt), full)
    combined = np.zeros_like(gt_dil_cc)
    for comp in range(1, n_dil + 1):
        tmp = gt_cc * (gt_dil_cc == comp)
        combined[tmp > 0] = comp
    tp, dices = [], []
    for comp in range(1, combined.max() + 1):
        lesion = combined == comp
        if not lesion.any():
            continue
        dilated = dilate(lesion)
        hits = np.unique(pred_cc * dilated)
        hits = hits[hits != 0]
        tp.extend(hits.tolist())
        sel = np.isin(pred_cc, hits)
        d = 2.0 * (sel & lesion).sum() / (sel.sum() + lesion.sum())
        if lesion.sum() > volume_thresh:
            dices.append(d)
    fp = np.unique(pred_cc[np.isin(pred_cc, [*tp, 0], invert=True)])
    denominator = len(dices) + len(fp)
    return sum(dices) / denominator if denominator else 1.0


@pytest.mark.parametrize(
    ("seed", "dil_factor", "thresh"),
    [(0, 3, 0), (1, 3, 50), (2, 1, 2), (3, 0, 0), (4, 2, 10)],
    ids=["gli_no_thresh", "gli_50", "met", "no_dilation", "dil2_thresh10"],
)
def test_lesion_wise_matches_brats2023_port(seed, dil_factor, thresh):
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random((24, 30, 30)), 1.2) > 0.58
    pred = ndimage.gaussian_filter(rng.random((24, 30, 30)), 1.2) > 0.58
    pred |= gt & (rng.random(gt.shape) > 0.3)
    ours = lesion_wise_dice(pred, gt, dilation_iters=dil_factor, min_lesion_volume=thresh)
    assert len(ours["lesions"]) > 1 and ours["num_fp"] > 0
    assert ours["lesion_wise_dice"] == pytest.approx(
        _brats2023_lesion_wise_dice(pred, gt, dil_factor, thresh)
    )


@pytest.mark.parametrize(("seed", "shape", "spacing"), CROSS_CASES)
def test_surface_distances_kdtree_equals_distance_transform(seed, shape, spacing, monkeypatch):
    import brainseg_d2.evaluation.distances as distances

    pred, gt = _random_pair(seed, shape)
    far = np.zeros_like(gt)  # a far-away speck makes the box large and the surfaces sparse
    far[(0,) * far.ndim] = True
    for p, g in ((pred, gt), (pred | far, gt)):
        monkeypatch.setattr(distances, "_KDTREE_BOX_RATIO", float("inf"))
        edt = surface_distances(p, g, spacing)
        monkeypatch.setattr(distances, "_KDTREE_BOX_RATIO", 0)
        tree = surface_distances(p, g, spacing)
        for a, b in zip(edt, tree):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
