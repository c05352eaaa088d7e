"""Reading volumes, geometry checks and canonical orientation."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.data.io import nifti
from brainseg_d2.data.volume_io import (
    VolumeError,
    axis_transform,
    check_same_geometry,
    read_frames,
    read_header,
    read_image,
    reorient_array,
    restore_array,
)


def _volume(shape=(12, 20, 24), dtype=np.float32, seed=0) -> sitk.Image:
    """(z, y, x) random volume with anisotropic spacing and a non-zero origin."""
    array = (np.random.default_rng(seed).random(shape) * 100).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.1, 2.5))
    image.SetOrigin((10.0, -20.0, 5.5))
    return image


def _signed_permutation(perm, signs) -> np.ndarray:
    matrix = np.zeros((3, 3))
    for i, p in enumerate(perm):
        matrix[p, i] = signs[i]
    return matrix


def _oblique(matrix: np.ndarray, angle_deg: float = 7.0) -> np.ndarray:
    """Rotate a direction matrix slightly about (1, 1, 1) so it is not axis-aligned."""
    axis = np.ones(3) / np.sqrt(3)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    return rotation @ matrix


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_read_image_formats_keep_values_and_geometry(tmp_path, suffix):
    image = _volume()
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(image, str(path))
    out = read_image(path)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(out), sitk.GetArrayViewFromImage(image)
    )
    np.testing.assert_allclose(out.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), image.GetOrigin(), atol=1e-5)


def test_nifti_fast_path_matches_simpleitk(tmp_path):
    """The checked NIfTI reader gives what sitk.ReadImage gives, pixel type included."""
    for dtype in (np.float32, np.float64, np.int16, np.uint8):
        for direction in [None, (0, 0, 1, -1, 0, 0, 0, -1, 0)]:
            image = _volume(dtype=dtype)
            if direction:
                image.SetDirection(direction)
            path = tmp_path / "v.nii.gz"
            sitk.WriteImage(image, str(path))
            ours, ref = read_image(path), sitk.ReadImage(str(path))
            assert ours.GetPixelID() == ref.GetPixelID()
            np.testing.assert_array_equal(
                sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(ref)
            )
            assert ours.GetSpacing() == ref.GetSpacing()
            assert ours.GetOrigin() == ref.GetOrigin()
            assert ours.GetDirection() == ref.GetDirection()


def test_read_image_dicom_series(tmp_path):
    array = np.random.default_rng(1).integers(0, 1000, (5, 16, 12)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 3.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array.shape[0]):
        slice_ = image[:, :, z]
        origin = image.TransformIndexToPhysicalPoint((0, 0, z))
        for key, value in [
            ("0008|0060", "MR"),
            ("0020|000d", "1.2.3"),
            ("0020|000e", "1.2.3.4"),
            ("0020|0032", "\\".join(f"{v:f}" for v in origin)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(z + 1)),
            ("0028|0030", "0.8\\0.8"),
            ("0018|0050", "3.0"),
        ]:
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(slice_)
    out = read_image(folder)
    assert out.GetSize() == image.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), array)
    np.testing.assert_allclose(out.GetSpacing(), (0.8, 0.8, 3.0), atol=1e-4)

    # A lost slice would stretch the volume (spacing averaged to 4 mm): refused, named.
    (folder / "002.dcm").unlink()
    with pytest.raises(VolumeError, match=r"not evenly spaced \(6 mm between 001.dcm and 003.dcm"):
        read_image(folder)


def test_read_image_empty_folder_is_not_a_series(tmp_path):
    with pytest.raises(VolumeError, match="no DICOM series"):
        read_image(tmp_path)


def test_missing_file_named(tmp_path):
    with pytest.raises(VolumeError, match="nope.nii.gz: file not found"):
        read_image(tmp_path / "nope.nii.gz")


@pytest.fixture(params=["default", "stdlib-gzip"])
def gzip_impl(request, monkeypatch):
    """Run with the optional ISA-L inflater (when installed) and with the stdlib one."""
    if request.param == "stdlib-gzip":
        monkeypatch.setattr(nifti, "inflate", gzip.decompress)
        monkeypatch.setattr(nifti, "gzip_open", gzip.open)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("keep", [0.05, 0.6, 0.999])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_truncated_file_raises(tmp_path, suffix, keep, dtype, gzip_impl):
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(_volume(dtype=dtype), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VolumeError, match=f"vol{suffix}") as info:
        read_image(path)
    assert "No such file" not in str(info.value)  # the file is there: its data is short


def test_corrupt_file_raises(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VolumeError, match="garbage.nii.gz: cannot read"):
        read_image(path)
    with pytest.raises(VolumeError, match="garbage.nii.gz"):
        read_header(path)


def test_4d_image_raises(tmp_path):
    path = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([_volume(), _volume(seed=1)]), str(path))
    with pytest.raises(VolumeError, match="four.nii.gz: expected a 3D volume, got 4D"):
        read_image(path)


def test_vector_image_raises(tmp_path):
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.Compose(_volume(), _volume(seed=1)), str(path))
    with pytest.raises(VolumeError, match="rgb.mha: expected one value per voxel"):
        read_image(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_raise(tmp_path, bad, gzip_impl):
    array = sitk.GetArrayFromImage(_volume())
    array[3, 4, 5] = bad
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(VolumeError, match="nan.nii.gz: contains NaN or Inf"):
        read_image(path)


@pytest.mark.parametrize(
    "change, what",
    [
        (lambda im: im.SetSpacing((0.9, 1.1, 2.6)), "spacing"),
        (lambda im: im.SetOrigin((10.0, -20.0, 6.5)), "origin"),
        (lambda im: im.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1)), "direction"),
    ],
)
def test_check_same_geometry_names_mismatch(change, what):
    a, b = _volume(), _volume(seed=1)
    change(b)
    with pytest.raises(VolumeError, match=f"case c7: {what} of 't2'"):
        check_same_geometry({"flair": a, "t2": b}, case_id="c7")


def test_check_same_geometry_size_and_tolerance():
    a = _volume()
    b = _volume(seed=1)
    b.SetOrigin(tuple(np.add(a.GetOrigin(), 5e-5)))
    check_same_geometry({"flair": a, "t2": b}, case_id="c1")  # within 1e-4
    with pytest.raises(VolumeError, match="size of 'seg'"):
        check_same_geometry({"flair": a, "seg": _volume(shape=(12, 20, 25))}, case_id="c1")


SIGNED_PERMUTATIONS = [
    _signed_permutation(p, s)
    for p in itertools.permutations(range(3))
    for s in itertools.product((1, -1), repeat=3)
]


@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("code", ["LPS", "LIP", "PIL", "RAS"])
def test_reorient_array_matches_dicomorient(code, oblique):
    for matrix in SIGNED_PERMUTATIONS:
        direction = _oblique(matrix) if oblique else matrix
        image = _volume(shape=(5, 6, 7))
        image.SetDirection(direction.ravel().tolist())
        permutation, flips = axis_transform(image.GetDirection(), code)
        expected = sitk.GetArrayFromImage(sitk.DICOMOrient(image, code))
        array = sitk.GetArrayFromImage(image)
        canonical = reorient_array(array, permutation, flips)
        np.testing.assert_array_equal(canonical, expected)
        np.testing.assert_array_equal(restore_array(canonical, permutation, flips), array)




def test_a_sheared_grid_is_refused_with_its_direction(tmp_path):
    # A gantry tilt stored as a non-orthonormal direction: NIfTI outputs cannot hold
    # it (ITK would coerce it and move voxels by millimetres), so the input is refused.
    image = _volume()
    tilt = np.deg2rad(12)
    image.SetDirection((1, 0, 0, 0, 1, np.sin(tilt), 0, 0, np.cos(tilt)))
    path = tmp_path / "tilted.mha"
    sitk.WriteImage(image, str(path))
    with pytest.raises(VolumeError, match=r"tilted\.mha: its direction matrix .* is not "
                                          r"orthonormal"):  # fmt: skip
        read_image(path)


def test_a_nifti_whose_sform_disagrees_is_read_with_a_warning(tmp_path, caplog):
    nib = pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(_volume(), str(path))
    read_image(path)
    assert "sform" not in caplog.text  # SimpleITK writes the same sform and qform
    loaded = nib.load(path)
    shifted = loaded.affine.copy()
    shifted[:3, 3] += (3.0, 4.0, 0.0)
    out = nib.Nifti1Image(np.asarray(loaded.dataobj), None, loaded.header.copy())
    out.set_qform(loaded.affine, 1)
    out.set_sform(shifted, 2)
    nib.save(out, tmp_path / "moved.nii.gz")
    image = read_image(tmp_path / "moved.nii.gz")
    assert np.allclose(image.GetOrigin(), _volume().GetOrigin())  # ITK's choice: the qform
    assert "moved.nii.gz: its sform places the volume up to 5.0 mm" in caplog.text
    # The same check for a 4D file (a Decathlon image), and its volumes read as 3D.
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([_volume(), _volume()]), str(four))
    loaded = nib.load(four)
    out = nib.Nifti1Image(np.asarray(loaded.dataobj), None, loaded.header.copy())
    out.set_qform(loaded.affine, 1)
    shifted = loaded.affine.copy()
    shifted[:3, 3] += (3.0, 4.0, 0.0)
    out.set_sform(shifted, 2)
    nib.save(out, tmp_path / "moved4d.nii.gz")
    frames = read_frames(tmp_path / "moved4d.nii.gz", [1])
    assert frames[0].GetSize() == _volume().GetSize()
    assert np.allclose(frames[0].GetOrigin(), _volume().GetOrigin())
    assert "moved4d.nii.gz: its sform places the volume up to 5.0 mm" in caplog.text
