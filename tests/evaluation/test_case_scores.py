"""Tests for brainseg_d2.evaluation.case_scores: one case's rows and their summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainseg_d2.evaluation.case_scores import (
    DISTANCE_METRICS,
    SCORE_METRICS,
    ScoringSettings,
    missing_prediction_rows,
    score_label_maps,
    score_masks,
)
from brainseg_d2.evaluation.case_summary import summarize_cases
from brainseg_d2.evaluation.distances import hausdorff_distance_95
from brainseg_d2.labels import CONVENTIONS

CONV = CONVENTIONS["brats2023"]


def _maps():
    """Reference: a 2x2x2 core (ET 3 with NCR 1) in edema 2; prediction: the same with
    the NCR voxels called edema."""
    ref = np.zeros((4, 6, 6), dtype=np.uint8)
    ref[0:4, 0:4, 0:4] = 2
    ref[1:3, 1:3, 1:3] = 3
    ref[1, 1, 1] = 1
    pred = ref.copy()
    pred[pred == 1] = 2
    return pred, ref


def test_score_label_maps_rows_per_region_and_class():
    pred, ref = _maps()
    rows = {r["name"]: r for r in score_label_maps(pred, ref, (1.0, 1.0, 1.0), CONV)}
    assert list(rows) == ["WT", "TC", "ET", "necrotic", "edema"]
    assert rows["WT"]["group"] == "region" and rows["edema"]["group"] == "class"
    assert rows["WT"]["dice"] == 1.0 and rows["WT"]["hd95"] == 0.0
    # TC: 8 reference voxels, 7 predicted, all inside -> 14 / 15
    assert rows["TC"]["dice"] == pytest.approx(14 / 15)
    assert rows["TC"]["sensitivity"] == pytest.approx(7 / 8)
    assert rows["TC"]["precision"] == 1.0
    assert rows["TC"]["volume_diff_ml"] == pytest.approx(-0.001)
    assert rows["necrotic"]["dice"] == 0.0 and rows["necrotic"]["hd95"] == 374.0
    assert rows["necrotic"]["rq"] == 0.0 and rows["necrotic"]["sq_hd95"] == 374.0
    assert rows["ET"]["pq"] == 1.0 and rows["ET"]["lesion_dice"] == 1.0
    assert rows["edema"]["ref_ml"] == pytest.approx(0.056)  # 64 - 8 voxels at 1 mm
    assert not any(r["both_empty"] or r["missing"] for r in rows.values())


def test_score_masks_both_empty_flagged():
    empty = np.zeros((2, 3, 3), dtype=bool)
    row = score_masks(empty, empty, (1.0, 1.0, 1.0))
    assert row["both_empty"] and row["dice"] == 1.0 and row["hd95"] == 0.0
    assert row["lesion_dice"] == 1.0 and row["lesion_hd95"] == 0.0
    assert math.isnan(row["pq"])  # panoptica: no lesion on either side


def test_score_masks_penalty_setting():
    empty = np.zeros((2, 3, 3), dtype=bool)
    one = empty.copy()
    one[0, 0, 0] = True
    row = score_masks(one, empty, (1.0, 1.0, 1.0), ScoringSettings(hd95_penalty=373.0))
    assert row["hd95"] == row["hd95_pooled"] == row["lesion_hd95"] == row["sq_hd95"] == 373.0


def test_score_label_maps_rejects_values_outside_the_convention():
    pred, ref = _maps()
    pred[0, 0, 0] = 4
    with pytest.raises(ValueError, match=r"prediction has label values \[4\]"):
        score_label_maps(pred, ref, (1.0, 1.0, 1.0), CONV)
    with pytest.raises(ValueError, match="shape"):
        score_label_maps(pred[:2], ref, (1.0, 1.0, 1.0), CONV)


def test_missing_prediction_scored_as_brats_does():
    _, ref = _maps()
    rows = missing_prediction_rows(ref, (1.0, 1.0, 2.0), CONV)
    assert [r["name"] for r in rows] == ["WT", "TC", "ET", "necrotic", "edema"]
    for row in rows:
        assert row["missing"]
        assert all(row[k] == 0.0 for k in SCORE_METRICS)
        assert all(row[k] == 374.0 for k in DISTANCE_METRICS)
        assert math.isnan(row["pred_voxels"])
    assert rows[0]["ref_voxels"] == 64 and rows[0]["ref_ml"] == pytest.approx(0.128)


def test_summary_counts_cases_where_the_region_exists():
    pred, ref = _maps()
    spacing = (1.0, 1.0, 1.0)
    empty = np.zeros_like(ref)
    rows = [dict(r, case_id="a") for r in score_label_maps(pred, ref, spacing, CONV)]
    rows += [dict(r, case_id="b") for r in score_label_maps(empty, empty, spacing, CONV)]
    rows += [dict(r, case_id="c") for r in missing_prediction_rows(ref, spacing, CONV)]
    summary = {s["name"]: s for s in summarize_cases(rows)}
    tc = summary["TC"]
    assert (tc["n_cases"], tc["n_exists"], tc["n_both_empty"], tc["n_missing"]) == (3, 2, 1, 1)
    # both-empty = 1 convention over all cases, and over the 2 cases with a TC
    assert tc["mean"]["dice"] == pytest.approx((14 / 15 + 1 + 0) / 3)
    assert tc["mean_exists"]["dice"] == pytest.approx((14 / 15 + 0) / 2)
    hd95_a = hausdorff_distance_95(np.isin(pred, (1, 3)), np.isin(ref, (1, 3)))
    assert tc["mean"]["hd95"] == pytest.approx((hd95_a + 0 + 374) / 3)
    # the empty case has no lesion: panoptica leaves it out of the PQ mean
    assert tc["n_defined"]["pq"] == 2
