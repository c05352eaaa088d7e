"""One implementation, two entry points: the Detectron2 evaluator's numbers for some
masks equal brainseg-evaluate's for the same masks written as NIfTI."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from detectron2.data import DatasetCatalog

from brainseg_d2.data.ground_truth import GroundTruthReader, label_map_tissue
from brainseg_d2.evaluation.case_scores import SCORE_COLUMNS
from brainseg_d2.evaluation.evaluator import BrainSegEvaluator
from brainseg_d2.evaluation.nifti_evaluation import evaluate_folders
from brainseg_d2.evaluation.results_files import EVALUATOR_FILES, NIFTI_FILES
from brainseg_d2.labels import TISSUE_ED, get_convention, get_target, tissue_to_raw
from brainseg_d2.postprocessing import PostprocessParams
from brainseg_d2.structures import SliceGeometry

TARGET = get_target("labels")


def _guess(tissue: np.ndarray, kept: list[int]) -> np.ndarray:
    """A flawed prediction: shifted by a voxel, one enhancing slice lost, a false
    positive far away; nothing on slices the dataset does not hold."""
    guess = np.roll(tissue, 1, axis=2)
    et_slices = np.flatnonzero((guess == 3).reshape(guess.shape[0], -1).any(axis=1))
    guess[et_slices[len(et_slices) // 2]][guess[et_slices[len(et_slices) // 2]] == 3] = 1
    guess[kept[0], :3, :3] = TISSUE_ED
    out = np.zeros_like(guess)
    out[kept] = guess[kept]
    return out


def _read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(cell: str) -> float:
    if cell in ("True", "False"):
        return float(cell == "True")
    return math.nan if cell == "" else float(cell)


@pytest.mark.parametrize("name", ["oblique_val", "oblique_test"])
def test_evaluator_equals_brainseg_evaluate_on_the_same_masks(oblique_dataset, tmp_path, name):
    dicts = DatasetCatalog.get(name)
    (vid,) = {d["volume_id"] for d in dicts}
    record = GroundTruthReader.for_dataset(name, TARGET).volumes[vid]
    geometry = SliceGeometry.from_json(record["geometry"])
    tissue = label_map_tissue(record["source"]["mask"], geometry, "brats2021")
    kept = sorted(d["slice_index"] for d in dicts)
    guess = _guess(tissue, kept)

    ev = BrainSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"),
                           postprocess=PostprocessParams(score_threshold=0.5))  # fmt: skip
    for d in dicts:
        probs = TARGET.masks_from_tissue(guess[d["slice_index"]]).astype(np.float32)
        inputs = {k: v for k, v in d.items() if k != "annotations"}
        ev.process([inputs], [{"sem_seg": torch.from_numpy(probs)}])
    ev.evaluate()
    assert {r["gt_source"] for r in ev.rows} == {"original"}

    # The same masks as a NIfTI on the case's own grid, scored against its label file.
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    raw = tissue_to_raw(guess, get_convention("brats2021"))
    sitk.WriteImage(geometry.slices_to_image(raw), str(pred_dir / f"{vid}.nii.gz"))
    shutil.copy(record["source"]["mask"], ref_dir / f"{vid}_seg.nii.gz")
    evaluate_folders(pred_dir, ref_dir, tmp_path / "nifti", label_convention="brats2021",
                     progress=False)  # fmt: skip

    ours = {r["name"]: r for r in _read(tmp_path / "eval" / EVALUATOR_FILES.cases)
            if r["variant"] == "raw"}  # fmt: skip
    theirs = {r["name"]: r for r in _read(tmp_path / "nifti" / NIFTI_FILES.cases)}
    # Same names: WT, TC, ET (enhancing is ET), necrotic, edema; no duplicated rows.
    assert list(ours) == list(theirs) == ["WT", "TC", "ET", "necrotic", "edema"]
    assert 0.3 < float(ours["WT"]["dice"]) < 1.0 and float(ours["ET"]["lesion_fp"]) >= 0
    for name_ in ours:
        for column in SCORE_COLUMNS:
            a, b = _number(ours[name_][column]), _number(theirs[name_][column])
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True), (name_, column)
