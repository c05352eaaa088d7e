"""The evaluation folders' files: names, writing, reading back."""

from __future__ import annotations

import json
import math

from brainseg_d2.evaluation.results_files import (
    EVALUATOR_CASES_COLUMNS,
    EVALUATOR_FILES,
    NIFTI_FILES,
    find_result_files,
    json_safe,
    load_cases,
    load_lesion_volumes,
    load_summary,
    write_summary,
    write_table,
)


def test_a_table_round_trips_with_nan_as_an_empty_cell(tmp_path):
    rows = [{"volume_id": "A", "patient_id": "P", "group": "region", "name": "WT",
             "variant": "post", "dice": 0.5, "hd95": math.nan, "both_empty": False,
             "not_a_column": 1}]  # fmt: skip
    path = tmp_path / "sub" / EVALUATOR_FILES.cases
    write_table(path, rows, EVALUATOR_CASES_COLUMNS)
    header, line = path.read_text(encoding="utf-8").splitlines()[:2]
    assert header.split(",") == list(EVALUATOR_CASES_COLUMNS)
    assert "not_a_column" not in header
    (back,) = load_cases(path)
    assert back["case_id"] == "A" and back["variant"] == "post" and back["dice"] == 0.5
    assert math.isnan(back["hd95"]) and back["both_empty"] is False


def test_summary_is_strict_json(tmp_path):
    path = tmp_path / "s.json"
    write_summary(path, {"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": None, "b": [None, 1.0],
                                                             "c": {"d": None}}  # fmt: skip
    assert load_summary(path)["b"] == [None, 1.0]
    assert json_safe((1.0, math.nan)) == [1.0, None]


def test_find_result_files_tells_the_entry_points_apart(tmp_path):
    (tmp_path / NIFTI_FILES.cases).write_text("case_id,group,name,dice\n", encoding="utf-8")
    found = find_result_files(tmp_path)
    assert found.kind == "brainseg-evaluate" and found.summary == tmp_path / NIFTI_FILES.summary
    (tmp_path / EVALUATOR_FILES.cases).write_text("x\n", encoding="utf-8")
    assert find_result_files(tmp_path).kind == "evaluator"  # the evaluator's names win
    pair = find_result_files((tmp_path / NIFTI_FILES.cases, tmp_path / "s.json"))
    assert pair.kind == "brainseg-evaluate" and pair.lesions == tmp_path / NIFTI_FILES.lesions


def test_lesion_volumes_keep_brats_2023_lesions_only(tmp_path):
    path = tmp_path / NIFTI_FILES.lesions
    path.write_text("case_id,group,name,definition,volume_ml\n"
                    "A,region,WT,2023,1.5\nA,region,WT,panoptic,9\nA,region,WT,2023,0.5\n",
                    encoding="utf-8")  # fmt: skip
    assert load_lesion_volumes(path) == {("A", "region", "WT", ""): [1.5, 0.5]}
    assert load_lesion_volumes(tmp_path / "missing.csv") == {}


def test_a_cases_table_with_no_rows_or_not_text_is_one_named_error(tmp_path):
    import pytest

    empty = tmp_path / NIFTI_FILES.cases
    empty.write_text("case_id,group,name,dice\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{empty} has a header and no case rows"):
        load_cases(empty)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x8e\xff\x00\x01case")
    with pytest.raises(ValueError, match=f"cannot read {binary}"):
        load_cases(binary)
