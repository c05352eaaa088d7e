"""brainseg-evaluate on label maps stored as MetaImage and NRRD, and on BraTS 2013-2015 folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.cli.evaluate import main
from brainseg_d2.data.volume_io import VOLUME_SUFFIXES
from brainseg_d2.evaluation.label_map_files import (
    LABEL_MAP_SUFFIXES,
    case_id,
    find_label_maps,
    reference_convention,
)

SHAPE = (6, 10, 12)  # (z, y, x)


def _labels(et: int = 4, netc: int | None = None) -> np.ndarray:
    """Edema (2) around an enhancing block holding necrosis (1) and, if given, a
    non-enhancing voxel ``netc``."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:5, 2:8, 2:9] = 2
    labels[2:4, 3:6, 3:7] = et
    labels[2, 3, 3] = 1
    if netc is not None:
        labels[3, 4, 4] = netc
    return labels


def _write(path, labels, spacing=(1.0, 1.0, 2.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-3.0, 4.0, 10.0))
    sitk.WriteImage(image, str(path))
    return path


def _scores(out) -> dict[tuple[str, str], dict]:
    with (out / "cases.csv").open(newline="") as f:
        return {(r["case_id"], r["name"]): r for r in csv.DictReader(f)}


def _run(capsys, *argv) -> tuple[int, str]:
    code = main([*map(str, argv), "--quiet", "--no-report"])
    return code, capsys.readouterr().err


def test_the_converters_volume_formats_are_label_maps():
    assert LABEL_MAP_SUFFIXES == VOLUME_SUFFIXES
    assert set(LABEL_MAP_SUFFIXES) >= {".nii.gz", ".mha", ".mhd", ".nrrd"}
    assert case_id("out/case_7.seg.nrrd") == "case_7"  # 3D Slicer's segmentation files
    assert case_id("out/case_7_pred.mha") == "case_7"
    assert case_id("BraTS2021_00000_seg.nhdr") == "BraTS2021_00000"


@pytest.mark.parametrize("ref_suffix, pred_suffix", [(".mha", ".nii.gz"), (".nrrd", ".mhd")])
def test_other_formats_score_as_their_nifti_copies(tmp_path, capsys, ref_suffix, pred_suffix):
    shifted = np.roll(_labels(), 1, axis=2)
    scores = {}
    for name, (rs, ps) in {
        "nifti": (".nii.gz", ".nii.gz"),
        "other": (ref_suffix, pred_suffix),
    }.items():
        ref, pred = tmp_path / name / "ref", tmp_path / name / "pred"
        _write(ref / f"BraTS2021_00001_seg{rs}", _labels())
        _write(ref / f"BraTS2021_00002_seg{rs}", _labels())
        _write(pred / f"BraTS2021_00001{ps}", _labels())
        _write(pred / f"BraTS2021_00002{ps}", shifted)
        code, err = _run(capsys, "--pred", pred, "--ref", ref, "--output", tmp_path / name / "o")
        assert code == 0, err
        scores[name] = _scores(tmp_path / name / "o")
    assert scores["other"].keys() == scores["nifti"].keys()
    for key, row in scores["other"].items():
        theirs = scores["nifti"][key]
        for column in set(row) - {"pred_file", "ref_file"}:
            assert row[column] == theirs[column], (key, column)
    assert float(scores["other"][("BraTS2021_00001", "WT")]["dice"]) == 1.0
    assert 0 < float(scores["other"][("BraTS2021_00002", "WT")]["dice"]) < 1
    # A MetaImage header's data file is not a label map of its own.
    if pred_suffix == ".mhd":
        assert any(p.suffix in (".raw", ".zraw") for p in (tmp_path / "other" / "pred").iterdir())


def _vsd_case(folder, labels, first_id=54512, year=2015):
    """A BraTS 2013-2015 case folder: four sequence folders and the label folder."""
    number = (lambda n: f".{n}") if year == 2015 else (lambda n: "")
    for k, seq in enumerate(("Flair", "T1", "T1c", "T2")):
        sub = folder / f"VSD.Brain.XX.O.MR_{seq}{number(first_id + k)}"
        _write(sub / f"VSD.Brain.XX.O.MR_{seq}.{first_id + k}.mha", np.full(SHAPE, 300 + k))
    sub = folder / f"VSD.Brain_3more.XX.{'O' if year == 2015 else 'XX'}.OT{number(first_id + 5)}"
    return _write(sub / f"VSD.Brain_3more.XX.O.OT.{first_id + 5}.mha", labels)


def test_brats_2013_to_2015_folders_are_references(tmp_path, capsys):
    root, pred = tmp_path / "BRATS2015_Training", tmp_path / "pred"
    truth = _labels(et=4, netc=3)  # 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing
    ot = _vsd_case(root / "HGG" / "brats_2013_pat0001_1", truth)
    _vsd_case(root / "HG" / "0002", truth, first_id=684, year=2013)
    found = find_label_maps(root)
    assert found == {"brats_2013_pat0001_1": ot, "HG_0002": next((root / "HG").rglob("*OT*.mha"))}
    assert reference_convention(ot) == "brats2015"
    # brainseg-predict writes such cases in BraTS 2017-2021 labels: the core as 1.
    ours = np.where(truth == 3, 1, truth)
    _write(pred / "brats_2013_pat0001_1_pred.nii.gz", ours)
    missed_et = np.where(truth == 4, 1, ours)
    _write(pred / "HG_0002_pred.nii.gz", missed_et)
    code, err = _run(capsys, "--pred", pred, "--ref", root, "--output", tmp_path / "o")
    assert code == 0, err
    scores = _scores(tmp_path / "o")
    for region in ("WT", "TC", "ET"):
        assert float(scores[("brats_2013_pat0001_1", region)]["dice"]) == 1.0
    assert float(scores[("HG_0002", "TC")]["dice"]) == 1.0
    assert float(scores[("HG_0002", "ET")]["dice"]) == 0.0
    assert {"necrotic", "edema", "non_enhancing"} <= {n for _, n in scores}  # enhancing is ET


def test_a_folder_without_label_maps_names_the_formats(tmp_path, capsys):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "notes.txt").write_text("no labels here")
    (tmp_path / "pred").mkdir()
    code, err = _run(capsys, "--pred", tmp_path / "pred", "--ref", tmp_path / "ref",
                     "--output", tmp_path / "o")  # fmt: skip
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "holds no label map (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr)" in line
    assert not (tmp_path / "o").exists()


def test_an_nnunet_task_of_mha_files_is_scored_on_its_labels(tmp_path, capsys):
    import json

    task = tmp_path / "Dataset001_BrainTumour"
    brats = _labels(et=4)
    msd = np.select([brats == 2, brats == 1, brats == 4], [1, 2, 3], 0)  # 1 ED, 2 NCR, 3 ET
    _write(task / "labelsTr" / "BRATS_001.mha", msd)
    for k in range(4):
        _write(task / "imagesTr" / f"BRATS_001_000{k}.mha", np.full(SHAPE, 300 + k))
    (task / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
        "numTraining": 1, "file_ending": ".mha"}))  # fmt: skip
    pred = msd.copy()
    pred[pred == 3] = 2  # the enhancing part called non-enhancing
    _write(tmp_path / "pred" / "BRATS_001.nii.gz", pred)
    code, err = _run(capsys, "--pred", tmp_path / "pred", "--ref", task, "--output", tmp_path / "o")
    assert code == 0, err
    scores = _scores(tmp_path / "o")
    assert (
        float(scores[("BRATS_001", "WT")]["dice"])
        == float(scores[("BRATS_001", "TC")]["dice"])
        == 1.0
    )
    assert float(scores[("BRATS_001", "ET")]["dice"]) == 0.0
    assert scores[("BRATS_001", "WT")]["convention"] == "msd"


def test_an_image_beside_its_label_map_is_not_a_reference(tmp_path):
    ref = tmp_path / "ref"
    _write(ref / "case01.seg.nrrd", _labels())  # 3D Slicer: the volume and its segmentation
    _write(ref / "case01.nrrd", np.full(SHAPE, 300))
    _write(ref / "pat02_label.mha", _labels())
    _write(ref / "pat02_dwi.mha", np.full(SHAPE, 300))  # a sequence suffix beside a label
    _write(ref / "pat03.nii.gz", _labels())
    _write(ref / "pat03_mask.nii.gz", _labels() > 0)  # a mask is not said to be "the" label
    with pytest.raises(ValueError, match="pat03.nii.gz and .*pat03_mask.nii.gz have the same"):
        find_label_maps(ref, role="--ref")
    (ref / "pat03_mask.nii.gz").unlink()
    assert find_label_maps(ref, role="--ref") == {
        "case01": ref / "case01.seg.nrrd",
        "pat02": ref / "pat02_label.mha",
        "pat03": ref / "pat03.nii.gz",
    }


def test_a_metaimage_header_without_its_data_names_the_data_file(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / "case01_seg.mhd", _labels())
    _write(pred / "case01.nii.gz", _labels())
    data = next(p for p in ref.iterdir() if p.suffix in (".raw", ".zraw"))
    data.unlink()
    code, err = _run(capsys, "--pred", pred, "--ref", ref, "--output", tmp_path / "o",
                     "--label-convention", "brats2021")  # fmt: skip
    assert code == 2
    (line,) = err.strip().splitlines()  # and nothing of ITK's own
    assert line == f"error: {ref / 'case01_seg.mhd'}: its data file {data} does not exist"
    assert not (tmp_path / "o").exists()


def test_a_prediction_beside_a_copy_of_its_reference_is_never_skipped(tmp_path, capsys):
    """Only references skip a file beside its own label map: in a prediction folder the
    file may be the prediction, which the copy beside it must not replace."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write(ref / "case01_seg.nii.gz", _labels())
    _write(pred / "case01_seg.nii.gz", _labels())  # a copy of the reference
    _write(pred / "case01.nii.gz", np.roll(_labels(), 1, axis=2))  # the prediction
    args = ["--pred", pred, "--ref", ref, "--label-convention", "brats2021"]
    code, err = _run(capsys, *args, "--output", tmp_path / "o")
    assert code == 2 and "have the same case id 'case01'" in err


def test_reference_case_folders_without_a_label_map_are_named(tmp_path, capsys):
    root, pred = tmp_path / "ref", tmp_path / "pred"
    truth = _labels(et=4, netc=3)
    _vsd_case(root / "HGG" / "brats_2013_pat0001_1", truth)
    ot = _vsd_case(root / "HGG" / "brats_2013_pat0002_1", truth)
    for path in ot.parent.iterdir():  # an incomplete download: the label folder is empty
        path.unlink()
    case = root / "HGG" / "BraTS2021_00003"
    _write(case / "BraTS2021_00003_flair.nii.gz", np.full(SHAPE, 300))  # no _seg beside it
    for cid in ("brats_2013_pat0001_1", "brats_2013_pat0002_1", "BraTS2021_00003"):
        _write(pred / f"{cid}_pred.nii.gz", np.where(truth == 3, 1, truth))
    code, err = _run(capsys, "--pred", pred, "--ref", root, "--output", tmp_path / "o")
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "hold images but no label map" in x]
    assert line.startswith("warning: 2 case folder(s) under --ref")
    assert str(case) in line and str(root / "HGG" / "brats_2013_pat0002_1") in line
    assert {r for r, _ in _scores(tmp_path / "o")} == {"brats_2013_pat0001_1"}
