"""Shared preprocessing: normalisation, slicing, and the exact way back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.data.preprocess import PreprocessOptions, preprocess_volume, robust_range
from brainseg_d2.data.volume_io import VolumeError
from brainseg_d2.structures import ZSCORE_RANGE, SliceGeometry

SHAPE = (12, 20, 24)  # (z, y, x)


def _brain() -> np.ndarray:
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return ((zz - 5.5) / 5) ** 2 + ((yy - 9.5) / 8) ** 2 + ((xx - 11.5) / 10) ** 2 < 1


def _image(array: np.ndarray, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.9, 1.2, 3.0))
    image.SetOrigin((-5.0, 7.0, 2.0))
    if direction is not None:
        image.SetDirection(direction)
    return image


def _channels(seed: int = 0, direction=None) -> dict[str, sitk.Image]:
    rng = np.random.default_rng(seed)
    brain = _brain()
    out = {}
    for name in ("flair", "t1", "t1ce", "t2"):
        array = (rng.gamma(4.0, 50.0, SHAPE) + 10).astype(np.float32)
        array[~brain] = 0
        out[name] = _image(array, direction)
    return out


OBLIQUE_PERMUTED = tuple(
    (
        np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        @ np.array([[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]])
    ).ravel()
)


def test_percentiles_inside_brain_and_zero_outside():
    images = _channels()
    opts = PreprocessOptions(channels=("flair", "t1ce", "t2"))
    out = preprocess_volume(images, opts)
    brain = _brain()
    assert out.slices.dtype == np.uint8 and out.slices.shape == SHAPE + (3,)
    np.testing.assert_array_equal(out.brain, brain)
    assert not out.slices[~brain].any()
    for k, name in enumerate(opts.channels):
        values = sitk.GetArrayFromImage(images[name])[brain]
        low, high = np.percentile(values, [0.5, 99.5])
        np.testing.assert_allclose(out.intensity[name], [low, high], rtol=1e-6)
        channel = out.slices[..., k][brain]
        expected = np.clip((values - low) / (high - low) * 255, 0, 255)
        assert np.abs(channel.astype(float) - expected).max() <= 0.5 + 1e-3
        assert channel.max() == 255 and channel.min() == 0
        # Background zeros do not pull the low percentile down.
        assert low > 0


def test_zscore_maps_brain_sds_to_fixed_levels_whatever_the_lesion():
    images = _channels()
    brain = _brain()
    opts = PreprocessOptions(channels=("flair",), normalization="zscore")
    values = sitk.GetArrayFromImage(images["flair"])[brain].astype(np.float64)
    mean, sd = values.mean(), values.std()
    out = preprocess_volume(images, opts)
    lo, hi = ZSCORE_RANGE
    np.testing.assert_allclose(out.intensity["flair"], [mean + lo * sd, mean + hi * sd], rtol=1e-6)
    z = (values - mean) / sd
    expected = np.clip((z - lo) / (hi - lo) * 255, 0, 255)
    assert np.abs(out.slices[..., 0][brain].astype(float) - expected).max() <= 0.5 + 1e-3
    assert not out.slices[~brain].any()
    # Twice the gain and an offset give the same slices: only SDs from the mean count.
    scaled = {"flair": _image(np.where(brain, sitk.GetArrayFromImage(images["flair"]) * 2 + 30,
                                       0).astype(np.float32))}  # fmt: skip
    np.testing.assert_array_equal(preprocess_volume(scaled, opts).slices, out.slices)
    # Percentile scaling moves with a bright lesion larger than 0.5 % of the brain; for
    # the z-score the normal tissue's level moves far less.
    array = sitk.GetArrayFromImage(images["flair"]).copy()
    normal = brain.copy()
    lesion = np.zeros_like(brain)
    lesion[4:8, 6:12, 8:14] = True
    lesion &= brain
    normal &= ~lesion
    array[lesion] = values.max() * 3
    with_lesion = {"flair": _image(array)}
    shift = {}
    for method in ("percentile", "zscore"):
        o = PreprocessOptions(channels=("flair",), normalization=method)
        before = np.median(preprocess_volume(images, o).slices[..., 0][normal])
        after = np.median(preprocess_volume(with_lesion, o).slices[..., 0][normal])
        shift[method] = abs(float(after) - float(before))
    assert shift["zscore"] < shift["percentile"] / 2, shift


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1001, 100_003])
@pytest.mark.parametrize("kind", ["normal", "integer_ties"])
def test_robust_range_matches_numpy(n, kind):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n) if kind == "normal" else np.rint(rng.gamma(2.0, 20.0, n))
    values = values.astype(np.float32)
    for lo, hi in [(0.5, 99.5), (0.0, 100.0), (2.0, 98.0), (0.01, 99.99), (30.0, 70.0)]:
        np.testing.assert_allclose(
            robust_range(values, lo, hi), np.percentile(values.astype(float), [lo, hi]), rtol=1e-6
        )


@pytest.mark.parametrize("channels", [("t2",), ("flair", "t2"), ("t2", "flair", "t1ce")])
def test_one_image_channel_per_source_channel_in_order(channels):
    images = _channels()
    out = preprocess_volume(images, PreprocessOptions(channels=channels))
    assert out.slices.shape[-1] == len(channels)
    for k, name in enumerate(channels):
        alone = preprocess_volume(images, PreprocessOptions(channels=(name,)))
        np.testing.assert_array_equal(out.slices[..., k], alone.slices[..., 0])


def test_repeated_channel_is_refused():
    with pytest.raises(ValueError, match="each once"):
        PreprocessOptions(channels=("flair", "flair"))


def test_missing_channel_names_case_and_channel():
    images = _channels()
    del images["t2"]
    with pytest.raises(VolumeError, match="case BraTS_7: missing channel 't2'"):
        preprocess_volume(images, PreprocessOptions(), case_id="BraTS_7")


@pytest.mark.parametrize("value", [0.0, 42.0])
def test_constant_channel_raises(value):
    images = _channels()
    images["t1ce"] = _image(np.full(SHAPE, value, dtype=np.float32))
    with pytest.raises(VolumeError, match="case c1: /x/t1ce.nii.gz: image is constant"):
        preprocess_volume(
            images, PreprocessOptions(), case_id="c1", sources={"t1ce": "/x/t1ce.nii.gz"}
        )


def test_all_zero_volume_raises():
    images = {c: _image(np.zeros(SHAPE, np.float32)) for c in ("flair", "t1", "t1ce", "t2")}
    with pytest.raises(VolumeError, match="all zeros"):
        preprocess_volume(images, PreprocessOptions())


def test_geometry_mismatch_raises():
    images = _channels()
    images["t2"].SetSpacing((1.0, 1.0, 1.0))
    with pytest.raises(VolumeError, match="spacing of 't2'"):
        preprocess_volume(images, PreprocessOptions(), case_id="c1")


@pytest.mark.parametrize(
    "bad",
    [
        {"slice_axis": "oblique"},
        {"channels": ()},
        {"lower_percentile": 99.0, "upper_percentile": 1.0},
        {"normalization": "minmax"},
    ],
)
def test_bad_options_raise(bad):
    with pytest.raises(ValueError):
        PreprocessOptions(**bad)


def test_axial_slices_of_lps_volume_are_plain_array_slices():
    images = _channels()
    out = preprocess_volume(images, PreprocessOptions(channels=("flair",)))
    np.testing.assert_array_equal(out.brain, sitk.GetArrayFromImage(images["flair"]) != 0)
    geometry = out.geometry
    assert geometry.canonical.permutation == (0, 1, 2)
    assert geometry.pixel_spacing == pytest.approx([1.2, 0.9])
    assert geometry.slice_thickness == pytest.approx(3.0)


def test_ras_volume_is_flipped_to_radiological_view():
    """A RAS-stored volume (x towards patient right) gets x and y flipped for axial view."""
    array = sitk.GetArrayFromImage(_channels()["flair"])
    image = _image(array, direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    geometry = SliceGeometry.from_image(image, "axial")
    assert geometry.orientation == "RAS"
    assert geometry.canonical.flips == (True, True, False)
    np.testing.assert_array_equal(geometry.label_slices(image), array[:, ::-1, ::-1])


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("direction", [None, (0, 0, 1, -1, 0, 0, 0, -1, 0), OBLIQUE_PERMUTED])
def test_label_slices_round_trip_exactly(axis, direction):
    labels = np.random.default_rng(3).integers(0, 5, SHAPE).astype(np.uint8)
    label_image = _image(labels, direction)
    images = _channels(direction=direction)
    out = preprocess_volume(images, PreprocessOptions(slice_axis=axis))
    # As stored in volumes.json and read back.
    geometry = SliceGeometry.from_json(json.loads(json.dumps(out.geometry.to_json())))
    assert geometry == out.geometry
    stack = geometry.label_slices(label_image)
    assert stack.shape == geometry.shape
    assert out.slices.shape[:3] == stack.shape
    back = geometry.slices_to_image(stack)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert back.GetSize() == label_image.GetSize()
    assert back.GetSpacing() == label_image.GetSpacing()
    assert back.GetOrigin() == label_image.GetOrigin()
    assert back.GetDirection() == label_image.GetDirection()
    # Image slices and label slices line up voxel for voxel.
    flair = geometry.label_slices(images["flair"])
    np.testing.assert_array_equal(out.brain, flair != 0)


def test_canonical_geometry_matches_dicomorient():
    image = _channels(direction=OBLIQUE_PERMUTED)["flair"]
    for axis, code in [("axial", "LPS"), ("coronal", "LIP"), ("sagittal", "PIL")]:
        canon = SliceGeometry.from_image(image, axis).canonical
        expected = sitk.DICOMOrient(image, code)
        assert canon.size == expected.GetSize()
        np.testing.assert_allclose(canon.origin, expected.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(canon.direction, expected.GetDirection(), atol=1e-12)
        np.testing.assert_allclose(canon.spacing, expected.GetSpacing())


def test_slices_to_image_rejects_bad_input():
    geometry = SliceGeometry.from_image(_channels()["flair"], "axial")
    with pytest.raises(ValueError, match="shape"):
        geometry.slices_to_image(np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        geometry.slices_to_image(np.zeros(SHAPE, np.float32))
    assert geometry.slices_to_image(np.zeros(SHAPE, bool)).GetPixelID() == sitk.sitkUInt8
