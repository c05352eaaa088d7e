"""The one ground-truth reader (brainseg_d2.data.ground_truth) and the exactness of
val/test annotations: every labelled voxel of the original label map."""

from __future__ import annotations

import json
import logging

import numpy as np
import pycocotools.mask as mask_util
import pytest
import SimpleITK as sitk
from detectron2.data import DatasetCatalog

from brainseg_d2.data.dataset_mapper import read_label_png
from brainseg_d2.data.ground_truth import (
    GroundTruthReader,
    label_map_masks,
    label_map_tissue,
    read_label_image,
)
from brainseg_d2.data.volume_io import VolumeError
from brainseg_d2.labels import TISSUE_ED, TISSUE_ET, TISSUE_NCR, get_target
from brainseg_d2.structures import SliceGeometry

TARGET = get_target("labels")


def _volumes(name: str) -> dict:
    """volume id -> (record, slice index -> dataset dict) of a registered split."""
    by_volume: dict[str, dict] = {}
    for d in DatasetCatalog.get(name):
        by_volume.setdefault(d["volume_id"], {})[d["slice_index"]] = d
    manifest = GroundTruthReader.for_dataset(name, TARGET).volumes
    return {vid: (manifest[vid], slices) for vid, slices in by_volume.items()}


def test_original_label_map_through_the_geometry_keeps_every_voxel(oblique_dataset):
    for record, _ in _volumes("oblique_val").values():
        image, labels = read_label_image(record["source"]["mask"])
        geometry = SliceGeometry.from_json(record["geometry"])
        tissue = label_map_tissue(record["source"]["mask"], geometry, "brats2021")
        assert tissue.shape == geometry.shape
        # A permutation and flips of the file's voxels: the same count of each label.
        assert geometry.canonical.permutation != (0, 1, 2)
        file_counts = {v: int((labels == v).sum()) for v in (1, 2, 4)}
        assert {TISSUE_NCR: file_counts[1], TISSUE_ED: file_counts[2],
                TISSUE_ET: file_counts[4]} == {t: int((tissue == t).sum())
                                               for t in (TISSUE_NCR, TISSUE_ED, TISSUE_ET)}
        raw = geometry.label_slices(image)
        np.testing.assert_array_equal(tissue > 0, raw > 0)
        masks = label_map_masks(image, geometry, TARGET, "brats2021")
        np.testing.assert_array_equal(masks, TARGET.masks_from_tissue(tissue))


@pytest.mark.parametrize("name", ["oblique_val", "oblique_test"])
def test_val_and_test_annotations_and_label_pngs_keep_every_labelled_voxel(
    oblique_dataset, name
):
    """Converted with min_area 10: val and test still hold every component, however small."""
    small = 0
    for _, (record, slices) in _volumes(name).items():
        geometry = SliceGeometry.from_json(record["geometry"])
        tissue = label_map_tissue(record["source"]["mask"], geometry, "brats2021")
        labelled = set(np.flatnonzero(tissue.reshape(tissue.shape[0], -1).any(axis=1)).tolist())
        assert labelled <= set(slices)  # every labelled slice is in the dataset
        for s, d in slices.items():
            np.testing.assert_array_equal(read_label_png(d["sem_seg_file_name"]), tissue[s])
            union = np.zeros((len(TARGET.categories), d["height"], d["width"]), bool)
            for ann in d["annotations"]:
                component = mask_util.decode(ann["segmentation"]).astype(bool)
                small += int(component.sum() < 10)
                union[ann["category_id"]] |= component
            np.testing.assert_array_equal(union, TARGET.masks_from_tissue(tissue[s]))
    assert small > 0  # components the training split would drop are here


def test_reader_reads_the_original_and_falls_back_to_label_pngs_once(
    oblique_dataset, tmp_path, caplog
):
    reader = GroundTruthReader.for_dataset("oblique_val", TARGET)
    expected = {}
    for name in ("oblique_val", "oblique_test"):
        for vid, (record, slices) in _volumes(name).items():
            g = record["geometry"]
            masks, source = reader.masks(vid, g["num_slices"], g["slice_shape"], slices)
            assert source == "original"
            tissue = label_map_tissue(
                record["source"]["mask"], SliceGeometry.from_json(g), "brats2021"
            )
            np.testing.assert_array_equal(masks, TARGET.masks_from_tissue(tissue))
            expected[vid] = (masks, g, slices)
    assert reader.sources == {"original": 2}

    # The data moved: the label files are gone from where volumes.json says.
    moved = {}
    for vid, record in GroundTruthReader.for_dataset("oblique_val", TARGET).volumes.items():
        record = json.loads(json.dumps(record))
        record["source"]["mask"] = str(tmp_path / "moved" / f"{vid}_seg.nii.gz")
        moved[vid] = record
    reader = GroundTruthReader(TARGET, moved, name="oblique")
    with caplog.at_level(logging.WARNING, logger="brainseg_d2.data.ground_truth"):
        for vid, (masks, g, slices) in expected.items():
            got, source = reader.masks(vid, g["num_slices"], g["slice_shape"], slices)
            assert source == "label_png"
            np.testing.assert_array_equal(got, masks)  # val/test label PNGs are exact
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # said once, not per volume
    assert "not available" in warnings[0] and "file not found" in warnings[0]
    assert reader.sources == {"label_png": 2}


def test_reader_does_not_trust_a_file_on_another_grid(oblique_dataset, tmp_path, caplog):
    vid, (record, slices) = next(iter(_volumes("oblique_val").items()))
    replaced = tmp_path / "seg.nii.gz"
    image = sitk.ReadImage(record["source"]["mask"])
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(replaced))
    record = {**record, "source": {**record["source"], "mask": str(replaced)}}
    reader = GroundTruthReader(TARGET, {vid: record})
    g = record["geometry"]
    with caplog.at_level(logging.WARNING, logger="brainseg_d2.data.ground_truth"):
        _, source = reader.masks(vid, g["num_slices"], g["slice_shape"], slices)
    assert source == "label_png"
    assert "spacing" in caplog.text and str(replaced) in caplog.text


def test_label_map_errors_name_the_file(tmp_path):
    labels = np.zeros((3, 4, 5), np.float32)
    labels[1, 1, 1] = 2.5
    path = tmp_path / "bad_seg.nii.gz"
    image = sitk.GetImageFromArray(labels)
    sitk.WriteImage(image, str(path))
    geometry = SliceGeometry.from_image(image, "axial")
    with pytest.raises(VolumeError, match="bad_seg.nii.gz: label map holds non-integer"):
        label_map_tissue(path, geometry, "brats2021")
    labels[1, 1, 1] = 3  # no 3 in BraTS 2021
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(path))
    with pytest.raises(VolumeError, match=r"bad_seg.nii.gz: label values \[3\]"):
        label_map_tissue(path, geometry, "brats2021")
    other = SliceGeometry.from_image(sitk.GetImageFromArray(np.zeros((3, 4, 6), np.uint8)), "axial")
    with pytest.raises(VolumeError, match="bad_seg.nii.gz: size"):
        label_map_tissue(path, other, "brats2021")


def test_binary_masks_of_255_count_as_tumour(tmp_path):
    mask = np.zeros((2, 3, 3), np.uint8)
    mask[1, 1, 1] = 255
    image = sitk.GetImageFromArray(mask)
    tissue = label_map_tissue(image, SliceGeometry.from_image(image, "axial"), "binary")
    assert tissue.sum() == TISSUE_ED and tissue[1, 1, 1] == TISSUE_ED


def test_datasets_without_volume_records_use_their_annotations(oblique_dataset):
    """An older dataset without label PNGs: the annotations' RLE masks."""
    vid, (_, slices) = next(iter(_volumes("oblique_val").items()))
    bare = {s: {k: v for k, v in d.items() if k != "sem_seg_file_name"} for s, d in slices.items()}
    first = next(iter(bare.values()))
    reader = GroundTruthReader(TARGET, None)
    masks, source = reader.masks(vid, first["num_slices"], (first["height"], first["width"]), bare)
    assert source == "annotations"
    expected, _ = GroundTruthReader(TARGET, None).masks(
        vid, first["num_slices"], (first["height"], first["width"]), slices
    )
    np.testing.assert_array_equal(masks, expected)
