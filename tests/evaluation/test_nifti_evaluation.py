"""Tests for brainseg-evaluate (brainseg_d2.evaluation.nifti_evaluation) on tiny NIfTIs."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from official import import_official

from brainseg_d2.cli.evaluate import file_list, main
from brainseg_d2.evaluation.label_map_files import case_id, match_cases
from brainseg_d2.evaluation.nifti_evaluation import (
    CASES_FILE,
    LESIONS_FILE,
    SUMMARY_FILE,
    evaluate_folders,
)

REPO = Path(__file__).resolve().parents[2]
SHAPE = (6, 10, 12)  # (z, y, x)
SPACING = (1.0, 1.0, 1.0)  # ITK order (x, y, z)


def _write(path: Path, labels: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def _tumour(et_value: int = 3) -> np.ndarray:
    """Edema block (2) holding an ET core and one necrotic voxel."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:5, 2:8, 2:9] = 2
    labels[2:4, 3:6, 3:7] = et_value
    labels[2, 3, 3] = 1
    return labels


def _rows(out: Path) -> list[dict]:
    with (out / CASES_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


def _cell(rows, case, name, key):
    (row,) = [r for r in rows if r["case_id"] == case and r["name"] == name]
    return row[key]


@pytest.fixture
def brats_folders(tmp_path):
    """Two BraTS 2023 GLI references in case folders (with an image file), one perfect
    prediction, one shifted prediction, and a reference whose prediction is missing."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    truth = _tumour()
    for cid in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000"):
        _write(ref / cid / f"{cid}-seg.nii.gz", truth)
        _write(ref / cid / f"{cid}-t2f.nii.gz", np.full(SHAPE, 7))  # an image: skipped
    _write(pred / "BraTS-GLI-00001-000.nii.gz", truth)
    _write(pred / "BraTS-GLI-00002-000.nii.gz", np.roll(truth, 1, axis=2))
    _write(pred / "BraTS-GLI-00099-000.nii.gz", truth)  # no reference
    return pred, ref, tmp_path / "out"


def test_case_ids_from_names():
    assert case_id("x/BraTS-GLI-00001-000-seg.nii.gz") == "BraTS-GLI-00001-000"
    assert case_id("pred_BraTS-MET-00002-001.nii") == "BraTS-MET-00002-001"
    assert case_id("Brats18_2013_2_1_seg.nii.gz") == "Brats18_2013_2_1"
    assert case_id("BraTS2021_00000.nii.gz") == "BraTS2021_00000"
    assert case_id("case_7-pred.nii.gz") == "case_7"
    assert case_id("sub-01_mask.nii.gz", re.compile(r"sub-(?P<id>\d+)")) == "01"
    assert case_id("other.nii.gz", re.compile(r"sub-(\d+)")) is None


def test_end_to_end_brats_case_folders(brats_folders):
    pred, ref, out = brats_folders
    summary = evaluate_folders(pred, ref, out, progress=False)
    rows = _rows(out)
    assert {r["case_id"] for r in rows} == {f"BraTS-GLI-0000{i}-000" for i in (1, 2, 3)}
    # RC (4) exists in no reference or prediction: left out; ET is scored once.
    assert {r["name"] for r in rows} == {"WT", "TC", "ET", "necrotic", "edema"}
    assert summary["absent_names"] == ["region:RC"]
    assert float(_cell(rows, "BraTS-GLI-00001-000", "WT", "dice")) == 1.0
    assert float(_cell(rows, "BraTS-GLI-00001-000", "WT", "hd95")) == 0.0
    assert 0 < float(_cell(rows, "BraTS-GLI-00002-000", "WT", "dice")) < 1
    # the missing prediction: Dice 0, HD95 374, listed
    assert _cell(rows, "BraTS-GLI-00003-000", "WT", "missing") == "True"
    assert float(_cell(rows, "BraTS-GLI-00003-000", "ET", "dice")) == 0.0
    assert float(_cell(rows, "BraTS-GLI-00003-000", "ET", "hd95")) == 374.0
    assert float(_cell(rows, "BraTS-GLI-00003-000", "ET", "lesion_hd95")) == 374.0
    assert [Path(p).name for p in summary["missing_predictions"]] == [
        "BraTS-GLI-00003-000-seg.nii.gz"
    ]
    assert [Path(p).name for p in summary["unmatched_predictions"]] == [
        "BraTS-GLI-00099-000.nii.gz"
    ]
    saved = json.loads((out / SUMMARY_FILE).read_text())
    wt = next(s for s in saved["names"] if s["name"] == "WT")
    assert (wt["n_cases"], wt["n_exists"], wt["n_missing"]) == (3, 3, 1)
    dice_2 = float(_cell(rows, "BraTS-GLI-00002-000", "WT", "dice"))
    assert wt["mean"]["dice"] == pytest.approx((1 + dice_2 + 0) / 3)
    assert saved["conventions"] == ["brats2024"]
    assert (out / LESIONS_FILE).read_text().startswith("case_id,group,name,definition")


def test_case_folders_linked_into_the_reference_are_found(brats_folders, tmp_path):
    pred, ref, out = brats_folders
    linked = tmp_path / "linked"
    linked.mkdir()
    for case in ref.iterdir():
        (linked / case.name).symlink_to(case, target_is_directory=True)
    evaluate_folders(pred, linked, out / "linked", progress=False)
    evaluate_folders(pred, ref, out / "plain", progress=False)
    linked_rows, plain_rows = _rows(out / "linked"), _rows(out / "plain")
    assert len(linked_rows) == len(plain_rows) == 15  # 3 cases x (WT, TC, ET, necrotic, edema)
    for a, b in zip(linked_rows, plain_rows):
        assert a.pop("ref_file").startswith(str(linked))  # the path as the user gave it
        b.pop("ref_file")
        assert a == b


def test_brats_layout_folders_with_ids_of_their_own(tmp_path):
    """The phantom's case folders (``Phantom_00000/Phantom_00000_flair.nii.gz``...): the
    images beside ``<id>_seg`` are skipped; a lone file with a sequence-like suffix is a
    label map."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    truth = _tumour(et_value=4)
    for cid in ("Phantom_00000", "Phantom_00001"):
        _write(ref / cid / f"{cid}_seg.nii.gz", truth)
        for seq in ("flair", "t1", "t1ce", "t2"):
            _write(ref / cid / f"{cid}_{seq}.nii.gz", np.full(SHAPE, 7))
        _write(pred / f"{cid}_pred.nii.gz", truth)
    _write(ref / "scan_t1.nii.gz", truth)  # no label map beside it: this is one
    _write(pred / "scan_t1.nii.gz", truth)
    summary = evaluate_folders(pred, ref, tmp_path / "out", label_convention="brats2021",
                               progress=False)  # fmt: skip
    rows = _rows(tmp_path / "out")
    assert sorted({r["case_id"] for r in rows}) == ["Phantom_00000", "Phantom_00001", "scan_t1"]
    assert all(float(r["dice"]) == 1.0 for r in rows)
    assert Path(_cell(rows, "Phantom_00000", "WT", "ref_file")).name == "Phantom_00000_seg.nii.gz"
    assert summary["num_cases"] == 3 and not summary["missing_predictions"]


def test_workers_give_the_same_rows(brats_folders):
    pred, ref, out = brats_folders
    evaluate_folders(pred, ref, out / "one", progress=False)
    evaluate_folders(pred, ref, out / "two", progress=False, workers=2)
    assert _rows(out / "one") == _rows(out / "two")


def test_empty_reference_and_prediction(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / "BraTS-MET-00001-000-seg.nii.gz", _tumour())
    _write(ref / "BraTS-MET-00002-000-seg.nii.gz", np.zeros(SHAPE))
    _write(pred / "BraTS-MET-00001-000.nii.gz", _tumour())
    _write(pred / "BraTS-MET-00002-000.nii.gz", np.zeros(SHAPE))
    summary = evaluate_folders(pred, ref, tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out")
    assert _cell(rows, "BraTS-MET-00002-000", "ET", "both_empty") == "True"
    assert float(_cell(rows, "BraTS-MET-00002-000", "ET", "dice")) == 1.0
    assert _cell(rows, "BraTS-MET-00002-000", "ET", "pq") == ""  # NaN, as panoptica
    et = next(s for s in summary["names"] if s["name"] == "ET")
    assert (et["n_exists"], et["n_both_empty"]) == (1, 1)
    assert et["mean"]["dice"] == 1.0 and et["mean_exists"]["dice"] == 1.0
    assert summary["conventions"] == ["brats2023"]


def test_custom_convention_end_to_end(tmp_path):
    conv = tmp_path / "lesions.yaml"
    conv.write_text("labels: {1: lesion, 2: halo}\nregions: {all: [lesion, halo]}\n")
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[1:3, 1:3, 1:3] = 1
    truth[1:3, 6:8, 6:8] = 2
    guess = truth.copy()
    guess[1:3, 6:8, 6:8] = 0  # the halo is missed
    _write(ref / "case_01_seg.nii.gz", truth)
    _write(pred / "case_01.nii.gz", guess)
    code = main(
        [
            "--pred",
            str(pred),
            "--ref",
            str(ref),
            "--output",
            str(tmp_path / "out"),
            "--label-convention",
            str(conv),
            "--quiet",
        ]  # fmt: skip
    )
    assert code == 0
    rows = _rows(tmp_path / "out")
    assert [r["name"] for r in rows] == ["all", "lesion", "halo"]
    assert float(_cell(rows, "case_01", "all", "dice")) == pytest.approx(2 / 3)  # 2 * 8 / 24
    assert float(_cell(rows, "case_01", "lesion", "dice")) == 1.0
    assert float(_cell(rows, "case_01", "halo", "dice")) == 0.0
    assert _cell(rows, "case_01", "halo", "convention") == "lesions"
    # panoptic: 2 reference lesions, 1 matched exactly
    assert float(_cell(rows, "case_01", "all", "rq")) == pytest.approx(2 / 3)


def test_script_runs(brats_folders):
    pred, ref, out = brats_folders
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate.py"), "--pred", str(pred),
         "--ref", str(ref), "--output", str(out), "--quiet", "--challenge", "MET"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 reference(s) without prediction" in result.stderr
    assert "prediction(s) without reference: BraTS-GLI-00099-000.nii.gz" in result.stderr
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["settings"]["lesion"] == {"dilation_iters": 1, "min_lesion_volume": 2.0}


def test_cli_warns_when_pred_is_ref_and_says_when_no_case_has_a_region(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / "BraTS-MET-00001-000-seg.nii.gz", np.zeros(SHAPE))  # no tumour at all
    _write(pred / "BraTS-MET-00001-000.nii.gz", _tumour())  # a false call of every region
    args = ["--quiet", "--no-report", "--ref", str(ref)]
    assert main([*args, "--pred", str(pred), "--output", str(tmp_path / "o1")]) == 0
    captured = capsys.readouterr()
    assert "nan" not in captured.out and "no case has it" in captured.out
    assert "one folder" not in captured.err
    assert main([*args, "--pred", str(ref), "--output", str(tmp_path / "o2")]) == 0
    assert "--pred and --ref are one folder" in capsys.readouterr().err


def test_long_file_lists_are_cut_in_the_warnings():
    assert file_list(["a/x.nii.gz", "b/y.nii.gz"]) == "x.nii.gz, y.nii.gz"
    many = [f"p/case_{i}.nii.gz" for i in range(8)]
    assert file_list(many) == (
        "case_0.nii.gz, case_1.nii.gz, case_2.nii.gz, case_3.nii.gz, case_4.nii.gz "
        "and 3 more (summary.json lists them)"
    )


def _error(capsys, argv) -> str:
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_cli_errors_are_one_line(tmp_path, capsys, brats_folders):
    pred, ref, out = brats_folders
    err = _error(
        capsys, ["--pred", str(tmp_path / "nope"), "--ref", str(ref), "--output", str(out)]
    )
    assert "--pred" in err and "is not a folder" in err
    (tmp_path / "empty").mkdir()
    err = _error(
        capsys, ["--pred", str(pred), "--ref", str(tmp_path / "empty"), "--output", str(out)]
    )
    assert "holds no label map (.nii.gz, .nii, .mha" in err
    err = _error(
        capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(out), "--pattern", "zzz"]
    )
    assert "holds no label map matching 'zzz'" in err
    err = _error(
        capsys,
        ["--pred", str(pred), "--ref", str(ref), "--output", str(out), "--label-convention", "x"],
    )
    assert "unknown label convention 'x'" in err
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(out),
                          "--workers", "0"])  # fmt: skip
    assert "--workers must be >= 1" in err
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(out),
                          "--hd95-penalty", "-5"])  # fmt: skip
    assert "need a finite value >= 0 mm, got -5.0" in err and not out.exists()
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(out),
                          "--hd95-penalty", "inf"])  # fmt: skip
    assert "need a finite value >= 0 mm, got inf" in err and not out.exists()


def test_output_never_replaces_what_it_did_not_write(tmp_path, capsys, brats_folders):
    pred, ref, out = brats_folders
    args = ["--pred", str(pred), "--ref", str(ref), "--no-progress", "--output"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "cases.csv").write_text("my own table")
    err = _error(capsys, [*args, str(mine)])
    assert "holds cases.csv, which brainseg-evaluate did not write" in err
    assert (mine / "cases.csv").read_text() == "my own table"
    for inside in (ref, ref / "scores", pred):
        assert "the input" in _error(capsys, [*args, str(inside)])
    assert not (ref / "scores").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "exists and is not a folder" in _error(capsys, [*args, str(afile)])
    # Its own files are replaced on a second run; a file of the user's beside them stays.
    assert main([*args, str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main([*args, str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    capsys.readouterr()


def test_relative_inputs_are_recorded_absolute(tmp_path, monkeypatch, brats_folders):
    pred, ref, _ = brats_folders
    monkeypatch.chdir(tmp_path)
    evaluate_folders(pred.name, ref.name, "o", progress=False, report=False)
    rows = _rows(tmp_path / "o")
    assert all(Path(r["ref_file"]).is_absolute() and Path(r["ref_file"]).is_file() for r in rows)


def test_geometry_mismatch_names_both_files(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    r = _write(ref / "BraTS-GLI-00001-000-seg.nii.gz", _tumour())
    p = _write(pred / "BraTS-GLI-00001-000.nii.gz", _tumour(), spacing=(1.0, 1.0, 1.2))
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(tmp_path / "o")])
    assert str(p) in err and str(r) in err and "spacing" in err
    _write(p, _tumour(), origin=(0.0, 5.0, 0.0))
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(tmp_path / "o")])
    assert str(p) in err and str(r) in err and "origin" in err
    _write(p, _tumour()[:, :, :-1])
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(tmp_path / "o")])
    assert str(p) in err and str(r) in err and "size" in err


def test_labels_outside_the_convention_name_the_file(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / "BraTS-MET-00001-000-seg.nii.gz", _tumour())
    p = _write(pred / "BraTS-MET-00001-000.nii.gz", _tumour(et_value=4))
    err = _error(capsys, ["--pred", str(pred), "--ref", str(ref), "--output", str(tmp_path / "o")])
    assert str(p) in err and "label values [4]" in err and "brats2023" in err


def test_2021_style_prediction_of_a_2023_glioma_is_warned(tmp_path, capsys):
    # One case of two has 2021-style labels: a warning names it, and it is scored as
    # the official evaluator would (ET missed, label 4 a false resection cavity).
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for cid in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        _write(ref / f"{cid}-seg.nii.gz", _tumour())
    _write(pred / "BraTS-GLI-00001-000.nii.gz", _tumour(et_value=4))
    _write(pred / "BraTS-GLI-00002-000.nii.gz", _tumour())
    assert main(["--pred", str(pred), "--ref", str(ref), "--output", str(tmp_path / "o"),
                 "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "BraTS-GLI-00001-000.nii.gz: label 4 is the resection cavity" in err
    assert "BraTS 2021 convention (ET = 4)" in err
    rows = _rows(tmp_path / "o")
    assert float(_cell(rows, "BraTS-GLI-00001-000", "ET", "dice")) == 0.0
    assert float(_cell(rows, "BraTS-GLI-00001-000", "RC", "dice")) == 0.0
    assert float(_cell(rows, "BraTS-GLI-00002-000", "ET", "dice")) == 1.0


def test_no_match_and_unknown_convention(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / "a_seg.nii.gz", _tumour())
    _write(pred / "b.nii.gz", _tumour())
    with pytest.raises(ValueError, match="no prediction in .* matches a reference"):
        match_cases(pred, ref)
    _write(pred / "a.nii.gz", _tumour())
    with pytest.raises(ValueError, match="cannot tell the label convention of .*a_seg.nii.gz"):
        evaluate_folders(pred, ref, tmp_path / "o", progress=False)
    _write(pred / "a_pred.nii.gz", _tumour())
    with pytest.raises(ValueError, match="have the same case id 'a'"):
        match_cases(pred, ref)


# ---------------------------------------------------------------------------
# against the official BraTS 2024+ package (skipped unless installed)
# ---------------------------------------------------------------------------


def test_matches_brats_evaluation(tmp_path):
    brats_evaluation = import_official("brats_evaluation")
    from panoptica import Panoptica_Evaluator
    from scipy import ndimage

    rng = np.random.default_rng(0)
    shape = (40, 48, 44)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for i in range(3):
        wt = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.55
        core = wt & (ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.5)
        truth = np.where(core, 3, np.where(wt, 2, 0)).astype(np.uint8)
        truth[core & (rng.random(shape) > 0.8)] = 1
        guess = np.roll(truth, i, axis=1)
        guess[(ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.6) & (guess == 0)] = 2
        _write(ref_dir / f"BraTS-GLI-0000{i}-000-seg.nii.gz", truth)
        _write(pred_dir / f"BraTS-GLI-0000{i}-000.nii.gz", guess)
    evaluate_folders(pred_dir, ref_dir, tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out")
    evaluator = Panoptica_Evaluator.load_from_config(str(brats_evaluation.config_path("gli")))
    groups = {"wt": "WT", "tc": "TC", "et": "ET", "netc": "necrotic", "snfh": "edema"}
    for i in range(3):
        cid = f"BraTS-GLI-0000{i}-000"
        result = brats_evaluation.evaluate_single_exam(
            str(pred_dir / f"{cid}.nii.gz"), str(ref_dir / f"{cid}-seg.nii.gz"), cid, evaluator
        )
        for group, name in groups.items():
            theirs = result[group]
            for key, ours in (("global_bin_dsc", "dice"), ("rq", "rq"), ("sq_dsc", "sq"),
                              ("pq_dsc", "pq")):  # fmt: skip
                assert float(_cell(rows, cid, name, ours)) == pytest.approx(theirs[key], abs=1e-6)
            for key, ours in (("global_bin_hd95", "hd95_pooled"), ("sq_hd95", "sq_hd95")):
                assert float(_cell(rows, cid, name, ours)) == pytest.approx(theirs[key], abs=1e-3)


def test_missing_prediction_folder_is_named_before_the_references_are_walked(tmp_path):
    # A reference tree with two files of one case id would be an error of its own;
    # the missing --pred folder is reported first, without walking it.
    for sub in ("a", "b"):
        (tmp_path / "ref" / sub).mkdir(parents=True)
        (tmp_path / "ref" / sub / "BraTS-GLI-00000-000-seg.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^--pred .*missing is not a folder$"):
        match_cases(tmp_path / "missing", tmp_path / "ref")


def test_no_progress_is_spelled_as_in_the_other_commands():
    from brainseg_d2.cli.evaluate import build_parser

    base = ["--pred", "p", "--ref", "r", "--output", "o"]
    assert build_parser().parse_args([*base, "--no-progress"]).quiet
    assert build_parser().parse_args([*base, "--quiet"]).quiet
    assert not build_parser().parse_args(base).quiet
