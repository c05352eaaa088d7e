"""Tests for brainseg_d2.evaluation.lesion_metrics and .panoptic_lesions: hand-computed
cases, a port of the BraTS 2023 scripts, and (when installed) panoptica's BraTS
configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from official import import_official
from scipy import ndimage

from brainseg_d2.evaluation.distances import hausdorff_distance_95
from brainseg_d2.evaluation.lesion_metrics import (
    BRATS2023_LESION_SETTINGS,
    brats2023_lesion_metrics,
)
from brainseg_d2.evaluation.metrics import lesion_wise_dice
from brainseg_d2.evaluation.panoptic_lesions import panoptic_lesion_metrics


def _line(n: int, *spans: tuple[int, int]) -> np.ndarray:
    """A (1, 1, n) volume with voxels [a, b) set for each span: a 1D row of lesions."""
    out = np.zeros((1, 1, n), dtype=bool)
    for a, b in spans:
        out[0, 0, a:b] = True
    return out


# ---------------------------------------------------------------------------
# BraTS 2023: hand-computed
# ---------------------------------------------------------------------------


def _hit_miss_fp():
    """GT: a 2x2x2 cube (hit exactly) and a 1-voxel lesion (missed); pred: the cube
    plus a far voxel (false positive)."""
    gt = np.zeros((3, 12, 12), dtype=bool)
    gt[0:2, 0:2, 0:2] = True
    gt[1, 10, 10] = True
    pred = np.zeros_like(gt)
    pred[0:2, 0:2, 0:2] = True
    pred[1, 6, 0] = True
    return pred, gt


def test_brats2023_hit_miss_and_false_positive():
    pred, gt = _hit_miss_fp()
    out = brats2023_lesion_metrics(pred, gt)
    # (1 + 0 + FP 0) / 3 and (0 + 374 + FP 374) / 3
    assert out["lesion_wise_dice"] == pytest.approx(1 / 3)
    assert out["lesion_wise_hd95"] == pytest.approx(748 / 3)
    assert (out["num_lesions"], out["num_tp"], out["num_fn"], out["num_fp"]) == (2, 1, 1, 1)
    hit, miss = out["lesions"]
    assert (hit["dice"], hit["hd95"], hit["voxels"]) == (1.0, 0.0, 8)
    assert (miss["dice"], miss["hd95"], miss["matched"]) == (0.0, 374.0, [])


def test_brats2023_small_lesion_ignored_in_both_means():
    pred, gt = _hit_miss_fp()
    out = brats2023_lesion_metrics(pred, gt, min_lesion_volume=1.0)
    assert out["lesion_wise_dice"] == pytest.approx(0.5)  # (1 + FP 0) / 2
    assert out["lesion_wise_hd95"] == pytest.approx(187.0)  # (0 + FP 374) / 2
    assert math.isnan(out["lesions"][1]["hd95"]) and out["lesions"][1]["ignored"]


def test_brats2023_penalty_is_a_parameter():
    pred, gt = _hit_miss_fp()
    out = brats2023_lesion_metrics(pred, gt, hd95_penalty=100.0)
    assert out["lesion_wise_hd95"] == pytest.approx(200 / 3)


def test_brats2023_both_empty_and_empty_gt():
    empty = np.zeros((2, 4, 4), dtype=bool)
    out = brats2023_lesion_metrics(empty, empty)
    assert (out["lesion_wise_dice"], out["lesion_wise_hd95"]) == (1.0, 0.0)
    pred = empty.copy()
    pred[0, 0, 0] = True
    out = brats2023_lesion_metrics(pred, empty)
    assert (out["lesion_wise_dice"], out["lesion_wise_hd95"]) == (0.0, 374.0)


def test_brats2023_lesion_hd95_uses_the_union_of_matched_components():
    # GT 0-3; pred 0-3 and a fragment at 6 (within the 3-voxel dilation reach).
    gt, pred = _line(10, (0, 4)), _line(10, (0, 4), (6, 7))
    out = brats2023_lesion_metrics(pred, gt, dilation_iters=3)
    assert out["num_fp"] == 0
    lesion = out["lesions"][0]
    assert lesion["matched"] == [1, 2]
    assert lesion["dice"] == pytest.approx(8 / 9)
    assert lesion["hd95"] == pytest.approx(hausdorff_distance_95(pred, gt))


def test_brats2023_hd95_convention():
    gt, pred = _line(12, (6, 9)), _line(12, (2, 8))
    monai = brats2023_lesion_metrics(pred, gt)["lesion_wise_hd95"]
    pooled = brats2023_lesion_metrics(pred, gt, hd95_convention="panoptica")["lesion_wise_hd95"]
    # 1D surfaces are whole masks: pred->gt 4,3,2,1,0,0 and gt->pred 0,0,1.
    assert monai == pytest.approx(3.75)
    assert pooled == pytest.approx(3.6)
    with pytest.raises(ValueError, match="convention"):
        brats2023_lesion_metrics(pred, gt, hd95_convention="itk")


def test_brats2023_settings_table():
    assert BRATS2023_LESION_SETTINGS["GLI"].dilation_iters == 3
    assert BRATS2023_LESION_SETTINGS["MET"].min_lesion_volume == 2.0
    assert BRATS2023_LESION_SETTINGS["MEN"].dilation_iters == 1
    assert set(BRATS2023_LESION_SETTINGS) == {"GLI", "MET", "MEN", "PED", "SSA"}


def test_lesion_wise_dice_wrapper_keeps_its_keys():
    pred, gt = _hit_miss_fp()
    out = lesion_wise_dice(pred, gt)
    assert out["lesion_wise_dice"] == pytest.approx(1 / 3)
    assert set(out["lesions"][0]) == {"label", "volume", "dice", "matched", "ignored"}


# ---------------------------------------------------------------------------
# BraTS 2023: against a port of the 2023 scripts
# ---------------------------------------------------------------------------


def _brats2023_port(pred, gt, dil_factor, volume_thresh, spacing):
    """Port of BraTS-2023-Metrics ``get_LesionWiseScores``/``get_LesionWiseResults``
    (Dice and HD95), with scipy.ndimage.label for cc3d (same 26-connectivity) and our
    MONAI-convention HD95 in place of DeepMind's surfel-weighted one."""
    full = np.ones((3, 3, 3))
    struct = ndimage.generate_binary_structure(3, 2)

    def dilate(mask):
        return ndimage.binary_dilation(mask, struct, iterations=dil_factor) if dil_factor else mask

    gt_cc, _ = ndimage.label(gt, full)
    pred_cc, _ = ndimage.label(pred, full)
    gt_dil_cc, n_dil = ndimage.label(dilate(gt), full)
    combined = np.zeros_like(gt_dil_cc)
    for comp in range(1, n_dil + 1):
        combined[(gt_cc * (gt_dil_cc == comp)) > 0] = comp
    tp, kept = [], []
    for comp in range(1, combined.max() + 1):
        lesion = combined == comp
        if not lesion.any():
            continue
        hits = np.unique(pred_cc * dilate(lesion))
        hits = hits[hits != 0]
        tp.extend(hits.tolist())
        sel = np.isin(pred_cc, hits)
        dice = 2.0 * (sel & lesion).sum() / (sel.sum() + lesion.sum())
        hd = hausdorff_distance_95(sel, lesion, spacing, one_empty=374.0)
        if lesion.sum() * np.prod(spacing) > volume_thresh:
            kept.append((dice, hd))
    fp = np.unique(pred_cc[np.isin(pred_cc, [*tp, 0], invert=True)])
    n = len(kept) + len(fp)
    if n == 0:
        return 1.0, 0.0
    return sum(d for d, _ in kept) / n, (sum(h for _, h in kept) + 374 * len(fp)) / n


@pytest.mark.parametrize(
    ("seed", "challenge", "spacing"),
    [(0, "GLI", (1.0, 1.0, 1.0)), (1, "MET", (1.0, 1.0, 1.0)), (2, "MEN", (1.5, 0.9, 0.9))],
    ids=["gli", "met", "men_anisotropic"],
)
def test_brats2023_matches_port_on_random_multi_lesion_cases(seed, challenge, spacing):
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random((24, 30, 30)), 1.2) > 0.58
    pred = ndimage.gaussian_filter(rng.random((24, 30, 30)), 1.2) > 0.58
    pred |= gt & (rng.random(gt.shape) > 0.3)
    s = BRATS2023_LESION_SETTINGS[challenge]
    ours = brats2023_lesion_metrics(
        pred,
        gt,
        spacing=spacing,
        dilation_iters=s.dilation_iters,
        min_lesion_volume=s.min_lesion_volume,
    )
    assert len(ours["lesions"]) > 1 and ours["num_fp"] > 0
    ref_dice, ref_hd95 = _brats2023_port(pred, gt, s.dilation_iters, s.min_lesion_volume, spacing)
    assert ours["lesion_wise_dice"] == pytest.approx(ref_dice, abs=1e-6)
    assert ours["lesion_wise_hd95"] == pytest.approx(ref_hd95, abs=1e-3)


# ---------------------------------------------------------------------------
# BraTS 2024+ (panoptica): hand-computed
# ---------------------------------------------------------------------------


def test_panoptic_one_to_one_matching_hand_computed():
    # L1 = 0-3, L2 = 6-8, P1 = 2-7 overlaps both (Dice 0.4 and 4/9), P2 = 11 (FP).
    gt, pred = _line(12, (0, 4), (6, 9)), _line(12, (2, 8), (11, 12))
    out = panoptic_lesion_metrics(pred, gt)
    assert (out["num_ref"], out["num_pred"], out["tp"], out["fp"], out["fn"]) == (2, 2, 1, 1, 1)
    assert out["rq"] == pytest.approx(0.5)  # 1 / (1 + 0.5 + 0.5)
    assert out["sq"] == pytest.approx(4 / 9)  # P1 goes to L2, its better match
    assert out["pq"] == pytest.approx(2 / 9)
    assert out["sq_hd95"] == pytest.approx(3.6)  # pooled: see test_brats2023_hd95_convention
    assert (out["precision"], out["recall"]) == (0.5, 0.5)
    l1, l2 = out["lesions"]
    assert l1["matched"] is None and l1["dice"] == 0.0 and math.isnan(l1["hd95"])
    assert l2["matched"] == 1 and l2["voxels"] == 3
    monai = panoptic_lesion_metrics(pred, gt, hd95_convention="monai")
    assert monai["sq_hd95"] == pytest.approx(3.75)


def test_panoptic_threshold():
    gt, pred = _line(12, (0, 4), (6, 9)), _line(12, (2, 8))
    out = panoptic_lesion_metrics(pred, gt, matching_threshold=0.5)
    assert out["tp"] == 0 and out["rq"] == 0.0 and out["sq"] == 0.0
    assert out["sq_hd95"] == math.inf


def test_panoptic_edge_cases():
    empty = np.zeros((2, 4, 4), dtype=bool)
    out = panoptic_lesion_metrics(empty, empty)
    assert all(math.isnan(out[k]) for k in ("rq", "sq", "pq", "sq_hd95", "precision", "recall"))
    one = empty.copy()
    one[0, 0, 0] = True
    for pred, gt in ((one, empty), (empty, one)):
        out = panoptic_lesion_metrics(pred, gt, zero_tp_hd95=374.0)
        assert (out["rq"], out["sq"], out["pq"], out["sq_hd95"]) == (0.0, 0.0, 0.0, 374.0)


def test_panoptic_spacing_scales_volumes_and_distances():
    gt, pred = _line(12, (6, 9)), _line(12, (2, 8))
    out = panoptic_lesion_metrics(pred, gt, spacing=(1.0, 1.0, 2.0))
    assert out["sq_hd95"] == pytest.approx(7.2)
    assert out["lesions"][0]["volume"] == pytest.approx(6.0)


# ---------------------------------------------------------------------------
# BraTS 2024+: against panoptica itself (skipped unless installed)
# ---------------------------------------------------------------------------


def _multi_lesion_case(seed, shape=(36, 40, 40)):
    rng = np.random.default_rng(seed)
    gt = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    pred = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56
    pred |= ndimage.binary_erosion(gt) & (rng.random(shape) > 0.2)
    if seed % 2:
        pred = ndimage.binary_dilation(gt) & (rng.random(shape) > 0.1)
    return pred, gt


@pytest.mark.parametrize(
    ("seed", "spacing"),
    [(0, (1.0, 1.0, 1.0)), (1, (1.0, 1.0, 1.0)), (2, (1.5, 0.8, 1.2)), (3, (2.0, 1.0, 1.0))],
    ids=["noisy", "dilated", "noisy_anisotropic", "dilated_thick"],
)
def test_panoptic_matches_panoptica(seed, spacing):
    import_official("panoptica")
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        MaxBipartiteMatching,
        Metric,
        Panoptica_Evaluator,
    )

    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(matching_metric=Metric.DSC, matching_threshold=1e-6),
        instance_metrics=[Metric.DSC, Metric.HD95],
        global_metrics=[Metric.DSC, Metric.HD95],
        verbose=False,
    )
    pred, gt = _multi_lesion_case(seed)
    result = evaluator.evaluate(pred.astype(np.uint8), gt.astype(np.uint8), voxelspacing=spacing)
    ref = next(iter(result.values()))
    ours = panoptic_lesion_metrics(pred, gt, spacing=spacing)
    assert ours["num_ref"] > 10 and ours["tp"] > 5
    for theirs, mine in (("tp", "tp"), ("fp", "fp"), ("fn", "fn")):
        assert getattr(ref, theirs) == ours[mine]
    for theirs, mine in (("rq", "rq"), ("sq_dsc", "sq"), ("pq_dsc", "pq")):
        assert getattr(ref, theirs) == pytest.approx(ours[mine], abs=1e-6)
    assert ref.sq_hd95 == pytest.approx(ours["sq_hd95"], abs=1e-3)
    # panoptica's global HD95 ignores the spacing: compare at 1 mm.
    assert ref.global_bin_hd95 == pytest.approx(
        hausdorff_distance_95(pred, gt, convention="panoptica"), abs=1e-3
    )
