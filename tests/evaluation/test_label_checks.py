"""brainseg-evaluate on label maps whose values contradict their names' convention,
predictions in a convention of their own, case ids from folders, and its output
folder's files (a stale report, a linked table)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.cli.evaluate import main
from brainseg_d2.evaluation.label_map_files import case_id, match_cases
from brainseg_d2.labels import get_convention, relabel

SHAPE = (6, 10, 12)  # (z, y, x)
GLI = ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000")


def _write(path: Path, labels: np.ndarray, direction=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8))
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def _tumour(et_value: int) -> np.ndarray:
    """Edema (2) around an enhancing block (``et_value``) with one necrotic voxel."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:5, 2:8, 2:9] = 2
    labels[2:4, 3:6, 3:7] = et_value
    labels[2, 3, 3] = 1
    return labels


def _dice(out: Path) -> dict[tuple[str, str], float]:
    with (out / "cases.csv").open(newline="") as f:
        return {(r["case_id"], r["name"]): float(r["dice"]) for r in csv.DictReader(f)}


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main([*argv, "--quiet"])
    return code, capsys.readouterr().err.strip()


def _folders(tmp_path: Path, ref_et: int, pred_et: int) -> tuple[str, ...]:
    """Both GLI cases with references of ET value ``ref_et``, perfect predictions
    written with ET value ``pred_et``."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for cid in GLI:
        _write(ref / cid / f"{cid}-seg.nii.gz", _tumour(ref_et))
        _write(pred / f"{cid}.nii.gz", _tumour(pred_et))
    return "--pred", str(pred), "--ref", str(ref)


def test_2021_labels_under_2023_names_are_refused_until_the_convention_is_named(
    tmp_path, capsys
):
    # Files renamed to BraTS 2023 ids but holding 2021 labels (ET = 4) would score
    # ET as the resection cavity with exit 0; every reference with 4 and none with 3
    # is an error that names the option.
    args = _folders(tmp_path, ref_et=4, pred_et=4)
    code, err = _run(capsys, *args, "--output", str(tmp_path / "o"))
    assert code == 2 and "\n" not in err
    assert "hold label 4 and never 3 (e.g. BraTS-GLI-00001-000)" in err
    assert "--label-convention brats2021" in err and not (tmp_path / "o").exists()
    code, _ = _run(capsys, *args, "--output", str(tmp_path / "o"), "--label-convention",
                   "brats2021")  # fmt: skip
    assert code == 0
    dice = _dice(tmp_path / "o")
    assert dice[(GLI[0], "ET")] == dice[(GLI[1], "WT")] == 1.0
    assert not any(name == "RC" for _, name in dice)


def test_2021_predictions_against_2023_references_take_their_own_convention(
    tmp_path, capsys
):
    args = _folders(tmp_path, ref_et=3, pred_et=4)
    code, err = _run(capsys, *args, "--output", str(tmp_path / "o"))
    assert code == 2 and "--pred-label-convention brats2021" in err
    assert not (tmp_path / "o").exists()
    code, err = _run(capsys, *args, "--output", str(tmp_path / "o"), "--pred-label-convention",
                     "brats2099")  # fmt: skip
    assert code == 2 and err.startswith("error: --pred-label-convention: unknown label convention")
    code, _ = _run(capsys, *args, "--output", str(tmp_path / "o"), "--pred-label-convention",
                   "brats2021")  # fmt: skip
    assert code == 0
    dice = _dice(tmp_path / "o")
    assert {dice[(cid, r)] for cid in GLI for r in ("WT", "TC", "ET")} == {1.0}


def test_relabel_matches_classes_by_name():
    labels = np.array([0, 1, 2, 4, 4])
    out = relabel(labels, get_convention("brats2021"), get_convention("brats2023"))
    assert out.tolist() == [0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match=r"classes \['resection_cavity'\] of convention "
                                         r"'brats2024' have no value in 'brats2021'"):  # fmt: skip
        relabel(np.array([0, 4]), get_convention("brats2024"), get_convention("brats2021"))
    with pytest.raises(ValueError, match=r"label values \[7\] are not in convention"):
        relabel(np.array([0, 7]), get_convention("brats2021"), get_convention("brats2023"))


def test_case_ids_from_folders_and_patterns_over_the_path(tmp_path):
    assert case_id("data/BraTS2021_00001/seg.nii.gz") == "BraTS2021_00001"
    assert case_id("out/case_7/prediction.nii.gz") == "case_7"
    root = tmp_path / "ref"
    for sub in ("sub-01", "sub-02"):
        _write(root / sub / "anat" / "mask.nii.gz", _tumour(4))
        _write(tmp_path / "pred" / f"{sub}_pred.nii.gz", _tumour(4))
    pattern = re.compile(r"sub-(\d+)")  # in the folder's name, not the file's
    assert case_id(root / "sub-01/anat/mask.nii.gz", pattern, root) == "01"
    pairs, unmatched = match_cases(tmp_path / "pred", root, pattern)
    assert [p.case_id for p in pairs] == ["01", "02"] and not unmatched
    assert all(p.pred is not None for p in pairs)


def test_a_rerun_without_report_removes_the_stale_one_and_keeps_a_users(tmp_path, capsys):
    args = _folders(tmp_path, ref_et=3, pred_et=3)
    out = tmp_path / "o"
    assert _run(capsys, *args, "--output", str(out))[0] == 0
    assert (out / "report.html").is_file()
    assert _run(capsys, *args, "--output", str(out), "--no-report")[0] == 0
    assert not (out / "report.html").exists()  # it showed the earlier run's scores
    (out / "report.html").write_text("<p>my notes</p>")
    assert _run(capsys, *args, "--output", str(out), "--no-report")[0] == 0
    assert (out / "report.html").read_text() == "<p>my notes</p>"


def test_a_table_replaced_by_a_link_is_not_written_through(tmp_path, capsys):
    args = _folders(tmp_path, ref_et=3, pred_et=3)
    out = tmp_path / "o"
    assert _run(capsys, *args, "--output", str(out), "--no-report")[0] == 0
    mine = tmp_path / "my_table.csv"
    mine.write_text("mine")
    (out / "cases.csv").unlink()
    (out / "cases.csv").symlink_to(mine)
    code, err = _run(capsys, *args, "--output", str(out), "--no-report")
    assert code == 2 and "holds cases.csv, which is now a link" in err
    assert mine.read_text() == "mine"


def test_a_prediction_stored_flipped_is_named_by_its_direction(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / f"{GLI[0]}-seg.nii.gz", _tumour(3))
    flipped = (-1, 0, 0, 0, 1, 0, 0, 0, 1)
    _write(pred / f"{GLI[0]}.nii.gz", _tumour(3)[:, :, ::-1], direction=flipped)
    code, err = _run(capsys, "--pred", str(pred), "--ref", str(ref), "--output",
                     str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "differ in direction" in err


def test_binary_masks_of_0_and_255_count_as_0_and_1(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    mask = (_tumour(3) > 0).astype(np.uint8)
    _write(ref / "case_1_seg.nii.gz", mask * 255)  # a mask saved by an image tool
    _write(pred / "case_1.nii.gz", mask)
    code, err = _run(capsys, "--pred", str(pred), "--ref", str(ref), "--output",
                     str(tmp_path / "o"), "--label-convention", "binary")  # fmt: skip
    assert code == 0, err
    assert set(_dice(tmp_path / "o").values()) == {1.0}


def test_a_convention_file_that_does_not_parse_is_one_line(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [1, 2\nregions: {a: b}\n")  # PyYAML's message spans 8 lines
    assert main(["--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"),
                 "--output", str(tmp_path / "o"), "--label-convention", str(bad)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {bad}: cannot parse (ParserError: ")
    assert not (tmp_path / "o").exists()


def test_a_decathlon_task_is_scored_on_its_labels_in_its_convention(tmp_path, capsys):
    import json

    # A task folder: 4D images beside labelsTr (1 edema, 2 non-enhancing, 3 enhancing).
    task = tmp_path / "Task01_BrainTumour"
    reference = np.select([_tumour(4) == 2, _tumour(4) == 1, _tumour(4) == 4], [1, 2, 3], 0)
    _write(task / "labelsTr" / "BRATS_001.nii.gz", reference)
    image = sitk.JoinSeries([sitk.GetImageFromArray(reference.astype(np.float32))] * 4)
    (task / "imagesTr").mkdir()
    sitk.WriteImage(image, str(task / "imagesTr" / "BRATS_001.nii.gz"))
    (task / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                   "3": "enhancing tumour"},
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz",
                      "label": "./labelsTr/BRATS_001.nii.gz"}], "test": []}))  # fmt: skip
    (task / "labelsTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS
    pred = reference.copy()
    pred[pred == 3] = 2  # the enhancing part called non-enhancing
    _write(tmp_path / "pred" / "BRATS_001_pred.nii.gz", pred)
    for ref in (task, task / "labelsTr"):
        out = tmp_path / f"out_{ref.name}"
        code, err = _run(capsys, "--pred", str(tmp_path / "pred"), "--ref", str(ref),
                         "--output", str(out))  # fmt: skip
        assert code == 0, err
        dice = _dice(out)
        assert dice[("BRATS_001", "WT")] == dice[("BRATS_001", "TC")] == 1.0
        assert dice[("BRATS_001", "ET")] == 0.0 and dice[("BRATS_001", "edema")] == 1.0
    # Labels the Decathlon's are not: the dataset.json is named, and a convention settles it.
    spec = json.loads((task / "dataset.json").read_text())
    spec["labels"] = {"0": "background", "1": "a", "2": "b", "3": "c"}
    (task / "dataset.json").write_text(json.dumps(spec))
    args = ("--pred", str(tmp_path / "pred"), "--ref", str(task), "--output", str(tmp_path / "o"))
    code, err = _run(capsys, *args)
    assert code == 2 and f"{task / 'dataset.json'}: labels" in err
    assert _run(capsys, *args, "--label-convention", "msd")[0] == 0
    # Without a task around them, the same files need the convention named.
    plain = tmp_path / "plain"
    plain.mkdir()
    (task / "labelsTr" / "BRATS_001.nii.gz").rename(plain / "BRATS_001.nii.gz")
    code, err = _run(capsys, "--pred", str(tmp_path / "pred"), "--ref", str(plain),
                     "--output", str(tmp_path / "out3"))  # fmt: skip
    assert code == 2 and "pass --label-convention" in err
