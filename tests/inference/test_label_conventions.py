"""Predictions in the input case's own label convention, and a user's convention end to
end: brainseg-convert --label-convention FILE -> VolumePredictor / brainseg-predict ->
brainseg-evaluate."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from brainseg_d2.cli.convert import main as convert_main
from brainseg_d2.cli.evaluate import main as evaluate_main
from brainseg_d2.cli.predict import main as predict_main
from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.convert import ConvertOptions, convert_dataset
from brainseg_d2.data.ground_truth import label_map_tissue
from brainseg_d2.data.phantom import generate_case, write_case
from brainseg_d2.data.sources import find_brats_cases
from brainseg_d2.evaluation.nifti_evaluation import CASES_FILE
from brainseg_d2.inference import VolumePredictor
from brainseg_d2.labels import get_target
from brainseg_d2.structures import SliceGeometry

REPO = Path(__file__).resolve().parents[2]
INSTANT_CFG = REPO / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"
#: A user's own convention: other values, other class and region names.
CUSTOM = """\
name: mylesions
labels: {1: core, 2: swelling, 5: active}
tissue: {core: NCR, swelling: ED, active: ET}
regions: {lesion: [core, swelling, active], solid: [core, active]}
"""
#: BraTS 2018-2021 file suffix -> BraTS 2023+ suffix.
SUFFIX_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}


class LabelMapOracle:
    """A perfect dense model: per slice, the category masks of a volume's tissue codes."""

    def __init__(self, tissue: np.ndarray, target: str):
        self.tissue = tissue
        self.target = get_target(target)

    def __call__(self, inputs: list[dict]) -> list[dict]:
        return [
            {"sem_seg": torch.from_numpy(
                self.target.masks_from_tissue(self.tissue[x["slice_index"]]).astype(np.float32)
            )}
            for x in inputs
        ]  # fmt: skip


def _cfg():
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(INSTANT_CFG), allow_unsafe=False)
    cfg.merge_from_list(["BRAINSEG.POSTPROCESS.ENABLED", False,
                         "BRAINSEG.MASK_SOURCE", "semantic"])  # fmt: skip
    cfg.freeze()
    return cfg


def _recode(path: Path, mapping: dict[int, int], out: Path) -> None:
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    recoded = np.zeros_like(labels)
    for old, new in mapping.items():
        recoded[labels == old] = new
    copy = sitk.GetImageFromArray(recoded)
    copy.CopyInformation(image)
    sitk.WriteImage(copy, str(out))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """One 3 mm phantom case with labels 1, 2, 4 in three folders: BraTS 2021 names
    (``Case_001``), BraTS 2023 names and values (``BraTS-GLI-00001-000``), and BraTS
    2021 names holding a user's values (``Own_001``: 1, 2, 5); and the 2021 folder
    converted (BraTS 2021 training data)."""
    base = tmp_path_factory.mktemp("conventions")
    case = next(
        c
        for c in (generate_case(seed, spacing=3.0, p_empty=0.0) for seed in range(1, 50))
        if set(np.unique(sitk.GetArrayViewFromImage(c.seg))) == {0, 1, 2, 4}
    )
    folder_2021 = write_case(case, base / "brats2021", "Case_001")
    folder_2023 = base / "brats2023" / "BraTS-GLI-00001-000"
    folder_2023.mkdir(parents=True)
    own = write_case(case, base / "own", "Own_001")
    for suffix, new in SUFFIX_2023.items():
        source = folder_2021 / f"Case_001_{suffix}.nii.gz"
        target = folder_2023 / f"BraTS-GLI-00001-000-{new}.nii.gz"
        if suffix == "seg":
            _recode(source, {1: 1, 2: 2, 4: 3}, target)
        else:
            target.write_bytes(source.read_bytes())
    _recode(own / "Own_001_seg.nii.gz", {1: 1, 2: 2, 4: 5}, own / "Own_001_seg.nii.gz")
    dataset = base / "datasets" / "brats2021"
    convert_dataset(find_brats_cases(folder_2021.parent), dataset,
                    ConvertOptions(split=(1.0, 0.0, 0.0), empty_ratio=1.0), progress=False)
    (base / "mylesions.yaml").write_text(CUSTOM)
    return {"base": base, "2021": folder_2021, "2023": folder_2023, "own": own,
            "dataset": dataset, "convention": base / "mylesions.yaml"}  # fmt: skip


def _oracle(dataset: Path) -> LabelMapOracle:
    """A perfect model of the dataset's target (``regions`` for these label maps)."""
    volumes = json.loads((dataset / "volumes.json").read_text(encoding="utf-8"))["volumes"]
    target = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["target"]
    (record,) = volumes.values()
    tissue = label_map_tissue(
        record["source"]["mask"],
        SliceGeometry.from_json(record["geometry"]),
        record["label_convention"],
    )
    return LabelMapOracle(tissue, target)


def _labels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def test_a_brats2021_model_writes_a_2023_case_in_its_own_convention(cases):
    predictor = VolumePredictor(_cfg(), dataset_info=cases["dataset"] / "dataset.json",
                                model=_oracle(cases["dataset"]))  # fmt: skip
    assert predictor.label_convention == "brats2021"
    pred_2023 = predictor.predict(cases["2023"])
    truth_2023 = _labels(sitk.ReadImage(str(cases["2023"] / "BraTS-GLI-00001-000-seg.nii.gz")))
    assert pred_2023.label_convention == "brats2023"
    assert set(np.unique(_labels(pred_2023.label_image))) == {0, 1, 2, 3}  # ET = 3
    np.testing.assert_array_equal(_labels(pred_2023.label_image), truth_2023)
    pred_2021 = predictor.predict(cases["2021"])
    truth_2021 = _labels(sitk.ReadImage(str(cases["2021"] / "Case_001_seg.nii.gz")))
    np.testing.assert_array_equal(_labels(pred_2021.label_image), truth_2021)  # ET = 4

    asked = VolumePredictor(_cfg(), dataset_info=cases["dataset"] / "dataset.json",
                            model=_oracle(cases["dataset"]), label_convention="brats2021")
    np.testing.assert_array_equal(_labels(asked.predict(cases["2023"]).label_image), truth_2021)


def test_a_convention_the_model_cannot_write_is_an_error(cases):
    with pytest.raises(ValueError, match=r"cannot write class 'resection_cavity' \(4\)"):
        VolumePredictor(_cfg(), dataset_info=cases["dataset"] / "dataset.json",
                        model=_oracle(cases["dataset"]), label_convention="brats2024")
    with pytest.raises(ValueError, match=r"cannot write class 'cystic' \(3\)"):
        VolumePredictor(_cfg(), dataset_info=cases["dataset"] / "dataset.json",
                        model=_oracle(cases["dataset"]), label_convention="brats2024-ped")


def test_a_convention_without_a_class_the_model_predicts_is_an_error(cases, tmp_path):
    """Enhancing tumour would be written as background, silently: refused instead."""
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"name": "two-class", "labels": {"1": "lesion", "2": "edema"},
                               "tissue": {"lesion": "NCR", "edema": "ED"}}))  # fmt: skip
    with pytest.raises(ValueError, match=r"'two-class' has no value for enhancing, which the "
                       r"model predicts \(trained on 'brats2021'\); its voxels would become "
                       "background"):  # fmt: skip
        VolumePredictor(_cfg(), dataset_info=cases["dataset"] / "dataset.json",
                        model=_oracle(cases["dataset"]), label_convention=str(two))
    # Every tumour voxel in one class is no loss.
    VolumePredictor(_cfg(), dataset_info=cases["dataset"] / "dataset.json",
                    model=_oracle(cases["dataset"]), label_convention="binary")


def test_predict_cli_refuses_an_unwritable_convention_in_one_line(
    cases, weights_files, tmp_path, capsys
):
    out = tmp_path / "out"
    code = predict_main(
        ["--config-file", weights_files["config"], "--input", str(cases["2023"]),
         "--output", str(out), "--dataset-info", str(cases["dataset"] / "dataset.json"),
         "--label-convention", "brats2024",
         "MODEL.WEIGHTS", str(weights_files["good"]), *weights_files["opts"]]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "cannot write class 'resection_cavity' (4)" in err[0]
    assert not out.exists()


def test_custom_convention_end_to_end(cases, weights_files, tmp_path, capsys):
    """brainseg-convert --label-convention FILE -> predict -> brainseg-evaluate."""
    dataset = tmp_path / "datasets" / "own"
    code = convert_main(
        ["--input", str(cases["own"].parent), "--output", str(dataset),
         "--label-convention", str(cases["convention"]), "--split", "1", "0", "0",
         "--empty-ratio", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    info = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert info["label_convention"] == "mylesions"
    assert info["options"]["label_convention"] == str(cases["convention"])
    definition = info["options"]["label_conventions"]["mylesions"]
    assert definition["labels"] == {"1": "core", "2": "swelling", "5": "active"}
    assert definition["tissue"] == {"core": "NCR", "swelling": "ED", "active": "ET"}

    # The converter read the user's values: the oracle built from its ground truth
    # predicts the case exactly, written back in the user's values, asked for or not
    # (a BraTS-style folder without a BraTS case id keeps the dataset's convention).
    truth = _labels(sitk.ReadImage(str(cases["own"] / "Own_001_seg.nii.gz")))
    assert set(np.unique(truth)) == {0, 1, 2, 5}
    channels = dict(find_brats_cases(cases["own"].parent)[0].channels)
    for asked, given in [(cases["convention"], cases["own"]), (None, cases["own"]),
                         (None, channels)]:  # fmt: skip
        predictor = VolumePredictor(_cfg(), dataset_info=dataset / "dataset.json",
                                    model=_oracle(dataset), label_convention=asked)
        prediction = predictor.predict(given)
        assert prediction.label_convention == "mylesions"
        np.testing.assert_array_equal(_labels(prediction.label_image), truth)
    # A real BraTS case is written in its own convention, whatever the training data.
    predictor = VolumePredictor(_cfg(), dataset_info=dataset / "dataset.json",
                                model=LabelMapOracle(np.zeros((60, 80, 60), np.uint8), "labels"))
    assert predictor.output_convention(find_brats_cases(cases["2023"])[0]).name == "brats2023"

    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    sitk.WriteImage(prediction.label_image, str(pred_dir / "Own_001_pred.nii.gz"))
    (ref_dir / "Own_001_seg.nii.gz").write_bytes((cases["own"] / "Own_001_seg.nii.gz").read_bytes())
    code = evaluate_main(["--pred", str(pred_dir), "--ref", str(ref_dir), "--output",
                          str(tmp_path / "scores"), "--label-convention",
                          str(cases["convention"]), "--quiet"])  # fmt: skip
    assert code == 0
    with (tmp_path / "scores" / CASES_FILE).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["lesion", "solid", "core", "swelling", "active"]
    assert all(float(r["dice"]) == 1.0 and r["convention"] == "mylesions" for r in rows)

    # brainseg-predict writes the user's values too (a random model: values only).
    out = tmp_path / "cli"
    code = predict_main(
        ["--config-file", weights_files["config"], "--input", str(cases["own"]),
         "--output", str(out), "--dataset-info", str(dataset / "dataset.json"),
         "--label-convention", str(cases["convention"]),
         "MODEL.WEIGHTS", str(weights_files["good"]), *weights_files["opts"]]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    written = _labels(sitk.ReadImage(str(out / "Own_001_pred.nii.gz")))
    assert set(np.unique(written)) <= {0, 1, 2, 5}

    # Files paired by globs carry no BraTS name: written in the dataset's convention,
    # which a fresh process learns from dataset.json alone.
    globs = [f"{c}=*_{c}.nii.gz" for c in ("flair", "t1", "t1ce", "t2")]
    r = subprocess.run(
        [sys.executable, "-m", "brainseg_d2.cli.predict", "--config-file", weights_files["config"],
         "--input", str(cases["own"]), "--output", str(tmp_path / "pairs"), "--dataset-info",
         str(dataset / "dataset.json"), "--no-progress", "--images", *globs,
         "MODEL.WEIGHTS", str(weights_files["good"]), *weights_files["opts"]],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    written = _labels(sitk.ReadImage(str(tmp_path / "pairs" / "Own_001_pred.nii.gz")))
    assert set(np.unique(written)) <= {0, 1, 2, 5}
