"""Per-channel intensity augmentations (brainseg_d2.data.intensity_augment)."""

from __future__ import annotations

import numpy as np
import pytest
from detectron2.data import transforms as T

from brainseg_d2.data.intensity_augment import (
    RandomBiasField,
    RandomChannelContrast,
    RandomChannelGamma,
    RandomLesionContrast,
    RandomNoise,
    build_intensity_augmentations,
)

AUGS = {
    "contrast": lambda: RandomChannelContrast(0.5, 2.0, shift=0.1),
    "gamma": lambda: RandomChannelGamma(0.5, 2.0),
    "bias": lambda: RandomBiasField(0.5),
    "noise": lambda: RandomNoise(10.0),
}


def _slice(n: int = 4, h: int = 40, w: int = 48) -> np.ndarray:
    """A disc of 'brain' (values 60-180, one smooth ramp per channel) on a zero background."""
    yy, xx = np.mgrid[:h, :w]
    brain = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 2 - 3) ** 2
    ramp = 60 + 120 * xx / (w - 1)
    img = np.stack([ramp + 5 * c for c in range(n)], -1) * brain[..., None]
    return img.astype(np.uint8)


def _apply(aug: T.Augmentation, image: np.ndarray) -> np.ndarray:
    return aug.get_transform(image).apply_image(image)


@pytest.mark.parametrize("name", sorted(AUGS))
@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_shape_dtype_and_background_are_kept(name, n):
    np.random.seed(0)
    image = _slice(n)
    out = _apply(AUGS[name](), image)
    assert out.shape == image.shape and out.dtype == np.uint8
    background = (image == 0).all(axis=2)
    assert (out[background] == 0).all()


@pytest.mark.parametrize("name", sorted(AUGS))
def test_two_dimensional_and_float_images(name):
    np.random.seed(1)
    flat = _slice(1)[..., 0]
    out = _apply(AUGS[name](), flat)
    assert out.shape == flat.shape and out.dtype == np.uint8
    as_float = _slice(3).astype(np.float32) + 0.25
    out = _apply(AUGS[name](), as_float)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("name", sorted(AUGS))
def test_channels_are_drawn_independently(name):
    np.random.seed(2)
    image = np.repeat(_slice(1), 4, axis=2)  # four identical channels
    out = _apply(AUGS[name](), image).astype(int)
    brain = image[..., 0] > 0
    diffs = [np.abs(out[..., 0] - out[..., c])[brain].mean() for c in range(1, 4)]
    assert min(diffs) > 0 and max(diffs) > 1


@pytest.mark.parametrize("name", sorted(AUGS))
def test_same_seed_same_result(name):
    image = _slice(3)
    np.random.seed(5)
    a = _apply(AUGS[name](), image)
    np.random.seed(5)
    b = _apply(AUGS[name](), image)
    np.testing.assert_array_equal(a, b)


def test_contrast_scales_about_the_brain_mean():
    image = _slice(2)
    brain = image[..., 0] > 0
    out = _apply(RandomChannelContrast(2.0, 2.0), image).astype(float)
    for c in range(2):
        x = image[..., c][brain].astype(float)
        expected = np.clip(x.mean() + 2.0 * (x - x.mean()), 0, 255)
        np.testing.assert_allclose(out[..., c][brain], np.rint(expected), atol=1)


def test_shift_moves_brain_only():
    np.random.seed(3)
    image = _slice(1)
    brain = image[..., 0] > 0
    out = _apply(RandomChannelContrast(1.0, 1.0, shift=0.1), image).astype(float)
    delta = out[..., 0][brain] - image[..., 0][brain]
    assert np.ptp(delta) <= 1 and 0 < abs(delta.mean()) <= 26


def test_gamma_follows_the_formula():
    image = np.full((4, 4, 2), 128, np.uint8)
    out = _apply(RandomChannelGamma(2.0, 2.0), image)
    assert (out == round(255 * (128 / 255) ** 2)).all()


def test_bias_field_is_smooth_and_centred():
    np.random.seed(4)
    image = np.full((64, 64, 1), 100, np.uint8)
    out = _apply(RandomBiasField(0.3), image).astype(float)[..., 0]
    log_ratio = np.log(out / 100.0)
    assert abs(np.median(log_ratio)) < 0.1
    # Smooth: neighbours differ by a few percent at most.
    assert np.abs(np.diff(log_ratio, axis=0)).max() < 0.1
    assert np.abs(np.diff(log_ratio, axis=1)).max() < 0.1
    assert np.ptp(out) > 2


def test_noise_level_is_bounded():
    np.random.seed(6)
    image = np.full((64, 64, 3), 120, np.uint8)
    out = _apply(RandomNoise(6.0), image).astype(float)
    sd = (out - 120).reshape(-1, 3).std(axis=0)
    assert (sd <= 6.5).all() and sd.max() > 0.5


@pytest.mark.parametrize(
    "aug",
    [
        RandomChannelContrast(1.0, 1.0),
        RandomChannelGamma(1.0, 1.0),
        RandomBiasField(0.0),
        RandomNoise(0.0),
    ],
)
def test_identity_settings_change_nothing(aug):
    image = _slice(3)
    np.testing.assert_array_equal(_apply(aug, image), image)


def test_labels_and_boxes_are_untouched():
    np.random.seed(7)
    image = _slice(4)
    seg = (image[..., 0] > 100).astype(np.uint8)
    aug_input = T.AugInput(
        image.copy(), boxes=np.array([[1.0, 2.0, 10.0, 12.0]]), sem_seg=seg.copy()
    )
    T.AugmentationList(
        list(
            build_intensity_augmentations(
                contrast=(0.8, 1.25), shift=0.05, gamma=(0.7, 1.4), bias_sd=0.2, noise_sd=5.0
            )
        )
    )(aug_input)
    np.testing.assert_array_equal(aug_input.sem_seg, seg)
    np.testing.assert_array_equal(aug_input.boxes, [[1.0, 2.0, 10.0, 12.0]])
    assert aug_input.image.shape == image.shape and not np.array_equal(aug_input.image, image)


def _lesion_slice(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A flat brain (100 in every channel) with two labelled squares, codes 1 and 4."""
    image = np.zeros((60, 60, n), np.float32)
    image[5:55, 5:55] = 100.0
    labels = np.zeros((60, 60), np.uint8)
    labels[10:26, 10:26] = 1
    labels[30:50, 30:50] = 4
    return image, labels


def test_lesion_contrast_scales_each_tissue_inside_its_own_mask():
    image, labels = _lesion_slice(n=2)
    aug = RandomLesionContrast(1.5, 1.5, sigma=1.0)
    out = aug.get_transform(image, labels).apply_image(image)
    # Deep inside each tissue the factor is whole; far from both nothing changes.
    np.testing.assert_allclose(out[18, 18], [150.0, 150.0], rtol=1e-4)
    np.testing.assert_allclose(out[40, 40], [150.0, 150.0], rtol=1e-4)
    np.testing.assert_allclose(out[50, 10], [100.0, 100.0])
    assert (out[:5] == 0).all() and (out[:, 55:] == 0).all()  # background stays 0
    # Smoothed border: no step from one pixel to the next at the label's edge.
    row = out[40, 24:36, 0]
    assert 100.0 < row[5] < 150.0 and np.abs(np.diff(row)).max() < 25.0


def test_lesion_contrast_draws_per_tissue_and_per_sequence():
    np.random.seed(3)
    image, labels = _lesion_slice(n=6)  # 2 sequences x 3 context slices
    aug = RandomLesionContrast(0.5, 2.0, sequences=2)
    out = aug.get_transform(image, labels).apply_image(image)
    a, b = out[18, 18], out[40, 40]
    assert not np.isclose(a[0], b[0]) and not np.isclose(a[0], a[1])  # tissue, sequence
    np.testing.assert_allclose(a[[0, 2, 4]], a[0])  # one sequence's copies alike
    np.testing.assert_allclose(b[[1, 3, 5]], b[1])
    assert (0.5 * 100 - 1e-3 <= out[18, 18]).all() and (out[18, 18] <= 2.0 * 100 + 1e-3).all()


def test_lesion_contrast_leaves_unlabelled_slices_alone():
    image, labels = _lesion_slice()
    aug = RandomLesionContrast(0.5, 2.0)
    for seg in (None, np.zeros_like(labels)):
        assert isinstance(aug.get_transform(image, seg), T.NoOpTransform)
    with pytest.raises(ValueError, match="sequences"):
        RandomLesionContrast(0.5, 2.0, sequences=3).get_transform(image, labels)


def test_lesion_contrast_sees_the_label_map_after_geometric_transforms():
    image, labels = _lesion_slice(n=1)
    aug_input = T.AugInput(image, sem_seg=labels)
    T.AugmentationList([T.HFlipTransform(60), RandomLesionContrast(2.0, 2.0)])(aug_input)
    out = aug_input.image[..., 0]
    np.testing.assert_allclose(out[18, 60 - 1 - 18], 200.0, rtol=1e-4)  # code 1, mirrored
    np.testing.assert_allclose(out[18, 18], 100.0)


def test_build_switches_and_order():
    assert build_intensity_augmentations() == []
    augs = build_intensity_augmentations(
        contrast=(0.8, 1.25), gamma=(0.7, 1.4), bias_sd=0.2, noise_sd=5.0,
        lesion_contrast=(0.8, 1.25), sequences=4,
    )  # fmt: skip
    kinds = [
        RandomLesionContrast, RandomBiasField, RandomChannelContrast, RandomChannelGamma,
        RandomNoise,
    ]  # fmt: skip
    assert [type(a) for a in augs] == kinds
    assert augs[0].sequences == 4
    wrapped = build_intensity_augmentations(noise_sd=5.0, prob=0.5)
    assert len(wrapped) == 1 and isinstance(wrapped[0], T.RandomApply)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomChannelContrast(0.0, 1.0),
        lambda: RandomChannelContrast(1.5, 1.0),
        lambda: RandomChannelContrast(1.0, 1.0, shift=-0.1),
        lambda: RandomChannelGamma(-1.0, 1.0),
        lambda: RandomBiasField(-0.1),
        lambda: RandomBiasField(0.2, nodes=1),
        lambda: RandomNoise(-1.0),
        lambda: RandomLesionContrast(0.0, 2.0),
        lambda: RandomLesionContrast(1.0, 2.0, sequences=0),
        lambda: build_intensity_augmentations(prob=1.5),
    ],
)
def test_bad_settings_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_bad_image_shape_raises_value_error():
    with pytest.raises(ValueError, match="shape"):
        RandomNoise(1.0).get_transform(np.zeros((2, 3, 4, 5), np.uint8))
