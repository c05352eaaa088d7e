"""brainseg_d2.structures: slice geometry, dataset info, stacking slice masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.structures import (
    DatasetInfo,
    PreprocessOptions,
    SliceGeometry,
    stack_slice_masks,
)


def _image(direction=(0.0, 0, 1, -1, 0, 0, 0, -1, 0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8))  # (z, y, x)
    image.SetSpacing((0.9, 1.3, 2.5))
    image.SetOrigin((-12.0, 30.5, 4.0))
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_geometry_json_round_trip(axis):
    geometry = SliceGeometry.from_image(_image(), axis).with_kept_slices([1, 3])
    data = json.loads(json.dumps(geometry.to_json()))
    assert SliceGeometry.from_json(data) == geometry
    assert data["num_slices"] == geometry.num_slices
    assert data["slice_shape"] == list(geometry.slice_shape)
    assert data["kept_slices"] == [1, 3]
    assert "kept_slices" not in SliceGeometry.from_image(_image(), axis).to_json()


def test_derived_sizes_follow_the_canonical_grid():
    # Identity direction, axial: slices along z, rows y, columns x.
    geometry = SliceGeometry.from_image(_image((1.0, 0, 0, 0, 1, 0, 0, 0, 1)), "axial")
    assert geometry.shape == (4, 5, 6)
    assert geometry.pixel_spacing == (1.3, 0.9)
    assert geometry.slice_thickness == 2.5
    assert geometry.voxel_spacing == (2.5, 1.3, 0.9)


def test_unknown_slice_axis():
    with pytest.raises(ValueError, match="slice_axis"):
        SliceGeometry.from_image(_image(), "oblique")


def test_label_slices_rejects_another_size():
    geometry = SliceGeometry.from_image(_image(), "axial")
    other = sitk.GetImageFromArray(np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(ValueError, match="differs from volume size"):
        geometry.label_slices(other)


def test_dataset_info_defaults_and_preprocess_options():
    info = DatasetInfo.from_json({"channels": ["flair", "t1"]})
    assert (info.target, info.label_convention, info.slice_axis) == ("labels", "brats2021", "axial")
    assert info.preprocess_options == PreprocessOptions(channels=("flair", "t1"))
    assert info.context_slices == 0 and info.label_conventions == {}


def test_dataset_info_recorded_options_win():
    info = DatasetInfo.from_json({
        "channels": ["flair"], "slice_axis": "axial",
        "options": {"channels": ["t2", "flair"], "slice_axis": "coronal",
                    "lower_percentile": 1.0, "upper_percentile": 99.0, "context_slices": 2},
    })  # fmt: skip
    assert info.preprocess_options == PreprocessOptions(("t2", "flair"), "coronal", 1.0, 99.0)
    assert info.context_slices == 2
    info = DatasetInfo.from_json({"channels": ["flair"], "options": {"normalization": "zscore"}})
    assert info.preprocess_options == PreprocessOptions(("flair",), normalization="zscore")


def test_dataset_info_load_and_errors(tmp_path):
    with pytest.raises(ValueError, match="no channels"):
        DatasetInfo.from_json({"target": "labels"})
    with pytest.raises(ValueError, match="cannot read dataset info"):
        DatasetInfo.load(tmp_path)
    info = DatasetInfo(channels=("flair",), target="binary", name="x")
    (tmp_path / "dataset.json").write_text(json.dumps(info.to_json()))
    assert DatasetInfo.load(tmp_path) == info
    assert DatasetInfo.load(info) is info


def test_dataset_info_round_trips_a_converted_dataset(phantom_dataset):
    data = json.loads((phantom_dataset["dataset"] / "dataset.json").read_text())
    assert DatasetInfo.from_json(data).to_json() == data


def test_stack_slice_masks():
    a = np.array([[[True, False]], [[False, True]]])  # (C=2, H=1, W=2)
    volume = stack_slice_masks([(2, a)], (3, 1, 2), 2)
    assert volume.shape == (2, 3, 1, 2) and volume.dtype == bool
    np.testing.assert_array_equal(volume[:, 2], a)
    assert not volume[:, :2].any()
    with pytest.raises(ValueError, match="slice 0 have shape"):
        stack_slice_masks([(0, a[:1])], (3, 1, 2), 2)
    with pytest.raises(ValueError, match="slice index 3"):
        stack_slice_masks([(3, a)], (3, 1, 2), 2)
