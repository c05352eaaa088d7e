"""evaluate_volume and summarize: pooled volume scores, empty-slice policy, spacing
order, the HD95 penalty, regions per target, means that skip NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainseg_d2.evaluation.case_scores import ScoringSettings
from brainseg_d2.evaluation.lesion_metrics import LesionSettings
from brainseg_d2.evaluation.volume_scores import (
    evaluate_volume,
    named_categories,
    region_categories,
    summarize,
)

H = W = 8


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------------------
# evaluate_volume: the maths of one volume
# ---------------------------------------------------------------------------


def _volume(slices: list[np.ndarray], category: int = 1, num_categories: int = 3) -> np.ndarray:
    out = np.zeros((num_categories, len(slices), H, W), bool)
    out[category] = np.stack(slices)
    return out


def _row(rows, group, name) -> dict:
    return next(r for r in rows if r["group"] == group and r["name"] == name)


def test_volume_dice_pools_counts_not_mean_of_slice_scores():
    gt = _volume([_box(0, 2, 0, 2), _box(0, 3, 0, 4)])  # 4 and 12 pixels
    pred = _volume([_box(0, 2, 1, 3), _box(0, 3, 0, 4)])  # slice 0: 2 of 4 overlap
    row = _row(evaluate_volume(pred, gt, (5.0, 2.0, 0.5), "labels"), "category", "edema")
    assert row["slice_dice"] == [0.5, 1.0]
    assert row["dice"] == pytest.approx(2 * 14 / (16 + 16))  # pooled: 0.875, not 0.75
    assert row["iou"] == pytest.approx(14 / 18)
    assert (row["ref_voxels"], row["pred_voxels"]) == (16, 16)
    assert row["ref_ml"] == pytest.approx(16 * 5.0 * 2.0 * 0.5 / 1000)


@pytest.mark.parametrize(
    "policy, empty_score, expected",
    [("exclude", 1.0, [0.5]), ("include", 1.0, [1.0, 0.5]), ("include", 0.0, [0.0, 0.5])],
    ids=["exclude", "include-scores-1", "include-scores-0"],
)
def test_empty_slice_policy(policy, empty_score, expected):
    gt = _volume([_box(0, 0, 0, 0), _box(0, 2, 0, 2)])
    pred = _volume([_box(0, 0, 0, 0), _box(0, 2, 1, 3)])
    rows = evaluate_volume(pred, gt, (1, 1, 1), "labels", empty_slice_policy=policy,
                           settings=ScoringSettings(empty_score=empty_score))
    assert _row(rows, "category", "edema")["slice_dice"] == expected
    # Necrotic is empty everywhere: no slice kept when excluding; volume scores empty_score.
    necrotic = _row(rows, "category", "necrotic")
    assert necrotic["slice_dice"] == ([] if policy == "exclude" else [empty_score] * 2)
    assert necrotic["dice"] == empty_score and necrotic["hd95"] == 0.0
    assert necrotic["both_empty"]


def test_slices_argument_limits_slice_scores_only():
    gt = _volume([_box(0, 2, 0, 2), _box(0, 2, 0, 2)])
    pred = _volume([_box(0, 0, 0, 0), _box(0, 2, 0, 2)])
    row = _row(evaluate_volume(pred, gt, (1, 1, 1), "labels", slices=[1]), "category", "edema")
    assert row["slice_dice"] == [1.0]
    assert row["dice"] == pytest.approx(2 * 4 / 12)  # the volume still sees slice 0


@pytest.mark.parametrize(
    "shift, expected_mm",
    [((1, 0, 0), 5.0), ((0, 1, 0), 2.0), ((0, 0, 1), 0.5)],
    ids=["slice-axis", "row-axis", "column-axis"],
)
def test_hd95_uses_spacing_in_slice_array_order(shift, expected_mm):
    gt = np.zeros((3, 3, H, W), bool)
    gt[1, 1, 3, 3] = True
    pred = np.roll(gt, shift, axis=(1, 2, 3))
    row = _row(evaluate_volume(pred, gt, (5.0, 2.0, 0.5), "labels"), "category", "edema")
    assert row["hd95"] == pytest.approx(expected_mm)


def test_hd95_penalty_value():
    gt = _volume([_box(0, 2, 0, 2)])
    rows = evaluate_volume(np.zeros_like(gt), gt, (1, 1, 1), "labels")
    assert _row(rows, "category", "edema")["hd95"] == 374.0  # the BraTS 2023 penalty
    keep_all = LesionSettings(dilation_iters=3, min_lesion_volume=0.0)  # a 4 mm3 lesion
    rows = evaluate_volume(np.zeros_like(gt), gt, (1, 1, 1), "labels",
                           settings=ScoringSettings(hd95_penalty=99.0, lesion=keep_all))
    edema = _row(rows, "category", "edema")
    assert edema["hd95"] == edema["lesion_hd95"] == edema["sq_hd95"] == 99.0


def test_labels_target_regions_are_unions_of_categories():
    gt = np.zeros((3, 1, H, W), bool)
    gt[0, 0] = _box(0, 2, 0, 2)  # necrotic
    gt[1, 0] = _box(4, 6, 4, 6)  # edema
    pred = np.zeros_like(gt)
    pred[1, 0] = _box(0, 2, 0, 2) | _box(4, 6, 4, 6)  # all called edema
    rows = evaluate_volume(pred, gt, (1, 1, 1), "labels")
    # enhancing *is* ET: scored once, as a region
    assert [r["name"] for r in rows] == ["WT", "TC", "ET", "necrotic", "edema"]
    assert _row(rows, "region", "WT")["dice"] == 1.0  # WT = NCR | ED | ET
    assert _row(rows, "region", "TC")["dice"] == 0.0  # TC = NCR | ET, predicted as ED
    assert _row(rows, "category", "necrotic")["dice"] == 0.0
    assert _row(rows, "category", "edema")["dice"] == pytest.approx(2 * 4 / 12)


@pytest.mark.parametrize(
    "target, expected",
    [
        ("labels", {"WT": (0, 1, 2), "TC": (0, 2), "ET": (2,)}),
        ("regions", {"WT": (0,), "TC": (1,), "ET": (2,)}),
        ("binary", {"WT": (0,)}),
    ],
)
def test_region_categories(target, expected):
    assert region_categories(target) == expected


@pytest.mark.parametrize(
    "target, expected",
    [
        ("labels", ["WT", "TC", "ET", "cat:necrotic", "cat:edema"]),
        ("regions", ["WT", "TC", "ET"]),
        ("binary", ["WT"]),
    ],
)
def test_named_categories_score_each_mask_once(target, expected):
    names = [n if g == "region" else f"cat:{n}" for g, n, _ in named_categories(target)]
    assert names == expected


def test_regions_target_categories_are_the_regions_without_duplicate_rows():
    gt = np.zeros((3, 1, H, W), bool)
    gt[0, 0] = _box(0, 6, 0, 6)
    gt[1, 0] = _box(1, 4, 1, 4)
    gt[2, 0] = _box(2, 3, 2, 3)
    pred = gt.copy()
    pred[0, 0] = _box(0, 5, 0, 6)  # WT too small; not a union with TC/ET
    rows = evaluate_volume(pred, gt, (1, 1, 1), "regions")
    assert [(r["group"], r["name"]) for r in rows] == [
        ("region", "WT"), ("region", "TC"), ("region", "ET")
    ]
    assert _row(rows, "region", "WT")["dice"] == pytest.approx(2 * 30 / 66)
    flat = summarize([{**r, "variant": "post"} for r in rows])
    assert not any("cat_" in k for k in flat)


def test_evaluate_volume_rejects_bad_input():
    gt = _volume([_box(0, 2, 0, 2)])
    with pytest.raises(ValueError, match="same|C, S, H, W"):
        evaluate_volume(gt[:, :, :4], gt, (1, 1, 1), "labels")
    with pytest.raises(ValueError, match="3 categories"):
        evaluate_volume(gt[:2], gt[:2], (1, 1, 1), "labels")
    with pytest.raises(ValueError, match="empty_slice_policy"):
        evaluate_volume(gt, gt, (1, 1, 1), "labels", empty_slice_policy="sometimes")
    with pytest.raises(ValueError, match="spacing"):
        evaluate_volume(gt, gt, (1, 1), "labels")


def test_summarize_means_skip_nan_and_average_regions():
    rows = [
        {"variant": "raw", "group": "region", "name": n, "dice": d, "iou": d, "hd95": 1.0,
         "sensitivity": d, "precision": d, "lesion_dice": d, "ref_voxels": 1, "pred_voxels": 1,
         "slice_dice": sl, "slice_iou": sl}
        for n, d, sl in [("WT", 0.8, [0.5, 1.0]), ("WT", 0.6, []), ("ET", float("nan"), [])]
    ]
    flat = summarize(rows)
    assert flat["volume_dice_WT_raw"] == pytest.approx(0.7)
    assert flat["slice_dice_WT_raw"] == pytest.approx(0.75)  # over slices, not volumes
    assert math.isnan(flat["volume_dice_ET_raw"]) and math.isnan(flat["slice_dice_ET_raw"])
    assert flat["volume_dice_mean_raw"] == pytest.approx(0.7)
    assert flat["num_present_WT"] == 2.0 and flat["volume_dice_present_WT_raw"] == 0.7
